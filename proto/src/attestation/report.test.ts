import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { AirlockError } from "../errors.ts";
import { MILAN_REPORT } from "../../../test/fixtures/index.ts";
import { decodePolicy, decodeTcb, encodePolicy, encodeTcb, parseReport, productFromCpuid, REPORT_SIZE, serializeReport, tcbReservedBytesSet } from "./report.ts";

const milan = readFileSync(MILAN_REPORT);

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AirlockError);
    expect((err as AirlockError).code).toBe("REPORT_INVALID");
    return (err as AirlockError).message;
  }
  throw new Error("expected REPORT_INVALID");
}

describe("report codec", () => {
  it("parses the real Milan report", () => {
    const r = parseReport(milan);
    expect(r.version).toBe(2);
    expect(r.policy).toBe(0x30000n);
    expect(r.vmpl).toBe(0);
    expect(r.signatureAlgo).toBe(1);
    expect(r.keyInfo).toEqual({ authorKeyEn: false, maskChipKey: false, signingKey: "vcek" });
    expect(r.measurement.toString("hex")).toBe(milan.subarray(0x90, 0xc0).toString("hex"));
    expect(r.reportedTcb).toBe(0x7308000000000003n);
    expect(decodeTcb(r.reportedTcb, "milan")).toEqual({ bootloader: 3, tee: 0, snp: 8, microcode: 115 });
    expect(r.currentVersion).toEqual({ major: 1, minor: 0x34, build: 4 });
    expect(r.cpuid).toBeUndefined();
    expect(r.signature.r.subarray(48).every((x) => x === 0)).toBe(true);
  });

  it("serializes back to the same bytes", () => {
    expect(serializeReport(parseReport(milan)).equals(milan)).toBe(true);
  });

  it("round-trips v3 CPUID and v5 mitigation vector fields", () => {
    const r = { ...parseReport(milan), version: 5, cpuid: { family: 0x1a, model: 0x02, stepping: 1 }, launchMitVector: 5n, currentMitVector: 7n };
    const raw = serializeReport(r);
    expect(raw[0x188]).toBe(0x1a);
    expect(raw.readBigUInt64LE(0x200)).toBe(7n);
    const back = parseReport(raw);
    expect(back.cpuid).toEqual({ family: 0x1a, model: 0x02, stepping: 1 });
    expect(back.currentMitVector).toBe(7n);
    expect(productFromCpuid(back.cpuid)).toBe("turin");
    expect(productFromCpuid({ family: 0x19, model: 0x01, stepping: 1 })).toBe("milan");
    expect(productFromCpuid({ family: 0x19, model: 0x11, stepping: 1 })).toBe("genoa");
  });

  it("refuses wrong sizes, versions and non-zero reserved areas with a precise reason", () => {
    expect(reasonOf(() => parseReport(milan.subarray(0, REPORT_SIZE - 1)))).toMatch(/size is 1183/);
    const mutate = (off: number, value: number): Buffer => {
      const b = Buffer.from(milan);
      b[off] = value;
      return b;
    };
    expect(reasonOf(() => parseReport(mutate(0, 1)))).toMatch(/version 1/);
    expect(reasonOf(() => parseReport(mutate(0, 6)))).toMatch(/version 6/);
    expect(reasonOf(() => parseReport(mutate(0x4d, 1)))).toMatch(/0x04d/);
    expect(reasonOf(() => parseReport(mutate(0x188, 1)))).toMatch(/0x188/); // v2 has no CPUID
    expect(reasonOf(() => parseReport(mutate(0x1f8, 1)))).toMatch(/0x1f8/);
    expect(reasonOf(() => parseReport(mutate(0x29f, 1)))).toMatch(/0x29f/);
    expect(reasonOf(() => parseReport(mutate(0x2a0 + 50, 1)))).toMatch(/signature r/);
    expect(reasonOf(() => parseReport(mutate(0x4a0 - 1, 1)))).toMatch(/after signature/);
    expect(reasonOf(() => parseReport(mutate(0x0a, 0x01)))).toMatch(/bit 17 must be one/);
    expect(reasonOf(() => parseReport(mutate(0x0b, 0x04)))).toMatch(/reserved bits 63:26/);
    expect(reasonOf(() => parseReport(mutate(0x34, 2)))).toMatch(/signature_algo 2/);
    expect(reasonOf(() => parseReport(mutate(0x30, 4)))).toMatch(/vmpl 4/);
    expect(reasonOf(() => parseReport(mutate(0x48, 0x0c)))).toMatch(/signing key 3/);
    expect(reasonOf(() => parseReport(mutate(0x48, 0x20)))).toMatch(/reserved bits 31:5/);
  });

  it("encodes policy and TCB per product", () => {
    const p = encodePolicy({ abiMajor: 1, abiMinor: 55, smt: true, debug: true });
    expect(p).toBe(0x0b0137n);
    expect(decodePolicy(p)).toMatchObject({ abiMajor: 1, abiMinor: 55, smt: true, debug: true, migrateMa: false });
    const turin = { fmc: 1, bootloader: 2, tee: 3, snp: 4, microcode: 5 };
    expect(encodeTcb(turin, "turin")).toBe(0x0500000004030201n);
    expect(decodeTcb(encodeTcb(turin, "turin"), "turin")).toEqual(turin);
    expect(encodeTcb({ bootloader: 3, tee: 0, snp: 8, microcode: 115 }, "genoa")).toBe(0x7308000000000003n);
    expect(tcbReservedBytesSet(0x7308000000000003n, "milan")).toBe(false);
    expect(tcbReservedBytesSet(0x7308000000000003n, "turin")).toBe(true);
  });
});
