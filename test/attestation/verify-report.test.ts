// `airlock verify-report` as a user runs it: a real process, real files, exit statuses.
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { encodePolicy } from "../../proto/src/attestation/report.ts";
import { EmulatedPsp } from "../../host-tools/src/attestation/emulated-psp.ts";
import { amdCertFixture, MILAN_CHAIN, MILAN_REPORT, MILAN_VCEK } from "../fixtures/index.ts";

const repo = path.resolve(import.meta.dirname, "../..");
const tmp = mkdtempSync(path.join(tmpdir(), "airlock-verify-report-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function airlock(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", "tsx", path.join(repo, "host-tools/src/main.ts"), ...args], { cwd: repo, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 99) : 0, stdout, stderr });
    });
  });
}

const report = MILAN_REPORT;
const certs = ["--vcek", MILAN_VCEK, "--chain", MILAN_CHAIN, "--at", "2026-06-01T00:00:00Z"];
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

  it("takes snpguest's certificate directory layout", async () => {
    const dir = path.join(tmp, "certs");
    mkdirSync(dir);
    writeFileSync(path.join(dir, "vcek.der"), readFileSync(MILAN_VCEK));
    for (const c of ["ask", "ark"] as const) writeFileSync(path.join(dir, `${c}.pem`), readFileSync(amdCertFixture("milan", c)));
    const r = await airlock("verify-report", report, "--certs", dir, "--at", "2026-06-01T00:00:00Z");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  it("accepts an emulated report only with --trust-root naming the test ARK", async () => {
    const psp = EmulatedPsp.open(path.join(tmpdir(), "airlock-test-emulated-psp"));
    const measurementHex = "5a".repeat(48);
    const ev = psp.evidence({ measurement: Buffer.from(measurementHex, "hex"), policy: encodePolicy({ smt: true }) }, { reportData: Buffer.alloc(64, 1), vmpl: 0 });
    writeFileSync(path.join(tmp, "emu.bin"), ev.report);
    writeFileSync(path.join(tmp, "emu-vcek.der"), ev.vcek);
    writeFileSync(path.join(tmp, "emu-chain.pem"), ev.chain!);
    writeFileSync(path.join(tmp, "emu-ark.pem"), psp.arkPem);
    const args = [path.join(tmp, "emu.bin"), "--vcek", path.join(tmp, "emu-vcek.der"), "--chain", path.join(tmp, "emu-chain.pem"), "--measurement", measurementHex];
    const untrusted = await airlock("verify-report", ...args);
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/root: .*not a trusted milan root/);
    const trusted = await airlock("verify-report", ...args, "--trust-root", path.join(tmp, "emu-ark.pem"));
    expect(trusted.stderr).toBe("");
    expect(trusted.code).toBe(0);
    expect(trusted.stdout).toMatch(/TEST ROOT/);
  });
});
