// The error model is declared once, in errors.ts: each code with its exit status and summary. The
// README's table of codes is generated from it and checked here; AIRLOCK_WRITE_README=1 rewrites
// the table instead of failing (`AIRLOCK_WRITE_README=1 npx vitest run proto/src/errors.test.ts`).
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { AirlockError, ERROR_CODES, exitStatusOf, isErrorCode, RUN_EXIT, RUN_EXIT_SUMMARY, type ErrorCode } from "./errors.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const README = path.join(ROOT, "README.md");
const BEGIN = "<!-- error-codes:begin (generated from proto/src/errors.ts; proto/src/errors.test.ts checks it) -->";
const END = "<!-- error-codes:end -->";

const cell = (s: string): string => s.replace(/\|/g, "\\|");

/** The README's tables: every error code, then `airlock run`'s own exit statuses. */
function readmeTable(): string {
  return [
    "| code | exit | what it means |",
    "| --- | --- | --- |",
    ...(Object.keys(ERROR_CODES) as ErrorCode[]).map((c) => `| \`${c}\` | ${ERROR_CODES[c].exit} | ${cell(ERROR_CODES[c].summary)} |`),
    "",
    "| `airlock run` exits | when |",
    "| --- | --- |",
    ...(Object.keys(RUN_EXIT) as (keyof typeof RUN_EXIT)[]).map((k) => `| ${RUN_EXIT[k]} | ${cell(RUN_EXIT_SUMMARY[k])} |`),
  ].join("\n");
}

describe("ERROR_CODES", () => {
  it("gives every code an exit status of 1, 2 or 3 and a one-line summary", () => {
    for (const [code, { exit, summary }] of Object.entries(ERROR_CODES)) {
      expect(code).toMatch(/^[A-Z][A-Z_]*$/);
      expect([1, 2, 3], code).toContain(exit);
      expect(summary, code).toMatch(/^[^\n]{10,160}$/);
    }
    expect(ERROR_CODES.USAGE.exit).toBe(2);
    expect(ERROR_CODES.INTERNAL.exit).toBe(3);
  });

  it("maps a code to its exit status; anything undeclared is an internal fault", () => {
    expect(exitStatusOf("REPORT_REJECTED")).toBe(1);
    expect(exitStatusOf("MANIFEST_INVALID")).toBe(2);
    expect(exitStatusOf("NO_SUCH_CODE")).toBe(3);
    // Only own keys are codes: a peer's "constructor" must not reach Object.prototype.
    for (const inherited of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
      expect(isErrorCode(inherited), inherited).toBe(false);
      expect(exitStatusOf(inherited), inherited).toBe(3);
    }
    expect(AirlockError.from(new Error("x")).code).toBe("INTERNAL");
  });

  it("keeps airlock run's own statuses apart from the error codes'", () => {
    expect(RUN_EXIT).toEqual({ workloadFailed: 64, incomplete: 65 });
    const codeStatuses = new Set(Object.values(ERROR_CODES).map((c) => c.exit as number));
    for (const status of Object.values(RUN_EXIT)) expect(codeStatuses.has(status)).toBe(false);
    expect(Object.keys(RUN_EXIT_SUMMARY).sort()).toEqual(Object.keys(RUN_EXIT).sort());
  });

  it("is listed in README.md exactly (codes, exit statuses, summaries, airlock run's 64 and 65)", () => {
    const text = readFileSync(README, "utf8");
    const begin = text.indexOf(BEGIN);
    const end = text.indexOf(END);
    expect(begin, `README.md has no line ${BEGIN}`).toBeGreaterThanOrEqual(0);
    expect(end, `README.md has no ${END} after the table`).toBeGreaterThan(begin);
    const current = text.slice(begin + BEGIN.length, end).trim();
    const wanted = readmeTable();
    if (current !== wanted && process.env.AIRLOCK_WRITE_README === "1") {
      writeFileSync(README, `${text.slice(0, begin + BEGIN.length)}\n${wanted}\n${text.slice(end)}`);
      return;
    }
    expect(current, "README.md's table of error codes differs from proto/src/errors.ts: rerun with AIRLOCK_WRITE_README=1 to regenerate it").toBe(wanted);
  });
});

describe("library code", () => {
  // Only the CLI (host-tools/src/cli/) speaks of command-line usage; libraries throw the precise
  // code of what was wrong with their input (MANIFEST_INVALID, KEY_INVALID, MEASURE, …).
  const LIBRARIES = ["proto/src", "firewall-vm/src", "sandbox-vm/src", "images", "host-tools/src"];
  const sources = (dir: string): string[] =>
    readdirSync(path.join(ROOT, dir), { withFileTypes: true, recursive: true })
      .filter((e) => e.isFile() && /\.(ts|mjs)$/.test(e.name) && !/\.test\.ts$|\.fixture\.ts$/.test(e.name))
      .map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)))
      .filter((f) => !f.startsWith(`host-tools${path.sep}src${path.sep}cli${path.sep}`) && !f.includes(`${path.sep}node_modules${path.sep}`));

  it("throws no USAGE error outside host-tools/src/cli", () => {
    const files = LIBRARIES.flatMap(sources);
    expect(files.length).toBeGreaterThan(50);
    const usage = /AirlockError(?:\.from)?\([^;]*?["']USAGE["']/s;
    const offenders = files.filter((f) => usage.test(readFileSync(path.join(ROOT, f), "utf8")));
    expect(offenders).toEqual([]);
  });
});
