import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { AirlockError } from "../errors.ts";
import { AMD_ROOTS } from "./amd-roots.ts";
import { assertVerified, ReportVerifier } from "./verify.ts";
import type { Evidence } from "./verify.ts";
import { pemToDers } from "./certs.ts";
import { amdCertFixture, MILAN_CHAIN, MILAN_REPORT, MILAN_VCEK } from "../../../test/fixtures/index.ts";

const report = readFileSync(MILAN_REPORT);
const vcek = readFileSync(MILAN_VCEK);
const chain = readFileSync(MILAN_CHAIN, "utf8");
const at = new Date("2026-01-01T00:00:00Z");
const evidence: Evidence = { report, vcek, chain };
const verifier = new ReportVerifier();

describe("AMD roots shipped in the project", () => {
  it("equal AMD's published fixtures", () => {
    for (const product of ["milan", "genoa", "turin"] as const) {
      for (const c of ["ark", "ask"] as const) {
        const fixture = pemToDers(readFileSync(amdCertFixture(product, c), "utf8"), "fixture")[0]!;
        expect(pemToDers(AMD_ROOTS[product][c], "shipped")[0]!.equals(fixture), `${product} ${c}`).toBe(true);
      }
    }
  });
});

describe("ReportVerifier on the real Milan report", () => {
  it("verifies with its VCEK and chain, and with the built-in chain", () => {
    const r = verifier.verify(evidence, { at, product: "milan", measurement: report.subarray(0x90, 0xc0), vmpl: 0, minTcb: { bootloader: 3, snp: 8, microcode: 115 } });
    expect(r.failed).toBeUndefined();
    expect(r.ok).toBe(true);
    expect(r.amdRoot).toBe(true);
    expect(r.product).toBe("milan");
    expect(r.passed).toContain("report-signature");
    expect(verifier.verify({ report, vcek }, { at }).ok).toBe(true);
    // ARK before ASK, or the VCEK bundled in too: still the same chain.
    const [askDer, arkDer] = pemToDers(chain, "chain");
    const pem = (d: Buffer) => `-----BEGIN CERTIFICATE-----\n${d.toString("base64")}\n-----END CERTIFICATE-----\n`;
    expect(verifier.verify({ report, vcek, chain: pem(arkDer!) + pem(askDer!) }, { at }).ok).toBe(true);
    expect(verifier.verify({ report, vcek, chain: pem(vcek) + chain }, { at }).ok).toBe(true);
    expect(verifier.verify({ report, vcek, chain: pem(askDer!) }, { at }).ok).toBe(true);
    expect(() => verifier.verify({ report, vcek, chain: pem(askDer!) + pem(askDer!) }, { at })).toThrow(/more than one intermediate/);
    expect(verifier.verify({ report, vcek: `-----BEGIN CERTIFICATE-----\n${vcek.toString("base64")}\n-----END CERTIFICATE-----\n` }, { at }).ok).toBe(true);
  });

  it("fails when any single bit of the signed part is flipped", () => {
    // Bits whose flip makes the report malformed are refused by the parser (REPORT_INVALID); every
    // other flip must fail a check. Either way, no flipped report is accepted.
    const v = new ReportVerifier();
    let rejected = 0;
    let malformed = 0;
    const copy = Buffer.from(report);
    for (let bit = 0; bit < 0x2a0 * 8; bit++) {
      const byte = bit >> 3;
      copy[byte] ^= 1 << (bit & 7);
      try {
        const r = v.verify({ report: copy, vcek, chain }, { at });
        expect(r.ok, `bit ${bit}`).toBe(false);
        rejected++;
      } catch (err) {
        expect((err as AirlockError).code, `bit ${bit}`).toBe("REPORT_INVALID");
        malformed++;
      }
      copy[byte] ^= 1 << (bit & 7);
    }
    expect(rejected + malformed).toBe(0x2a0 * 8);
    expect(rejected).toBeGreaterThan(3000); // the rest lie in reserved (must-be-zero) areas
  });

  it("names the first failed expectation", () => {
    const fail = (exp: Parameters<ReportVerifier["verify"]>[1], e: Evidence = evidence) => verifier.verify(e, { at, ...exp }).failed?.check;
    expect(fail({ measurement: Buffer.alloc(48) })).toBe("measurement");
    expect(fail({ reportData: Buffer.alloc(64) })).toBe("report-data");
    expect(fail({ hostData: Buffer.alloc(32, 1) })).toBe("host-data");
    expect(fail({ vmpl: 1 })).toBe("vmpl");
    expect(fail({ minTcb: { snp: 9 } })).toBe("min-tcb");
    expect(fail({ forbidSmt: true })).toBe("policy-smt");
    expect(fail({ requireSingleSocket: true })).toBe("policy-single-socket");
    expect(fail({ product: "genoa" })).toBe("root");
    expect(fail({ product: "genoa" }, { report, vcek })).toBe("vcek-signature");
    expect(fail({ at: new Date("2031-01-01T00:00:00Z") })).toBe("cert-validity");
    expect(fail({ at: new Date("2020-01-01T00:00:00Z") })).toBe("cert-validity");
    const r = verifier.verify(evidence, { at, measurement: Buffer.alloc(48), vmpl: 3 });
    expect(r.failed?.check).toBe("measurement");
    expect(() => assertVerified(r)).toThrow(/REPORT_REJECTED|measurement/);
    try {
      assertVerified(r);
    } catch (err) {
      expect((err as AirlockError).code).toBe("REPORT_REJECTED");
    }
  });

  it("refuses a chain from another product and another root", () => {
    const genoaChain = AMD_ROOTS.genoa.ask + AMD_ROOTS.genoa.ark;
    expect(verifier.verify({ report, vcek, chain: genoaChain }, { at }).failed?.check).toBe("root"); // VCEK says Milan
    expect(verifier.verify({ report, vcek, chain: genoaChain }, { at, product: "genoa" }).failed?.check).toBe("vcek-signature");
    const onlyGenoa = new ReportVerifier({ trustRoots: [AMD_ROOTS.genoa.ark] });
    expect(onlyGenoa.verify(evidence, { at }).failed?.check).toBe("root");
  });

  it("refuses tampered certificates", () => {
    // A byte inside the VCEK's tbsCertificate (its hwID extension): the ASK signature no longer holds.
    const der = Buffer.from(vcek);
    const hw = der.indexOf(report.subarray(0x1a0, 0x1b0));
    der[hw + 5] ^= 0x01;
    expect(verifier.verify({ report, vcek: der, chain }, { at }).failed?.check).toBe("vcek-signature");
    // The ASK's signature value altered.
    const [askDer, arkDer] = pemToDers(chain, "chain");
    const badAsk = Buffer.from(askDer!);
    badAsk[badAsk.length - 10] ^= 0x80;
    const pem = (d: Buffer) => `-----BEGIN CERTIFICATE-----\n${d.toString("base64")}\n-----END CERTIFICATE-----\n`;
    expect(verifier.verify({ report, vcek, chain: pem(badAsk) + pem(arkDer!) }, { at }).failed?.check).toBe("ask-signature");
    // Garbage is malformed input, not a rejection.
    expect(() => verifier.verify({ report, vcek: Buffer.from("nonsense"), chain }, { at })).toThrow(expect.objectContaining({ code: "CERT_INVALID" }));
    expect(() => verifier.verify({ report: report.subarray(1), vcek, chain }, { at })).toThrow(expect.objectContaining({ code: "REPORT_INVALID" }));
  });
});
