// Collaborators' signatures over a room manifest's canonical digest (digest.ts). A room runs only
// when every collaborator the manifest names has signed exactly this digest. Signatures live in a
// file beside the manifest (`room.yaml` → `room.yaml.sig.json`) and travel to the enforcer with
// the room; the enforcer (firewall VM) checks them itself with checkSignatures.
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { AirlockError, isErrnoException } from "../errors.ts";

/** What is signed: a domain-separated digest, so a signature cannot be replayed as anything else. */
export function signedMessage(digest: Buffer): Buffer {
  if (digest.length !== 32) throw new AirlockError("INTERNAL", "a manifest digest is 32 bytes");
  return Buffer.concat([Buffer.from("airlock-manifest-v1 signature\0"), digest]);
}

export interface ManifestSignature {
  /** The collaborator's name in the manifest. */
  name: string;
  /** Their public key (PEM, SPKI), checked against the manifest's publicKeySha256. */
  publicKeyPem: string;
  alg: "ed25519" | "p384";
  /** base64: Ed25519 signature, or ECDSA P-384 over SHA-384 (DER). */
  signature: string;
  /** The digest signed (hex), for people reading the file; the check uses the room's own digest. */
  digest: string;
}

function algOf(key: KeyObject, where: string): "ed25519" | "p384" {
  if (key.asymmetricKeyType === "ed25519") return "ed25519";
  if (key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "secp384r1") return "p384";
  throw new AirlockError("KEY_INVALID", `${where}: only Ed25519 and ECDSA P-384 keys sign manifests (this is ${key.asymmetricKeyType ?? "unknown"})`);
}

export function signManifestDigest(digest: Buffer, name: string, privateKeyPem: string, where = "signing key"): ManifestSignature {
  let key: KeyObject;
  try {
    key = createPrivateKey(privateKeyPem);
  } catch (err) {
    throw new AirlockError("KEY_INVALID", `${where}: not a PEM private key (${(err as Error).message})`);
  }
  const alg = algOf(key, where);
  const signature = sign(alg === "ed25519" ? null : "sha384", signedMessage(digest), key);
  const publicKeyPem = createPublicKey(key).export({ type: "spki", format: "pem" }) as string;
  return { name, publicKeyPem, alg, signature: signature.toString("base64"), digest: digest.toString("hex") };
}

export interface SignatureCheck {
  name: string;
  ok: boolean;
  reason: string;
}

const sha256Hex = (s: string): string => createHash("sha256").update(Buffer.from(s)).digest("hex");

/**
 * Checks that every required collaborator signed `digest`. `required` comes from the canonical
 * manifest (name + SHA-256 of the PEM); `signatures` are untrusted (they crossed the host).
 */
export function checkSignatures(digest: Buffer, required: { name: string; publicKeySha256: string }[], signatures: unknown): SignatureCheck[] {
  const list = Array.isArray(signatures) ? signatures.slice(0, 64) : [];
  return required.map(({ name, publicKeySha256 }) => {
    const candidates = list.filter((s): s is Record<string, unknown> => typeof s === "object" && s !== null && (s as Record<string, unknown>).name === name);
    if (candidates.length === 0) return { name, ok: false, reason: "no signature" };
    let last = "no valid signature";
    for (const s of candidates) {
      if (typeof s.publicKeyPem !== "string" || s.publicKeyPem.length > 4096 || typeof s.signature !== "string" || s.signature.length > 1024) {
        last = "malformed signature entry";
        continue;
      }
      if (sha256Hex(s.publicKeyPem) !== publicKeySha256) {
        last = "signed with a key other than the manifest names";
        continue;
      }
      try {
        const key = createPublicKey(s.publicKeyPem);
        const alg = algOf(key, `collaborator ${name}`);
        if (verify(alg === "ed25519" ? null : "sha384", signedMessage(digest), key, Buffer.from(s.signature, "base64"))) return { name, ok: true, reason: `${alg} signature verifies` };
        last = "the signature does not verify over this manifest's digest";
      } catch (err) {
        last = `unusable key or signature: ${(err as Error).message}`;
      }
    }
    return { name, ok: false, reason: last };
  });
}

/** Where a manifest's signatures are kept. */
export function signatureFileOf(manifestFile: string): string {
  return `${manifestFile}.sig.json`;
}

export function readSignatureFile(file: string): ManifestSignature[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if (isErrnoException(err, "ENOENT")) return [];
    throw new AirlockError("FILE_UNREADABLE", `${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const v = JSON.parse(text) as { signatures?: unknown };
    if (!Array.isArray(v.signatures)) throw new Error("no signatures list");
    return v.signatures as ManifestSignature[];
  } catch (err) {
    throw new AirlockError("MANIFEST_INVALID", `${file}: not a manifest signature file (${(err as Error).message})`);
  }
}

/** Adds or replaces one collaborator's signature in the file. */
export function addSignature(file: string, s: ManifestSignature): void {
  const rest = readSignatureFile(file).filter((x) => x.name !== s.name);
  writeFileSync(file, `${JSON.stringify({ signatures: [...rest, s] }, null, 2)}\n`);
}
