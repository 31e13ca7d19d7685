// Verifies an audit log using only the log (and optionally the key it must be signed with):
// every line parses, seq counts up from 0, each prev is the hash before it, each hash matches its
// content, every checkpoint/closed signature verifies under one key, nothing follows "closed".
// Truncation shows at the end: a complete log ends with a signed record; records after the last
// signature are reported as an unsigned tail (they verify as a chain, but cutting them off would
// leave no trace), and a log ending at a checkpoint is reported as not closed.
// Who wrote the log (the key bound by the firewall's attestation report) is attested.ts's check.
import { createPublicKey } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { algOf, CHECKPOINT, CLOSED, GENESIS, recordHash, signedBytes, spkiBase64, verifySignature } from "./record.ts";
import type { AuditRecord, SignatureAlg } from "./record.ts";

export interface AuditProblem {
  /** 1-based line number in the file. */
  line: number;
  seq: number | null;
  reason: string;
}

export interface AuditVerification {
  valid: boolean;
  /** Records that verified (in order, from seq 0). */
  records: number;
  /** How the log ends. "closed" is the only state that proves nothing was cut off. */
  end: "closed" | "checkpoint" | "unsigned-tail" | "empty" | "invalid";
  lastSignedSeq: number | null;
  unsignedTail: { from: number; to: number } | null;
  alg: SignatureAlg | null;
  /** base64 SPKI DER of the key that signed the checkpoints. */
  publicKey: string | null;
  firstBad: AuditProblem | null;
  warnings: string[];
  /** Kinds and counts, for a summary. */
  kinds: Record<string, number>;
}

export interface VerifyOptions {
  /** The key the log must be signed with (e.g. the firewall's attested key). */
  expectedKey?: KeyObject;
  /** Accept records after the last signed one (a writer that crashed), with a warning. */
  allowUnsignedTail?: boolean;
  /** Only a log that ends with its "closed" record is valid (not one ending at a checkpoint). */
  requireClosed?: boolean;
}

const KEYS = ["data", "hash", "kind", "prev", "seq", "time"];
const HEX64 = /^[0-9a-f]{64}$/;

function shapeError(r: unknown): string | null {
  if (typeof r !== "object" || r === null || Array.isArray(r)) return "is not a JSON object";
  const keys = Object.keys(r).filter((k) => k !== "sig").sort();
  if (keys.join() !== KEYS.join()) return `has fields ${JSON.stringify(Object.keys(r)).slice(0, 300)}, expected seq, time, kind, data, prev, hash and for checkpoints sig`;
  const x = r as Record<string, unknown>;
  if (!Number.isSafeInteger(x.seq) || (x.seq as number) < 0) return "has a seq that is not a non-negative integer";
  if (typeof x.time !== "string" || Number.isNaN(Date.parse(x.time))) return "has a time that is not a date";
  if (typeof x.kind !== "string") return "has a kind that is not a string";
  if (typeof x.prev !== "string" || !HEX64.test(x.prev)) return "has a prev that is not 64 hex digits";
  if (typeof x.hash !== "string" || !HEX64.test(x.hash)) return "has a hash that is not 64 hex digits";
  if ("sig" in x && typeof x.sig !== "string") return "has a sig that is not a string";
  return null;
}

