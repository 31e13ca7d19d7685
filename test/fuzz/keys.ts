// Fixed key material for the fuzzer's seeds: every seed must be the same bytes on every run, so no
// key here comes from a random generator. Never use these keys for anything but fuzzing.
import { createECDH, createHash, createPrivateKey, createPublicKey } from "node:crypto";
import type { KeyObject } from "node:crypto";

/** 32 bytes derived from a label. */
export function fixedBytes(label: string, n = 32): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; out.length * 32 < n; i++) out.push(createHash("sha256").update(`airlock-fuzz ${label} ${i}`).digest());
  return Buffer.concat(out).subarray(0, n);
}

export interface FixedX25519 {
  privateKey: KeyObject;
  publicRaw: Buffer;
  secretRaw: Buffer;
}

export function fixedX25519(label: string): FixedX25519 {
  const secretRaw = fixedBytes(`x25519 ${label}`);
  const privateKey = createPrivateKey({ key: Buffer.concat([Buffer.from("302e020100300506032b656e04220420", "hex"), secretRaw]), format: "der", type: "pkcs8" });
  const publicRaw = Buffer.from(createPublicKey(privateKey).export({ format: "jwk" }).x!, "base64url");
  return { privateKey, publicRaw, secretRaw };
}

export function fixedEd25519(label: string): KeyObject {
  return createPrivateKey({ key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), fixedBytes(`ed25519 ${label}`)]), format: "der", type: "pkcs8" });
}

/** A P-384 key pair from a fixed scalar. */
export function fixedP384(label: string): { privateKey: KeyObject; publicKey: KeyObject } {
  const d = fixedBytes(`p384 ${label}`, 48);
  d[0]! &= 0x7f; // below the group order
  const ecdh = createECDH("secp384r1");
  ecdh.setPrivateKey(d);
  const pub = ecdh.getPublicKey(); // 04 || x || y
  const jwk = { kty: "EC", crv: "P-384", d: d.toString("base64url"), x: pub.subarray(1, 49).toString("base64url"), y: pub.subarray(49).toString("base64url") };
  const privateKey = createPrivateKey({ key: jwk, format: "jwk" });
  return { privateKey, publicKey: createPublicKey(privateKey) };
}
