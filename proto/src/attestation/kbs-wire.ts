// The key broker's binding and key-wrap, shared by the broker (host) and its client (firewall VM).
//
// Binding: the requester makes a fresh X25519 key pair and asks for a broker nonce; its report's
// report_data must be SHA-512(nonce ‖ raw X25519 public key) — 64 bytes, the whole field. So the
// report is fresh (the nonce is single-use and short-lived) and the key can only be unwrapped by
// the VM that made the report (it alone holds the private half).
//
// Wrap: the broker makes its own ephemeral X25519 pair; shared = X25519(broker, requester);
// k = HKDF-SHA-256(shared, salt = nonce, info = "airlock-kbs-v1 wrap" ‖ key id ‖ requester pub ‖
// broker pub), 32 bytes; ciphertext = ChaCha20-Poly1305(k, 12 zero bytes, key, aad = key id). A
// zero IV is safe: k is new for every wrap.
//
// Authenticity: anyone who sees the requester's public key could wrap a key of their own choosing
// to it, so the broker signs each release (Ed25519, its identity key) over releaseTranscript().
// The client checks it against the broker key it was configured with (from the room manifest).
// The transcript also covers the data owner's scope from the key's policy (the scope the owner
// granted the data at; USER_PRIVATE when the policy names none), so neither the host nor anyone on
// the path can lower it: the firewall applies the stricter of it and the manifest's own label.
import { createCipheriv, createDecipheriv, createHash, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, sign, verify } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { AirlockError } from "../errors.ts";
import type { DataScope } from "../manifest/schema.ts";

export const KBS_NONCE_BYTES = 32;
/** The owner scope a release carries when the key's policy names none. */
export const DEFAULT_OWNER_SCOPE: DataScope = "USER_PRIVATE";
const INFO = "airlock-kbs-v1 wrap";
const TAG = 16;

export function reportDataFor(nonce: Buffer, publicKeyRaw: Buffer): Buffer {
  return createHash("sha512").update(nonce).update(publicKeyRaw).digest();
}

export interface X25519Pair {
  privateKey: KeyObject;
  publicRaw: Buffer;
}

export function newX25519(): X25519Pair {
  const { privateKey, publicKey } = generateKeyPairSync("x25519");
  return { privateKey, publicRaw: rawPublic(publicKey) };
}

function rawPublic(key: KeyObject): Buffer {
  return Buffer.from(key.export({ format: "jwk" }).x!, "base64url");
}

export function x25519PublicFromRaw(raw: Buffer): KeyObject {
  if (raw.length !== 32) throw new AirlockError("KEY_RELEASE", `X25519 public key must be 32 bytes, got ${raw.length}`);
  return createPublicKey({ key: { kty: "OKP", crv: "X25519", x: raw.toString("base64url") }, format: "jwk" });
}

function derive(privateKey: KeyObject, peer: KeyObject, nonce: Buffer, keyId: string, requesterPub: Buffer, brokerPub: Buffer): Buffer {
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey, publicKey: peer });
  } catch (err) {
    // OpenSSL refuses low-order points itself ("failed during derivation").
    throw new AirlockError("KEY_RELEASE", `X25519 public key is unusable (low order): ${(err as Error).message}`, { cause: err });
  }
  if (shared.every((b) => b === 0)) throw new AirlockError("KEY_RELEASE", "X25519 shared secret is zero (low-order public key)");
  const info = Buffer.concat([Buffer.from(INFO), Buffer.from([0]), Buffer.from(keyId, "utf8"), Buffer.from([0]), requesterPub, brokerPub]);
  return Buffer.from(hkdfSync("sha256", shared, nonce, info, 32));
}

export interface WrappedKey {
  /** Broker's ephemeral X25519 public key, base64. */
  brokerPublicKey: string;
  /** ChaCha20-Poly1305 ciphertext ‖ tag, base64. */
  ciphertext: string;
}

