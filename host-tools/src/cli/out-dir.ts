// `--out` of `airlock run`: a command-line concern, so the CLI checks it (a usage error) before
// the pair starts; the launch code's OutputWriter only ever writes into the folder made here.
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import { RUN_FILES, STAGING } from "../launch/output-writer.ts";
import { CONSOLE_OUTPUT } from "../../../proto/src/manifest/schema.ts";

/**
 * --out must be new or empty, so a stale file never sits beside a new trail. With `force`, what an
 * earlier run of this room wrote there is removed first (nothing else is touched).
 */
export function prepareOutDir(out: string, outputNames: string[], force: boolean): void {
  if (existsSync(out)) {
    const entries = readdirSync(out);
    const ours = new Set([...RUN_FILES, STAGING, `${CONSOLE_OUTPUT}.tar.age`, ...outputNames.flatMap((n) => [n, `${n}.tar.age`])]);
    if (entries.length > 0 && !force) {
      throw new AirlockError("USAGE", `--out ${out} is not empty (${entries.length} entries)`, { hint: "give a new or empty folder, or --force to replace what an earlier run of this room left there" });
    }
    const foreign = entries.filter((e) => !ours.has(e));
    if (foreign.length) throw new AirlockError("USAGE", `--out ${out} holds ${foreign.length} entries that are not this room's outputs; --force replaces only a run's own files`, { hint: "give a new or empty folder" });
    for (const e of entries) rmSync(path.join(out, e), { recursive: true, force: true });
  }
  mkdirSync(out, { recursive: true, mode: 0o700 });
}
