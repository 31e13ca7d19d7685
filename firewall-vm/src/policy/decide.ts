// What happens to one output at the end of a run: released in clear, encrypted (to the room or to
// the collaborator), or withheld — with the reason, which goes to the audit trail and the summary.
// Pure: the caller gathers the facts and acts on the answer. Two steps, because sealed outputs
// stream through the firewall and are decided before their bytes arrive:
//   1. decideOutput: the size limit (a huge output is itself a way out), then the mode's scope
//      ceiling (scopes.ts); sealed modes are decided here, open mode goes on to be inspected;
//   2. inspectOpenOutput: file names from a safe set, then the format rules (formats.ts).
// A reason never quotes what the workload chose (names, sizes, contents): it is built from the
// manifest and the rule that failed only, because reasons reach the host in clear.
import type { DataScope, OutputFormat, OutputMode } from "../../../proto/src/manifest/schema.ts";
import { checkFormat } from "./formats.ts";
import type { Schema } from "./formats.ts";
import { MODE_CEILING, modeMayCarry } from "./scopes.ts";
import { isSafeOpenName, MAX_OPEN_DEPTH } from "../../../proto/src/archive.ts";

export { isSafeOpenName };

export interface OutputRequest {
  name: string;
  mode: OutputMode;
  maxBytes: number;
  /** The agent measured the output over maxBytes (archive sizing, proto/src/archive.ts). */
  overLimit: boolean;
  /** trusted mode: the collaborator's age recipient from the manifest. */
  recipient?: string;
  /** secure mode: whether the key broker released the room's identity to this firewall. */
  roomRecipient?: string;
}

export type OutputDecision =
  | { decision: "release"; reason: string }
  | { decision: "encrypt"; reason: string; to: "room" | "collaborator"; recipient: string }
  | { decision: "withhold"; reason: string };

/** Step 1: before any content. Open outputs answer "release" meaning "inspect, then release". */
export function decideOutput(out: OutputRequest, scope: DataScope): OutputDecision {
  if (out.overLimit) return { decision: "withhold", reason: `output ${out.name} exceeded its size limit of ${out.maxBytes} bytes` };
  if (!modeMayCarry(out.mode, scope)) {
    return {
      decision: "withhold",
      reason: `output ${out.name} is ${out.mode} but the sandbox has read ${scope} data; ${out.mode} mode carries at most ${MODE_CEILING[out.mode]}`,
    };
  }
  switch (out.mode) {
    case "secure":
      if (!out.roomRecipient) return { decision: "withhold", reason: `output ${out.name} is secure but no room identity was released to this firewall, so it stays inside` };
      return { decision: "encrypt", to: "room", recipient: out.roomRecipient, reason: `secure: sealed to the room identity (scope ${scope})` };
    case "trusted":
      if (!out.recipient) return { decision: "withhold", reason: `output ${out.name} is trusted but names no recipient` };
      return { decision: "encrypt", to: "collaborator", recipient: out.recipient, reason: `trusted: sealed to ${out.recipient} (scope ${scope})` };
    case "open":
      return { decision: "release", reason: `open: names and format checked, scope ${scope}` };
  }
}

/**
 * Step 2, open outputs: every name from the safe set, every file in the declared format. Returns
 * the reason to withhold, or null to release. (A name that collides with another on the host —
 * a file where a folder is needed — is refused there, that file alone: host-tools' OutputWriter.)
 */
export function inspectOpenOutput(name: string, format: OutputFormat, files: { path: string; content: Buffer }[], schema?: Schema): string | null {
  for (const f of files) {
    if (!isSafeOpenName(f.path)) return `output ${name}: a file name is outside the safe set (letters, digits, '.', '_', '-'; at most ${MAX_OPEN_DEPTH} levels)`;
  }
  for (const f of files) {
    if (checkFormat(f.content, format, schema)) return `output ${name}: a file is not valid ${format}${schema ? " for its schema" : ""}`;
  }
  return null;
}