export function wrapKey(key: Buffer, keyId: string, nonce: Buffer, requesterPubRaw: Buffer): WrappedKey {
  const broker = newX25519();
  const k = derive(broker.privateKey, x25519PublicFromRaw(requesterPubRaw), nonce, keyId, requesterPubRaw, broker.publicRaw);
  const c = createCipheriv("chacha20-poly1305", k, Buffer.alloc(12), { authTagLength: TAG });
  c.setAAD(Buffer.from(keyId, "utf8"), { plaintextLength: key.length });
  const ct = Buffer.concat([c.update(key), c.final(), c.getAuthTag()]);
  k.fill(0);
  return { brokerPublicKey: broker.publicRaw.toString("base64"), ciphertext: ct.toString("base64") };
}

export function unwrapKey(wrapped: WrappedKey, keyId: string, nonce: Buffer, requester: X25519Pair): Buffer {
  const brokerPub = Buffer.from(wrapped.brokerPublicKey, "base64");
  const ct = Buffer.from(wrapped.ciphertext, "base64");
  if (ct.length < TAG) throw new AirlockError("CRYPTO", "wrapped key is truncated");
  const k = derive(requester.privateKey, x25519PublicFromRaw(brokerPub), nonce, keyId, requester.publicRaw, brokerPub);
  const d = createDecipheriv("chacha20-poly1305", k, Buffer.alloc(12), { authTagLength: TAG });
  d.setAAD(Buffer.from(keyId, "utf8"), { plaintextLength: ct.length - TAG });
  d.setAuthTag(ct.subarray(ct.length - TAG));
  try {
    return Buffer.concat([d.update(ct.subarray(0, ct.length - TAG)), d.final()]);
  } catch (err) {
    throw new AirlockError("CRYPTO", "wrapped key does not authenticate (tampered, or wrapped for another key pair)", { cause: err });
  } finally {
    k.fill(0);
  }
}

/**
 * The bytes the broker signs for a release: every field the client relies on (v2: the owner's
 * scope follows the key id; v1 had no scope).
 */
export function releaseTranscript(keyId: string, nonce: Buffer, requesterPubRaw: Buffer, wrapped: WrappedKey, scope: DataScope): Buffer {
  const field = (b: Buffer): Buffer => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  return Buffer.concat([Buffer.from("airlock-kbs-v2 release\0"), ...[Buffer.from(keyId, "utf8"), Buffer.from(scope, "utf8"), nonce, requesterPubRaw, Buffer.from(wrapped.brokerPublicKey, "base64"), Buffer.from(wrapped.ciphertext, "base64")].map(field)]);
}

export function signRelease(identity: KeyObject, transcript: Buffer): string {
  return sign(null, transcript, identity).toString("base64");
}

/** Parses a broker identity key given as base64 SPKI DER or PEM. */
export function brokerKeyFrom(text: string): KeyObject {
  try {
    const key = text.includes("BEGIN PUBLIC KEY") ? createPublicKey(text) : createPublicKey({ key: Buffer.from(text, "base64"), format: "der", type: "spki" });
    if (key.asymmetricKeyType !== "ed25519") throw new Error(`a ${key.asymmetricKeyType} key`);
    return key;
  } catch (err) {
    throw new AirlockError("KEY_INVALID", `key broker identity: expected an Ed25519 public key (base64 SPKI or PEM): ${(err as Error).message}`);
  }
}

export function verifyRelease(brokerKey: KeyObject, transcript: Buffer, signature: string): boolean {
  try {
    return verify(null, transcript, brokerKey, Buffer.from(signature, "base64"));
  } catch {
    return false;
  }
}

/** Ed25519 private key from a 32-byte seed (PKCS#8 framing per RFC 8410). */
export function ed25519FromSeed(seed: Buffer): KeyObject {
  if (seed.length !== 32) throw new AirlockError("INTERNAL", "Ed25519 seed must be 32 bytes");
  return createPrivateKey({ key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]), format: "der", type: "pkcs8" });
}

// The HTTP API's messages are proto/airlock/v1/kbs.proto's (generated into proto/gen/airlock/v1/kbs_pb.ts).
