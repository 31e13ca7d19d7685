// summary.json: the run's outcome for people and scripts, written beside audit.log on every
// outcome (completed, refused, failed, stopped), so a stale summary never sits beside a new trail.
// Its facts come from the signed audit trail (decisions, violations, refusals) and the host's own
// view (the pair's status and the files it wrote); it carries nothing the workload chose beyond
// what the firewall's rules let through.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { PairState } from "./pair-state.ts";
import type { WriterReport } from "./output-writer.ts";

export interface RunSummary {
  status: PairState["status"];
  completed: boolean;
  reason?: string;
  workload?: PairState["workload"];
  audit: string | null;
  outputs: Record<string, unknown>[];
  violations: Record<string, unknown>[];
  refused: Record<string, unknown>[];
  files: WriterReport["written"];
  /** Files the host writer refused (name collisions), counted per output. */
  refusedFiles: WriterReport["refused"];
}

function auditRecords(file: string): { kind: string; data: Record<string, unknown> }[] {
  if (!existsSync(file)) return [];
  const out: { kind: string; data: Record<string, unknown> }[] = [];
  for (const line of readFileSync(file, "utf8").split("\n")) {
    try {
      const r = JSON.parse(line) as { kind?: unknown; data?: unknown };
      if (typeof r.kind === "string" && typeof r.data === "object" && r.data !== null) out.push({ kind: r.kind, data: r.data as Record<string, unknown> });
    } catch {
      // a torn last line: `airlock audit verify` reports it
    }
  }
  return out;
}

export function writeRunSummary(outDir: string, auditFile: string, state: PairState, writer: WriterReport | undefined, completed: boolean): RunSummary {
  const records = auditRecords(auditFile);
  const summary: RunSummary = {
    status: state.status,
    completed,
    ...(state.reason ? { reason: state.reason } : {}),
    ...(state.workload ? { workload: state.workload } : {}),
    audit: existsSync(auditFile) ? path.basename(auditFile) : null,
    outputs: records.filter((r) => r.kind === "output.decision").map((r) => r.data),
    violations: records.filter((r) => r.kind === "violation").map((r) => r.data),
    refused: records.filter((r) => r.kind === "run.failed").map((r) => r.data),
    files: completed ? (writer?.written ?? []) : [],
    refusedFiles: writer?.refused ?? {},
  };
  const file = path.join(outDir, "summary.json");
  // A pair that fails before its outputs folder exists still gets its summary (and its supervisor lives to record why).
  mkdirSync(outDir, { recursive: true, mode: 0o700 });
  writeFileSync(`${file}.tmp`, `${JSON.stringify(summary, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
  return summary;
}
