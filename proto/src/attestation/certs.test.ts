import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { AirlockError } from "../errors.ts";
import { AMD_ROOTS } from "./amd-roots.ts";
import { MILAN_REPORT, MILAN_VCEK } from "../../../test/fixtures/index.ts";
import { extHwId, extInteger, extString, isAmdPss, KDS_OID, parseCert, pemToDers, verifyPssSignature } from "./certs.ts";

const vcekDer = readFileSync(MILAN_VCEK);
const report = readFileSync(MILAN_REPORT);
const arkDer = pemToDers(AMD_ROOTS.milan.ark, "ark")[0]!;

function replaceAll(buf: Buffer, from: string, to: string): Buffer {
  const hex = buf.toString("hex");
  expect(hex.split(from).length - 1).toBe(2); // the signature algorithm appears twice
  return Buffer.from(hex.split(from).join(to), "hex");
}

describe("certificate parsing", () => {
  it("reads the real VCEK's KDS extensions", () => {
    const c = parseCert(vcekDer, "VCEK");
    expect(c.commonName).toBe("SEV-VCEK");
    expect(extString(c, KDS_OID.productName)).toBe("Milan-B0");
    expect([KDS_OID.blSPL, KDS_OID.teeSPL, KDS_OID.snpSPL, KDS_OID.ucodeSPL].map((o) => extInteger(c, o))).toEqual([3, 0, 8, 115]);
    expect(extHwId(c)!.equals(report.subarray(0x1a0, 0x1e0))).toBe(true);
    expect(isAmdPss(c)).toBe(true);
  });

  it("accepts only RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48", () => {
    const ark = parseCert(arkDer, "ARK");
    expect(verifyPssSignature(ark, ark.publicKey)).toBe(true);
    const salt32 = parseCert(replaceAll(arkDer, "a203020130", "a203020120"), "ARK");
    expect(isAmdPss(salt32)).toBe(false);
    expect(verifyPssSignature(salt32, ark.publicKey)).toBe(false);
    const sha256 = parseCert(replaceAll(arkDer, "a00f300d06096086480165030402020500", "a00f300d06096086480165030402010500"), "ARK");
    expect(isAmdPss(sha256)).toBe(false);
  });

  it("refuses truncated and garbled certificates with CERT_INVALID, never anything else", () => {
    for (let len = 0; len < vcekDer.length; len += 7) {
      expect(() => parseCert(vcekDer.subarray(0, len), "VCEK")).toThrow(AirlockError);
    }
    let refused = 0;
    for (let i = 0; i < vcekDer.length; i += 3) {
      const d = Buffer.from(vcekDer);
      d[i] ^= 0xff;
      try {
        parseCert(d, "VCEK");
      } catch (err) {
        expect((err as AirlockError).code).toBe("CERT_INVALID");
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(10);
  });
});
