// Verifies an audit log *and* who wrote it. verifyAuditLog alone proves only that the log is
// internally consistent: someone who edits it and re-signs every checkpoint with a fresh key gets a
// log that verifies. Here the key that signs the checkpoints must also be the key the firewall's
// attestation report binds (report_data = SHA-512("airlock-audit-key-v1\0" || SPKI DER)), and that
// report must verify against its VCEK and chain (carried in the log's attestation record) up to a
// trusted root: AMD's by default, a test root (the emulated PSP's ARK) only when the caller names
// it. By default only a closed log verifies (one ending with its signed "closed" record): a log cut
// after any checkpoint leaves no other trace.
import { createHash } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { AirlockError } from "../errors.ts";
import { parseReport } from "../attestation/report.ts";
import type { Product } from "../attestation/report.ts";
import { ReportVerifier } from "../attestation/verify.ts";
import type { CheckName } from "../attestation/verify.ts";
import type { AuditRecord } from "./record.ts";
import { verifyAuditLog } from "./verify.ts";
import type { AuditVerification } from "./verify.ts";

/** The kind of the record that carries the firewall's attestation report. */
export const ATTESTATION_KIND = "attestation";
/** Domain separation for the audit key in report_data. */
export const AUDIT_KEY_REPORT_CONTEXT = "airlock-audit-key-v1\0";
/** Kinds that may come before the attestation record: the firewall attests before it acts. */
const BEFORE_ATTESTATION = new Set(["manifest.checked", "manifest.signature", "checkpoint"]);

/** report_data binding an audit key: SHA-512("airlock-audit-key-v1\0" || SPKI DER). */
export function auditKeyReportData(spkiDer: Buffer): Buffer {
  return createHash("sha512").update(AUDIT_KEY_REPORT_CONTEXT).update(spkiDer).digest();
}

export interface AttestedVerifyOptions {
  /**
   * Accept a log that is not closed: one ending at a checkpoint, with records after the last
   * signature, or with a torn last line (each with a warning). Default: only a closed log verifies.
   */
  allowOpen?: boolean;
  /** Skip the attestation binding (a warning says so): the log then proves nothing about its writer. */
  skipAttestation?: boolean;
  /** The key the checkpoints must be signed with, in addition to the binding. */
  expectedKey?: KeyObject;
  /**
   * ARKs (PEM or DER) to trust instead of AMD's. The emulated PSP's test ARK is trusted only when
   * given here; by default AMD's roots alone are.
   */
  trustRoots?: (string | Buffer)[];
  /** Expected launch measurement (48 bytes) in the report. */
  measurement?: Buffer;
  /** Expected host_data (32 bytes) in the report: the room's manifest digest. */
  hostData?: Buffer;
  /** Certificates must be valid at this time (default: the attestation record's time). */
  at?: Date;
}

/** What failed in the binding, for scripts; `reason` says it for people. */
export type BindingCheck = "record" | "report" | "key-binding" | "record-fields" | "measurement" | "host-data";

export interface AttestationBinding {
  ok: boolean;
  /** seq of the attestation record (null when there is none). */
  seq: number | null;
  provider: string | null;
  product: Product | null;
  /** True when the report chains to one of AMD's roots (false: a test root the caller trusted). */
  amdRoot: boolean;
  measurement: string | null;
  hostData: string | null;
  /** Checks of the report verifier that passed. */
  reportChecks: CheckName[];
  failed: { check: BindingCheck; reason: string } | null;
}

export interface AttestedAuditVerification extends AuditVerification {
  /** The binding of the signing key to an attestation report; null when skipped or not reached. */
  attestation: AttestationBinding | null;
}

const hex = (b: Buffer): string => b.toString("hex");

/**
 * verifyAuditLog, then (unless skipped) the binding: the attestation record exists among the
 * log's first records, its report parses, its report_data binds the checkpoints' key, it verifies
 * against its VCEK and chain up to a trusted root, and it meets the expected measurement and
 * host_data. `valid` is true only when all of that holds; `firstBad` names the first failure.
 * Throws (CERT_INVALID) only when a trusted root given by the caller is not a certificate.
 */
