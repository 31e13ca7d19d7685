import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sign } from "node:crypto";
import { decodeTcb, encodePolicy, encodeTcb, parseReport, serializeReport } from "../../../proto/src/attestation/report.ts";
import { AMD_ROOTS } from "../../../proto/src/attestation/amd-roots.ts";
import { parseCert } from "../../../proto/src/attestation/certs.ts";
import { DEFAULT_TCB, EmulatedPsp } from "./emulated-psp.ts";
import { createTestChain, toPem } from "./test-chain.ts";
import type { GuestLaunch } from "./emulated-psp.ts";
import { ReportVerifier } from "./verify.ts";

const state = mkdtempSync(path.join(tmpdir(), "airlock-psp-"));
afterAll(() => rmSync(state, { recursive: true, force: true }));

const launch: GuestLaunch = { measurement: Buffer.alloc(48, 0xab), hostData: Buffer.alloc(32, 0xcd), policy: encodePolicy({ smt: true }) };
const reportData = Buffer.alloc(64, 7);
let psp: EmulatedPsp;

beforeAll(() => {
  mkdirSync(path.join(state, "psp")); // an existing empty dir is filled in place
  psp = EmulatedPsp.open(path.join(state, "psp"));
}, 120_000); // two RSA-4096 keys: seconds, more on a busy machine

