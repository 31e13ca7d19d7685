// What happens to one output at the end of a run: released in clear, encrypted (to the room or to
// the collaborator), or withheld — with the reason, which goes to the audit trail and the summary.
// Pure: the caller gathers the output's files and the sandbox's current scope, then acts on the
// answer. Order: the size limit applies to every mode (a huge output is itself a way out), then
// the mode's scope ceiling (scopes.ts), then for open mode the format rules (formats.ts).
import type { DataScope, OutputFormat, OutputMode } from "../../../proto/src/manifest/schema.ts";
import { checkFormat } from "./formats.ts";
import type { Schema } from "./formats.ts";
import { MODE_CEILING, modeMayCarry } from "./scopes.ts";

export interface OutputFile {
  /** Path inside the output folder, for messages. */
  path: string;
  size: number;
  /** The bytes; required for open mode (the format is checked), unused otherwise. */
  content?: Buffer;
}

export interface OutputRequest {
  name: string;
  mode: OutputMode;
  maxBytes: number;
  format: OutputFormat;
  schema?: Schema;
  /** trusted mode: the collaborator's age recipient from the manifest. */
  recipient?: string;
  files: OutputFile[];
}

export type OutputDecision =
  | { decision: "release"; reason: string }
  | { decision: "encrypt"; reason: string; to: "room" | "collaborator"; recipient?: string }
  | { decision: "withhold"; reason: string };

/** File names come from the workload: quoted and escaped so a reason never carries control codes. */
const shown = (p: string): string => JSON.stringify(p.length > 200 ? `${p.slice(0, 200)}…` : p);

export function decideOutput(out: OutputRequest, scope: DataScope): OutputDecision {
  const total = out.files.reduce((n, f) => n + f.size, 0);
  if (total > out.maxBytes) {
    return { decision: "withhold", reason: `output ${out.name} is ${total} bytes, over its limit of ${out.maxBytes}` };
  }
  if (!modeMayCarry(out.mode, scope)) {
    return {
      decision: "withhold",
      reason: `output ${out.name} is ${out.mode} but the sandbox has read ${scope} data; ${out.mode} mode carries at most ${MODE_CEILING[out.mode]}`,
    };
  }
  switch (out.mode) {
    case "secure":
      return { decision: "encrypt", to: "room", reason: `secure: encrypted to the room recipient (scope ${scope})` };
    case "trusted":
      if (!out.recipient) return { decision: "withhold", reason: `output ${out.name} is trusted but names no recipient` };
      return { decision: "encrypt", to: "collaborator", recipient: out.recipient, reason: `trusted: encrypted to ${out.recipient} (scope ${scope})` };
    case "open":
      for (const f of out.files) {
        if (!f.content) return { decision: "withhold", reason: `output ${out.name}: ${shown(f.path)} was not inspected (open outputs must be checked)` };
        if (f.content.length !== f.size) return { decision: "withhold", reason: `output ${out.name}: ${shown(f.path)} is not the size it claims` };
        const why = checkFormat(f.content, out.format, out.schema);
        if (why) return { decision: "withhold", reason: `output ${out.name}: ${shown(f.path)} ${why} (declared format ${out.format}${out.schema ? " with a schema" : ""})` };
      }
      return { decision: "release", reason: `open: ${out.files.length} file(s), ${total} bytes, ${out.format} checked, scope ${scope}` };
  }
}