export function verifyAuditLog(text: string, options: VerifyOptions = {}): AuditVerification {
  const result: AuditVerification = {
    valid: false,
    records: 0,
    end: "invalid",
    lastSignedSeq: null,
    unsignedTail: null,
    alg: null,
    publicKey: null,
    firstBad: null,
    warnings: [],
    kinds: {},
  };
  const expected = options.expectedKey ? spkiBase64(options.expectedKey) : null;
  const kinds = new Map<string, number>();
  const fail = (line: number, seq: number | null, reason: string): AuditVerification => {
    result.firstBad = { line, seq, reason };
    result.kinds = Object.fromEntries(kinds);
    return result;
  };

  const lines = text.split("\n");
  const torn = lines.pop(); // "" when the file ends with a newline, as every complete record does
  let key: KeyObject | null = null;
  let prev = GENESIS;
  let closed = false;
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    let r: AuditRecord;
    try {
      r = JSON.parse(lines[i]!) as AuditRecord;
    } catch {
      return fail(n, null, `line ${n} is not a JSON record (the file was edited)`);
    }
    const shape = shapeError(r);
    if (shape) return fail(n, null, `line ${n} ${shape}`);
    if (closed) return fail(n, r.seq, `record seq ${r.seq} follows the closed record (records were appended after the log was closed)`);
    if (r.seq !== i) {
      return fail(n, r.seq, `line ${n} holds seq ${r.seq}, expected ${i}: records were ${r.seq > i ? "deleted" : "duplicated or reordered"}`);
    }
    if (r.prev !== prev) return fail(n, r.seq, `record seq ${r.seq}: prev does not match the hash of seq ${i - 1}: a record was removed, inserted or reordered here`);
    let hash: string;
    try {
      hash = recordHash(r);
    } catch {
      // canonicalJson refuses numbers JSON cannot carry (1e999 parses to Infinity) and the stack runs out on deep nesting.
      return fail(n, r.seq, `record seq ${r.seq} holds data with no canonical JSON form (a number out of range, or nesting too deep): the file was edited`);
    }
    if (hash !== r.hash) return fail(n, r.seq, `record seq ${r.seq} was edited: its hash does not match its content`);

    if (r.kind === CHECKPOINT || r.kind === CLOSED) {
      const d = r.data as Record<string, unknown>;
      if (typeof r.sig !== "string" || typeof d !== "object" || d === null || typeof d.publicKey !== "string" || typeof d.alg !== "string") {
        return fail(n, r.seq, `${r.kind} record seq ${r.seq} lacks its signature, key or algorithm`);
      }
      if (d.covers !== r.seq) return fail(n, r.seq, `${r.kind} record seq ${r.seq} claims to cover ${JSON.stringify(d.covers) ?? "no"} records`);
      if (result.publicKey === null) {
        if (expected && d.publicKey !== expected) return fail(n, r.seq, `${r.kind} record seq ${r.seq} is signed by a key other than the expected one`);
        try {
          key = createPublicKey({ key: Buffer.from(d.publicKey, "base64"), format: "der", type: "spki" });
        } catch {
          return fail(n, r.seq, `${r.kind} record seq ${r.seq} has a malformed public key`);
        }
        let alg: SignatureAlg | null = null;
        try {
          alg = algOf(key);
        } catch {
          // reported below
        }
        if (alg === null || d.alg !== alg) return fail(n, r.seq, `${r.kind} record seq ${r.seq} names algorithm ${JSON.stringify(d.alg)} for a ${key.asymmetricKeyType} key`);
        result.publicKey = d.publicKey;
        result.alg = alg;
      } else if (d.publicKey !== result.publicKey || d.alg !== result.alg) {
        return fail(n, r.seq, `${r.kind} record seq ${r.seq} is signed by a different key than the earlier checkpoints`);
      }
      if (!verifySignature(result.alg!, key!, signedBytes(r.hash), Buffer.from(r.sig, "base64"))) {
        return fail(n, r.seq, `${r.kind} record seq ${r.seq}: the signature does not verify`);
      }
      result.lastSignedSeq = r.seq;
      closed = r.kind === CLOSED;
    } else if ("sig" in r) {
      return fail(n, r.seq, `record seq ${r.seq} of kind ${JSON.stringify(r.kind)} carries a signature (only checkpoints do)`);
    }
    kinds.set(r.kind, (kinds.get(r.kind) ?? 0) + 1);
    prev = r.hash;
    result.records = i + 1;
  }

  result.kinds = Object.fromEntries(kinds); // own properties only, whatever a kind is called
  const last = result.records - 1;
  if (torn !== "") {
    const msg = `line ${lines.length + 1} is incomplete (a write cut short, never acknowledged by the writer)`;
    if (!options.allowUnsignedTail) return fail(lines.length + 1, null, msg);
    result.warnings.push(`${msg}; ignored`);
  }
  if (result.records === 0) {
    result.end = "empty";
    return fail(1, null, "the log is empty: it was truncated to nothing or never written");
  }
  if (closed) {
    result.end = "closed";
  } else if (result.lastSignedSeq === last) {
    result.end = "checkpoint";
    const msg = `the log is not closed: it ends at the checkpoint seq ${last}; records written after that checkpoint could have been cut off without trace (or the writer stopped there)`;
    if (options.requireClosed) return fail(last + 1, last, msg);
    result.warnings.push(msg);
  } else {
    result.end = "unsigned-tail";
    const from = result.lastSignedSeq === null ? 0 : result.lastSignedSeq + 1;
    result.unsignedTail = { from, to: last };
    const msg = `records seq ${from}..${last} come after the last signed checkpoint (${result.lastSignedSeq ?? "none"}): their chain verifies, but nothing proves the log did not go on after seq ${last} (the writer crashed, or the log was truncated)`;
    if (!options.allowUnsignedTail) return fail(last + 1, last, `unsigned tail: ${msg}`);
    result.warnings.push(msg);
  }
  result.valid = true;
  return result;
}
