// The audit trail: append-only, hash-chained JSON lines with signed checkpoints (see record.ts for
// the format). The enforcer records every privileged act with AuditLog.append; anyone verifies a
// log with verifyAuditLog / `airlock audit verify LOG`.
export { AuditLog } from "./writer.ts";
export type { AuditLogOptions } from "./writer.ts";
export { verifyAuditLog } from "./verify.ts";
export type { AuditProblem, AuditVerification, VerifyOptions } from "./verify.ts";
export { verifyAttestedAuditLog, auditKeyReportData, ATTESTATION_KIND } from "./attested.ts";
export type { AttestedVerifyOptions, AttestedAuditVerification, AttestationBinding, BindingCheck } from "./attested.ts";
export { signerFromPrivateKey, recordHash, GENESIS, CHECKPOINT, CLOSED } from "./record.ts";
export type { AuditRecord, AuditSigner, SealData, SignatureAlg } from "./record.ts";
export { canonicalJson } from "./canonical.ts";
export type { Json } from "./canonical.ts";

/**
 * The kinds of record the enforcer writes, so that summaries and tests agree on names. Data of
 * each record names the object (input/output name, key id, etc.) and never holds key material or
 * dataset contents.
 */
export const AUDIT_KINDS = {
  manifestChecked: "manifest.checked",
  signatureChecked: "manifest.signature",
  attestation: "attestation",
  keyReleased: "key.released",
  consentAsked: "consent.asked",
  consentAnswered: "consent.answered",
  inputServed: "input.served",
  outputDecision: "output.decision",
  workloadStarted: "workload.started",
  workloadExited: "workload.exited",
  violation: "violation",
  runFailed: "run.failed",
  keyBroker: "key.broker",
  /** One HTTP egress decision (firewall-vm/src/proxies/http/rules.ts egressReceipt). */
  egressRequest: "egress.request",
} as const;
