// The CLI's exit status comes from ERROR_CODES (each code declared once with it), not a table of
// its own; `airlock --help` ends with the same codes and summaries.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ERROR_CODES, RUN_EXIT, RUN_EXIT_SUMMARY } from "../../../proto/src/errors.ts";
import { exitStatusHelp, runCli } from "./run-cli.ts";
import { MILAN_CHAIN, MILAN_REPORT, MILAN_VCEK, OVMF_AMDSEV_SUFFIX } from "../../../test/fixtures/index.ts";

let err = "";
beforeEach(() => {
  err = "";
  vi.spyOn(process.stdout, "write").mockImplementation(() => true);
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
      expect(await runCli(args), args.join(" ")).toBe(ERROR_CODES[code].exit);
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
