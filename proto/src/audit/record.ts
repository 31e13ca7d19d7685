// One audit record: a JSON line {seq, time, kind, data, prev, hash[, sig]}. `hash` is SHA-256 over
// the canonical JSON of {seq, time, kind, data, prev}; `prev` is the previous record's hash (64
// zeros for the first), so the records form a chain. Checkpoint and "closed" records carry `sig`,
// a signature over their hash made with the writer's key, whose public half is in their data.
import { createHash, createPublicKey, sign, verify } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { AirlockError } from "../errors.ts";
import { canonicalJson } from "./canonical.ts";
import type { Json } from "./canonical.ts";

export const GENESIS = "0".repeat(64);
export const CHECKPOINT = "checkpoint";
export const CLOSED = "closed";
/** Domain separation: an audit signature can never be replayed as another kind of signature. */
const SIG_CONTEXT = "airlock-audit-v1 checkpoint ";

export interface AuditRecord {
  seq: number;
  time: string;
  kind: string;
  data: Json;
  prev: string;
  hash: string;
  sig?: string;
}

/** What a checkpoint or closed record's data holds. */
export interface SealData {
  alg: SignatureAlg;
  /** base64 SPKI DER of the signing key. */
  publicKey: string;
  /** How many records precede this one (all covered by the signature through the chain). */
  covers: number;
  [extra: string]: Json;
}

export type SignatureAlg = "ed25519" | "ecdsa-p384-sha384";

/** Signs checkpoint hashes. The firewall passes its attested key; tests pass a local one. */
export interface AuditSigner {
  publicKey: KeyObject;
  sign(data: Buffer): Buffer | Promise<Buffer>;
}

export function recordHash(r: Pick<AuditRecord, "seq" | "time" | "kind" | "data" | "prev">): string {
  return createHash("sha256").update(canonicalJson({ seq: r.seq, time: r.time, kind: r.kind, data: r.data, prev: r.prev })).digest("hex");
}

export function signedBytes(hash: string): Buffer {
  return Buffer.from(SIG_CONTEXT + hash);
}

export function algOf(key: KeyObject): SignatureAlg {
  if (key.asymmetricKeyType === "ed25519") return "ed25519";
  if (key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "secp384r1") return "ecdsa-p384-sha384";
  throw new AirlockError("KEY_INVALID", `audit signing key must be Ed25519 or ECDSA P-384, not ${key.asymmetricKeyType ?? "unknown"}`);
}

/** A signer from a private KeyObject held in this process (Ed25519 or P-384). */
export function signerFromPrivateKey(privateKey: KeyObject): AuditSigner {
  const publicKey = createPublicKey(privateKey);
  const alg = algOf(publicKey);
  return {
    publicKey,
    sign: (data) => (alg === "ed25519" ? sign(null, data, privateKey) : sign("sha384", data, { key: privateKey, dsaEncoding: "ieee-p1363" })),
  };
}

export function verifySignature(alg: SignatureAlg, publicKey: KeyObject, data: Buffer, sig: Buffer): boolean {
  try {
    return alg === "ed25519" ? verify(null, data, publicKey, sig) : verify("sha384", data, { key: publicKey, dsaEncoding: "ieee-p1363" }, sig);
  } catch {
    return false;
  }
}

export function spkiBase64(key: KeyObject): string {
  return key.export({ format: "der", type: "spki" }).toString("base64");
}

/** One line of the log (canonical JSON, so the file itself is stable byte for byte). */
export function serialize(r: AuditRecord): string {
  return `${canonicalJson(r)}\n`;
}
