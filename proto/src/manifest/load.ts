// Reads a room manifest file (YAML) and validates it (validate.ts).
import { readFileSync } from "node:fs";
import path from "node:path";
import { LineCounter, parseDocument } from "yaml";
import { AirlockError } from "../errors.ts";
import type { Manifest } from "./schema.ts";
import { validateManifest } from "./validate.ts";

/**
 * Bound on a manifest file (the examples are 1-2 KiB). The YAML parser's duplicate-key check is
 * quadratic in a mapping's size, so the bound also bounds the time a hostile file can take.
 */
export const MAX_MANIFEST_BYTES = 256 * 1024;
/** YAML errors listed; a garbled file can have tens of thousands. */
const MAX_YAML_ERRORS = 20;

/** Reads, parses and validates the manifest at `file`. */
export function loadManifest(file: string): Manifest {
  const abs = path.resolve(file);
  let text: string;
  try {
    const raw = readFileSync(abs);
    if (raw.length > MAX_MANIFEST_BYTES) {
      throw new AirlockError("MANIFEST_INVALID", `${abs}: the room manifest is ${raw.length} bytes, more than the limit of ${MAX_MANIFEST_BYTES}`, { hint: "a room manifest is a short YAML file; put data in the workload bundle or the inputs" });
    }
    text = raw.toString("utf8");
  } catch (err) {
    if (err instanceof AirlockError) throw err;
    throw new AirlockError("MANIFEST_INVALID", `${abs}: cannot read the room manifest (${(err as NodeJS.ErrnoException).code ?? String(err)})`, {
      hint: "give the path of a room manifest YAML file",
    });
  }
  // Positions come from a LineCounter, for the errors listed only: prettyErrors computes them for
  // every error, which is quadratic (50 s for 256 KiB of garbled flow collections).
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false, lineCounter });
  if (doc.errors.length > 0) {
    const list = doc.errors.slice(0, MAX_YAML_ERRORS).map((e) => {
      const at = lineCounter.linePos(e.pos[0]);
      return `  - line ${at.line}, column ${at.col}: ${e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "")}`;
    });
    if (doc.errors.length > MAX_YAML_ERRORS) list.push(`  - and ${doc.errors.length - MAX_YAML_ERRORS} more`);
    throw new AirlockError("MANIFEST_INVALID", `${abs}: not valid YAML:\n${list.join("\n")}`, { hint: "fix the YAML syntax at the positions listed" });
  }
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (err) {
    // The yaml package throws (ReferenceError) for an alias without its anchor and for aliases
    // that expand past its limit; the parse itself reported no error for those.
    throw new AirlockError("MANIFEST_INVALID", `${abs}: not valid YAML: ${(err as Error).message}`, { hint: "fix the YAML aliases (*name) and anchors (&name)" });
  }
  return validateManifest(value, abs);
}
