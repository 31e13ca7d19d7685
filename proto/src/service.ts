// What the firewall's service API and its clients (host-tools/src/service) agree on beyond the
// .proto files: the port, how a caller names its reply key, how a user's UUID derives from it, how
// sealed answers are padded, and the bytes the audit key signs to bind the API's keys to the
// attestation report (proto/airlock/v1/service.proto). Design: firewall-vm/src/proxies/service/README.md.
import { createHash } from "node:crypto";
import { DataScopeType } from "../gen/enforcer/v1/data_scope_type_pb.ts";
import type { DataScope } from "./manifest/schema.ts";

/** The API's port on the firewall's NIC (the host forwards one of its own ports to it). */
export const SERVICE_API_PORT = 8443;
/** request_metadata key: the caller's age recipient, where answers at USER_PRIVATE are sealed. */
export const REPLY_TO_KEY = "airlock-reply-to";
/** response_metadata key: how the answer left ("public", "user" or "room"). */
export const RELEASED_KEY = "airlock-released";

/** A user's UUID as airlock names it: the first 16 bytes of SHA-256("airlock-user-v1\0" || recipient), hex. */
export function userUuid(recipient: string): string {
  return createHash("sha256").update("airlock-user-v1\0").update(recipient).digest().subarray(0, 16).toString("hex");
}

/** Above PUBLIC an answer is padded before sealing: the ciphertext's size says only its bucket. */
const PAD_MIN = 1024;

/** The length field of a sealed answer that says the workload failed (its words never leave). */
const FAILED = 0xffffffff;

/**
 * The padded plaintext of a sealed answer: u32 big-endian length, the answer, zeros to a power of
 * two (at least 1 KiB, capped at `max` + 4). `null` seals "the service failed" in the smallest
 * bucket, so a failure looks like any small answer to whoever sees only the ciphertext.
 */
export function padAnswer(answer: Buffer | null, max: number): Buffer {
  const need = 4 + (answer?.length ?? 0);
  let size = PAD_MIN;
  while (size < need) size *= 2;
  size = Math.max(need, Math.min(size, 4 + max));
  const out = Buffer.alloc(Math.max(size, answer ? 0 : PAD_MIN));
  out.writeUInt32BE(answer ? answer.length : FAILED, 0);
  answer?.copy(out, 4);
  return out;
}

/** The answer inside a padded plaintext; null when the workload failed. */
export function unpadAnswer(padded: Buffer): Buffer | null {
  if (padded.length < 4) throw new Error("a sealed answer is at least 4 bytes");
  const n = padded.readUInt32BE(0);
  if (n === FAILED) return null;
  if (n > padded.length - 4) throw new Error("a sealed answer's length is past its end");
  return padded.subarray(4, 4 + n);
}

/** What the audit key signs: "airlock-service-keys-v1\0" || digest (32) || SHA-256(TLS SPKI) (32) || input recipient. */
export function serviceBinding(digestHex: string, tlsSpkiSha256Hex: string, inputRecipient: string): Buffer {
  return Buffer.concat([Buffer.from("airlock-service-keys-v1\0"), Buffer.from(digestHex, "hex"), Buffer.from(tlsSpkiSha256Hex, "hex"), Buffer.from(inputRecipient)]);
}

/** airlock's scopes as Encrypted Zone's DataScopeType names them on the wire (same five, same order). */
const SCOPE_TO_WIRE: Record<DataScope, DataScopeType> = {
  PUBLIC: DataScopeType.PUBLIC,
  DOMAIN_OWNED: DataScopeType.DOMAIN_OWNED,
  USER_PRIVATE: DataScopeType.USER_PRIVATE,
  MULTI_USER_PRIVATE: DataScopeType.MULTI_USER_PRIVATE,
  SEALED: DataScopeType.SEALED,
};
const SCOPE_FROM_WIRE = new Map(Object.entries(SCOPE_TO_WIRE).map(([scope, wire]) => [wire, scope as DataScope]));

export const scopeToWire = (s: DataScope): DataScopeType => SCOPE_TO_WIRE[s];
/** The scope a wire value names; undefined for UNSPECIFIED or a value no scope has. */
export const scopeFromWire = (t: DataScopeType): DataScope | undefined => SCOPE_FROM_WIRE.get(t);

/** SHA-256 hex of DER bytes (a key's SubjectPublicKeyInfo). */
export const sha256Hex = (der: Buffer): string => createHash("sha256").update(der).digest("hex");
