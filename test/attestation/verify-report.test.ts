// `airlock verify-report` as a user runs it: a real process, real files, exit statuses.
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const repo = path.resolve(import.meta.dirname, "../..");
const snp = path.resolve(repo, "../shared/fixtures/snp");
const tmp = mkdtempSync(path.join(tmpdir(), "airlock-verify-report-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function airlock(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", "tsx", path.join(repo, "host-tools/src/main.ts"), ...args], { cwd: repo, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 99) : 0, stdout, stderr });
    });
  });
}

const report = path.join(snp, "report_milan.bin");
const certs = ["--vcek", path.join(snp, "vcek_milan.der"), "--chain", path.join(snp, "cert_chain_milan.pem"), "--at", "2026-06-01T00:00:00Z"];
const measurement = readFileSync(report).subarray(0x90, 0xc0).toString("hex");

describe("airlock verify-report", () => {
  it("exits 0 on the real Milan report with every expectation met", async () => {
    const r = await airlock("verify-report", report, ...certs, "--product", "milan", "--measurement", measurement, "--vmpl", "0", "--min-tcb", "bootloader=3,snp=8,microcode=115", "--json");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.ok).toBe(true);
    expect(out.report.measurement).toBe(measurement);
    expect(out.report.reportedTcb).toMatchObject({ snp: 8, microcode: 115 });
  });

  it("exits 1 naming the first failed expectation", async () => {
    const r = await airlock("verify-report", report, ...certs, "--measurement", "00".repeat(48), "--vmpl", "2");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/REPORT_REJECTED/);
    expect(r.stderr).toMatch(/measurement/);
    expect(r.stderr).not.toMatch(/vmpl/);
  });

  it("exits 1 on a tampered report and 2 on malformed input", async () => {
    const tampered = Buffer.from(readFileSync(report));
    tampered[0x95] ^= 0x10;
    writeFileSync(path.join(tmp, "tampered.bin"), tampered);
    const r1 = await airlock("verify-report", path.join(tmp, "tampered.bin"), ...certs);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(/report-signature/);
    writeFileSync(path.join(tmp, "short.bin"), tampered.subarray(0, 1000));
    const r2 = await airlock("verify-report", path.join(tmp, "short.bin"), ...certs);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/REPORT_INVALID/);
    const r3 = await airlock("verify-report", report, "--vcek", path.join(tmp, "short.bin"));
    expect(r3.code).toBe(2);
    expect(r3.stderr).toMatch(/CERT_INVALID/);
    const r4 = await airlock("verify-report", report, ...certs.slice(0, 4), "--at", "2031-01-01");
    expect(r4.code).toBe(1);
    expect(r4.stderr).toMatch(/cert-validity/);
  });
});
