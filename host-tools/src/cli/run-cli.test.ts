// The CLI's exit status comes from ERROR_CODES (each code declared once with it), not a table of
// its own; `airlock --help` ends with the same codes and summaries.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ERROR_CODES, RUN_EXIT, RUN_EXIT_SUMMARY } from "../../../proto/src/errors.ts";
import { exitStatusHelp, runCli, topLevelHelp } from "./run-cli.ts";
import { helpWidth, PREBUILT_HELP_WIDTHS } from "./help-width.ts";
import { MILAN_CHAIN, MILAN_REPORT, MILAN_VCEK, OVMF_AMDSEV_SUFFIX } from "../../../test/fixtures/index.ts";

let err = "";
let out = "";
beforeEach(() => {
  err = "";
  out = "";
  vi.spyOn(process.stdout, "write").mockImplementation((s) => ((out += String(s)), true));
  vi.spyOn(process.stderr, "write").mockImplementation((s) => ((err += String(s)), true));
});
afterEach(() => vi.restoreAllMocks());

describe("runCli exit status", () => {
  it("is the error code's, as ERROR_CODES declares it", async () => {
    const cases: [string[], keyof typeof ERROR_CODES][] = [
      [["no-such-command"], "USAGE"],
      [["verify-report", MILAN_REPORT, "--vcek", MILAN_VCEK, "--chain", MILAN_CHAIN, "--measurement", "00".repeat(48)], "REPORT_REJECTED"],
      [["verify-report", MILAN_REPORT, "--vcek", MILAN_VCEK, "--chain", MILAN_CHAIN, "--min-tcb", "snp=x"], "USAGE"],
      [["measure", "--ovmf", OVMF_AMDSEV_SUFFIX, "--vcpus", "1"], "MEASURE"],
    ];
    for (const [args, code] of cases) {
      err = "";
      expect(await runCli(args, 100), args.join(" ")).toBe(ERROR_CODES[code].exit);
      expect(err, args.join(" ")).toContain(`[${code}]`);
    }
    expect(ERROR_CODES.REPORT_REJECTED.exit).toBe(1);
  });
});

describe("airlock --help", () => {
  it("ends with every code, its exit status and summary, and airlock run's own statuses", () => {
    const pad = Math.max(...Object.keys(ERROR_CODES).map((c) => c.length));
    for (const width of [80, 110]) {
      const lines = exitStatusHelp(width).split("\n");
      expect(lines.every((l) => l.length <= width)).toBe(true);
      // Wrapped lines hang under the summary they continue: join them back.
      const help = lines.join("\n").replace(/\n {5,}/g, " ");
      for (const [code, { exit, summary }] of Object.entries(ERROR_CODES)) expect(help.split("\n")).toContain(`  ${code.padEnd(pad)}  ${exit}  ${summary}`);
      for (const [k, status] of Object.entries(RUN_EXIT)) expect(help.split("\n")).toContain(`  ${status}  ${RUN_EXIT_SUMMARY[k as keyof typeof RUN_EXIT]}`);
    }
  });
});

// The bundle prints `airlock --help` without yargs, from text the build rendered with
// topLevelHelp (images/build-bundles.mjs): that must be what yargs itself prints.
describe("the prebuilt airlock --help", () => {
  it("is what the parser prints at each width it is rendered for", async () => {
    const columns = Object.getOwnPropertyDescriptor(process.stdout, "columns");
    vi.spyOn(process, "exit").mockImplementation((() => undefined) as never);
    vi.spyOn(console, "log").mockImplementation((...a: unknown[]) => void process.stdout.write(`${a.join(" ")}\n`));
    try {
      for (const width of PREBUILT_HELP_WIDTHS) {
        Object.defineProperty(process.stdout, "columns", { value: width === 100 ? undefined : width, configurable: true });
        out = "";
        expect(await runCli(["--help"], helpWidth())).toBe(0);
        expect(out).toContain("Commands:");
        expect(out, `width ${width}`).toBe(`${await topLevelHelp(width)}\n`);
      }
    } finally {
      if (columns) Object.defineProperty(process.stdout, "columns", columns);
      else delete (process.stdout as { columns?: number }).columns;
    }
  });

  // Only when built (npm test builds first): the bundle's text, through a pipe (width 100).
  const bundle = fileURLToPath(new URL("../../../dist/airlock.mjs", import.meta.url));
  it.skipIf(!existsSync(bundle))("is what the built bundle prints", async () => {
    const want = `${await topLevelHelp(100)}\n`;
    for (const flag of ["--help", "-h"]) {
      const r = spawnSync(process.execPath, [bundle, flag], { encoding: "utf8" });
      expect(r.status).toBe(0);
      expect(r.stdout, flag).toBe(want);
    }
  });
});

describe("the airlock launcher (host-tools/bin/airlock)", () => {
  const launcher = fileURLToPath(new URL("../../bin/airlock", import.meta.url));
  const bundle = fileURLToPath(new URL("../../../dist/airlock.mjs", import.meta.url));
  // node warns on stderr when it cannot load NODE_EXTRA_CA_CERTS: proof of whether it tried.
  it.skipIf(!existsSync(bundle))("runs the CLI without Node's start-up parse of NODE_EXTRA_CA_CERTS", () => {
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: "/nonexistent/airlock-test-ca.pem" };
    const direct = spawnSync(process.execPath, ["-e", "0"], { env, encoding: "utf8" });
    expect(direct.stderr).toContain("extra certs");
    const r = spawnSync(launcher, ["--help"], { env, encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("airlock <command>");
    expect(r.stderr).toBe("");
  });
});