describe("EmulatedPsp", () => {
  it("issues a chain in AMD's shapes with clearly-test names", () => {
    const ark = parseCert(psp.arkPem, "ark");
    const vcek = parseCert(psp.vcekDer, "vcek");
    expect(ark.commonName).toBe("ARK-Milan-AIRLOCK-TEST");
    expect(ark.publicKey.asymmetricKeyDetails?.modulusLength).toBe(4096);
    expect(vcek.publicKey.asymmetricKeyDetails?.namedCurve).toBe("secp384r1");
    expect(vcek.extensions.get("1.3.6.1.4.1.3704.1.4")?.equals(psp.chipId)).toBe(true);
  });

  it("persists the chain and reuses it; the VCEK key file is private", () => {
    const again = EmulatedPsp.open(path.join(state, "psp"));
    expect(again.arkPem).toBe(psp.arkPem);
    expect(again.vcekDer.equals(psp.vcekDer)).toBe(true);
    expect(statSync(path.join(state, "psp", "vcek-key.pem")).mode & 0o777).toBe(0o600);
    expect(readFileSync(path.join(state, "psp", "vcek-key.pem"), "utf8")).toMatch(/BEGIN PRIVATE KEY/);
    // The root's private keys are never written; the dir is private.
    expect(readdirSync(path.join(state, "psp")).sort()).toEqual(["ark.pem", "ask.pem", "psp.json", "vcek-key.pem", "vcek.der"]);
    expect(statSync(path.join(state, "psp")).mode & 0o777).toBe(0o700);
    // Another product's PSP is not silently swapped in; a dir holding something else is refused.
    expect(() => EmulatedPsp.open(path.join(state, "psp"), { product: "genoa" })).toThrow(/holds a milan chain/);
    mkdirSync(path.join(state, "other"));
    writeFileSync(path.join(state, "other", "x"), "");
    expect(() => EmulatedPsp.open(path.join(state, "other"))).toThrow(/holds no PSP/);
    // A report signed by the reloaded key verifies against the original chain.
    const v = new ReportVerifier({ trustRoots: [psp.arkPem] });
    expect(v.verify(again.evidence(launch, { reportData, vmpl: 0 })).ok).toBe(true);
  });

  it("signs reports that verify only when the test root is trusted explicitly", () => {
    const ev = psp.evidence(launch, { reportData, vmpl: 1 });
    const r = parseReport(ev.report);
    expect(r.measurement.equals(launch.measurement)).toBe(true);
    expect(r.hostData.equals(launch.hostData!)).toBe(true);
    expect(r.reportData.equals(reportData)).toBe(true);
    expect(r.vmpl).toBe(1);
    expect(r.version).toBe(3);
    const trusted = new ReportVerifier({ trustRoots: [psp.arkPem] }).verify(ev, { measurement: launch.measurement, hostData: launch.hostData!, reportData, vmpl: 1 });
    expect(trusted.failed).toBeUndefined();
    expect(trusted.amdRoot).toBe(false);
    // By default only AMD's roots are trusted.
    const byDefault = new ReportVerifier().verify(ev);
    expect(byDefault.ok).toBe(false);
    expect(byDefault.failed?.check).toBe("root");
    expect(byDefault.failed?.reason).toMatch(/only AMD's roots/);
    // An AMD root plus the test VCEK without a chain: the VCEK is not AMD-signed.
    expect(new ReportVerifier().verify({ report: ev.report, vcek: ev.vcek }).failed?.check).toBe("vcek-signature");
    // Trusting AMD's Milan ARK explicitly does not help either.
    expect(new ReportVerifier({ trustRoots: [AMD_ROOTS.milan.ark] }).verify(ev).failed?.check).toBe("root");
  });

  it("refuses a guest asking for a more privileged VMPL than it runs at", () => {
    expect(() => psp.report({ ...launch, vmpl: 2 }, { reportData, vmpl: 0 })).toThrow(/VMPL 2 cannot ask for a report at VMPL 0/);
  });

  it("a Turin chain uses the Turin TCB layout and 8-byte hwID; another test root is refused", { timeout: 120_000 }, () => {
    // Persisted across runs (like the other test suites' PSP) so the suite stays quick.
    const turin = EmulatedPsp.open(path.join(tmpdir(), "airlock-test-emulated-psp-turin"), { product: "turin" });
    const ev = turin.evidence(launch, { reportData, vmpl: 0 });
    const v = new ReportVerifier({ trustRoots: [turin.arkPem] });
    const res = v.verify(ev, { minTcb: { fmc: 1, snp: 1 } });
    expect(res.failed).toBeUndefined();
    expect(res.product).toBe("turin");
    expect(decodeTcb(parseReport(ev.report).reportedTcb, "turin")).toEqual(turin.tcb);
    // The Milan test root does not vouch for the Turin chain, nor the other way round.
    expect(new ReportVerifier({ trustRoots: [psp.arkPem] }).verify(ev).failed?.check).toBe("root");
    expect(v.verify(psp.evidence(launch, { reportData, vmpl: 0 })).failed?.check).toBe("root");
    // A debug policy is refused unless allowed.
    const dbg = turin.evidence({ ...launch, policy: encodePolicy({ debug: true }) }, { reportData, vmpl: 0 });
    expect(v.verify(dbg).failed?.check).toBe("policy-debug");
    expect(v.verify(dbg, { allowDebug: true }).ok).toBe(true);
  });

  it("VLEK-signed reports verify with the ASVK chain; the signing key kind must match", { timeout: 120_000 }, () => {
    const chain = createTestChain({ product: "milan", tcb: DEFAULT_TCB.milan, vlek: { cspId: "airlock-test-cloud" } });
    const tcb = encodeTcb(chain.tcb, "milan");
    const base = parseReport(psp.report(launch, { reportData, vmpl: 0 }));
    const signed = (signingKey: "vcek" | "vlek"): Buffer => {
      const raw = serializeReport({ ...base, reportedTcb: tcb, chipId: Buffer.alloc(64), keyInfo: { ...base.keyInfo, signingKey } });
      const sig = sign("sha384", raw.subarray(0, 0x2a0), { key: chain.vcekKey, dsaEncoding: "ieee-p1363" });
      Buffer.from(sig.subarray(0, 48)).reverse().copy(raw, 0x2a0);
      Buffer.from(sig.subarray(48)).reverse().copy(raw, 0x2a0 + 72);
      return raw;
    };
    const v = new ReportVerifier({ trustRoots: [toPem(chain.arkDer)] });
    const evidence = { report: signed("vlek"), vcek: chain.vcekDer, chain: toPem(chain.askDer) + toPem(chain.arkDer) };
    const ok = v.verify(evidence);
    expect(ok.failed).toBeUndefined();
    expect(ok.passed).toContain("chip-id");
    expect(v.verify({ ...evidence, report: signed("vcek") }).failed).toMatchObject({ check: "vcek-key", reason: expect.stringMatching(/VCEK but the certificate given is "SEV-VLEK"/) });
    // A VCEK report with a VLEK's certificate the other way round, and the VLEK without its ASVK.
    expect(v.verify({ report: evidence.report, vcek: psp.vcekDer, chain: psp.chainPem }).failed?.check).toBe("root");
    expect(new ReportVerifier().verify({ report: evidence.report, vcek: chain.vcekDer }).failed?.reason).toMatch(/ASVK/);
  });
});
