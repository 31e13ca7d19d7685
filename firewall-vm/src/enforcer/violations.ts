// Violations as capped counters. What the workload did wrong is itself something it chose: a
// record per attempt would let it count out a secret in records, and a record written when the
// attempt happens would let it signal with time. So each kind is counted, the count is capped
// (VIOLATION_CAP means "that many or more"), and the records are written once, after the workload
// has ended — at most log2(VIOLATION_CAP + 1) bits per kind per run (README § Leakage budget).
import { AUDIT_KINDS } from "../../../proto/src/audit/index.ts";
import type { AuditSink } from "./audit-ship.ts";

export const VIOLATION_CAP = 3;

/** Every kind the enforcer may record, in a fixed order; the text is the record's `what`. */
export const VIOLATION_KINDS = {
  agentPort: "a second connection to the agent port: closed",
  pspRelay: "a connection to the attestation relay after the handshake: refused",
  overLimit: "output over its size limit: withheld",
  special: "special files or symlinks in an output folder: not shipped",
  badNames: "file names that are not valid UTF-8: not shipped",
  unreadable: "files that changed while they were collected: not shipped",
  stray: "files written outside the output folders: not shipped",
  consoleCut: "console over its bound: cut",
  unsafeNames: "open output with file names outside the safe set: withheld",
  egressRefused: "egress requests refused while the sandbox was above DOMAIN_OWNED",
} as const;
export type ViolationKind = keyof typeof VIOLATION_KINDS;

export class Violations {
  private readonly counts = new Map<ViolationKind, number>();

  note(kind: ViolationKind, n = 1): void {
    if (!Number.isSafeInteger(n) || n <= 0) return;
    this.counts.set(kind, Math.min(VIOLATION_CAP, (this.counts.get(kind) ?? 0) + n));
  }

  /** Writes one record per kind seen, in the fixed order: {what, count (capped)}. */
  async flush(audit: AuditSink): Promise<void> {
    for (const kind of Object.keys(VIOLATION_KINDS) as ViolationKind[]) {
      const count = this.counts.get(kind);
      if (count) await audit.append(AUDIT_KINDS.violation, { what: VIOLATION_KINDS[kind], count, cap: VIOLATION_CAP });
    }
    this.counts.clear();
  }
}