export function verifyAttestedAuditLog(text: string, options: AttestedVerifyOptions = {}): AttestedAuditVerification {
  // Built first so that a bad root (the caller's input) throws before anything is checked.
  const verifier = options.skipAttestation ? null : new ReportVerifier(options.trustRoots ? { trustRoots: options.trustRoots } : {});
  const base = verifyAuditLog(text, {
    ...(options.expectedKey ? { expectedKey: options.expectedKey } : {}),
    allowUnsignedTail: options.allowOpen === true,
    requireClosed: options.allowOpen !== true,
  });
  const result: AttestedAuditVerification = { ...base, attestation: null };
  if (!base.valid) return result;
  if (!verifier) {
    result.warnings.unshift(
      "the attestation binding was NOT checked (--no-attestation): the signatures prove only that the log is consistent, not that the attested firewall wrote it; anyone can edit a log and re-sign it with a key of their own",
    );
    return result;
  }

  const binding: AttestationBinding = { ok: false, seq: null, provider: null, product: null, amdRoot: false, measurement: null, hostData: null, reportChecks: [], failed: null };
  result.attestation = binding;
  const fail = (check: BindingCheck, seq: number | null, reason: string): AttestedAuditVerification => {
    binding.failed = { check, reason };
    result.valid = false;
    result.firstBad = { line: seq === null ? 1 : seq + 1, seq, reason };
    return result;
  };

  // The records verified above: one per line, line i holding seq i.
  const records = text
    .split("\n")
    .slice(0, base.records)
    .map((l) => JSON.parse(l) as AuditRecord);
  const index = records.findIndex((r) => r.kind === ATTESTATION_KIND);
  if (index < 0) {
    return fail("record", null, "the log holds no attestation record: nothing binds the key that signed it to an attested firewall (it may have been removed, or the run stopped before attesting)");
  }
  const rec = records[index]!;
  binding.seq = rec.seq;
  const early = records.slice(0, index).find((r) => !BEFORE_ATTESTATION.has(r.kind));
  if (early) {
    return fail("record", rec.seq, `the attestation record is seq ${rec.seq}, after record seq ${early.seq} (${JSON.stringify(early.kind)}): the firewall attests its key before it acts, so the log was rearranged`);
  }
  const again = records.slice(index + 1).find((r) => r.kind === ATTESTATION_KIND);
  if (again) return fail("record", again.seq, `the log holds a second attestation record (seq ${again.seq}); a log binds one key`);
  if (base.publicKey === null) return fail("key-binding", rec.seq, "no record of the log is signed, so there is no key for the attestation report to bind");

  const d = rec.data as Record<string, unknown>;
  if (typeof d !== "object" || d === null || Array.isArray(d)) return fail("record", rec.seq, `the attestation record seq ${rec.seq} holds no object`);
  binding.provider = typeof d.provider === "string" ? d.provider : null;
  const b64 = (name: string): Buffer | null => (typeof d[name] === "string" && /^[A-Za-z0-9+/]*={0,2}$/.test(d[name]) ? Buffer.from(d[name], "base64") : null);
  const reportBytes = b64("report");
  if (!reportBytes || reportBytes.length === 0) return fail("record", rec.seq, `the attestation record seq ${rec.seq} carries no report (base64)`);
  const vcek = b64("vcek");
  if (!vcek || vcek.length === 0) {
    return fail("record", rec.seq, `the attestation record seq ${rec.seq} carries no VCEK (base64 DER), so its report cannot be verified offline (a log written by an older firewall?)`);
  }
  if (d.chain !== undefined && typeof d.chain !== "string") return fail("record", rec.seq, `the attestation record seq ${rec.seq} has a chain that is not PEM text`);
  let report;
  try {
    report = parseReport(reportBytes);
  } catch (err) {
    return fail("report", rec.seq, `the attestation report in record seq ${rec.seq} does not parse: ${AirlockError.from(err).message}`);
  }
  binding.measurement = hex(report.measurement);
  binding.hostData = hex(report.hostData);

  // 1. The report is genuine: signed by its VCEK, which chains to a trusted root.
  const at = options.at ?? new Date(rec.time);
  let verified;
  try {
    verified = verifier.verify({ report: reportBytes, vcek, ...(typeof d.chain === "string" ? { chain: d.chain } : {}) }, { at });
  } catch (err) {
    return fail("report", rec.seq, `the attestation report does not verify: ${AirlockError.from(err).message}`);
  }
  binding.reportChecks = verified.passed;
  binding.amdRoot = verified.amdRoot;
  binding.product = verified.product ?? null;
  if (!verified.ok) return fail("report", rec.seq, `the attestation report does not verify: ${verified.failed!.check}: ${verified.failed!.reason}`);

  // 2. It binds the key that signed the checkpoints.
  const spki = Buffer.from(base.publicKey, "base64");
  if (!report.reportData.equals(auditKeyReportData(spki))) {
    return fail(
      "key-binding",
      rec.seq,
      `the checkpoints are signed by a key the attestation report does not bind: report_data is not SHA-512("airlock-audit-key-v1\\0" || SPKI) of the signing key (the log was re-signed, or the report belongs to another run)`,
    );
  }

  // 3. The record's own fields say what the report says (readers look at them).
  const spkiSha256 = createHash("sha256").update(spki).digest("hex");
  const mismatch = (
    [
      ["measurement", binding.measurement],
      ["hostData", binding.hostData],
      ["auditKeySpkiSha256", spkiSha256],
    ] as const
  ).find(([k, v]) => d[k] !== undefined && d[k] !== v);
  if (mismatch) return fail("record-fields", rec.seq, `the attestation record seq ${rec.seq} says ${mismatch[0]} ${JSON.stringify(d[mismatch[0]])}, but the report (or the signing key) says ${mismatch[1]}`);

  // 4. The caller's expectations.
  if (options.measurement && !report.measurement.equals(options.measurement)) {
    return fail("measurement", rec.seq, `the attestation report's measurement is ${binding.measurement}, expected ${hex(options.measurement)}`);
  }
  if (options.hostData && !report.hostData.equals(options.hostData)) {
    return fail("host-data", rec.seq, `the attestation report's host_data is ${binding.hostData}, expected ${hex(options.hostData)}`);
  }
  if (!verified.amdRoot) result.warnings.push("the attestation report chains to a test root the caller trusted (emulated attestation), not to AMD: it proves nothing about real hardware");
  binding.ok = true;
  return result;
}
