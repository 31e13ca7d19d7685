import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { LaunchDigest, pageInfo, PAGE_TYPES, VMSA_GPA } from "./gctx.ts";

describe("PAGE_INFO", () => {
  it("lays out every field at its SNP ABI offset", () => {
    const prev = Buffer.alloc(48, 0x11);
    const contents = Buffer.alloc(48, 0x22);
    // Written out by hand from the ABI table, not from the code under test.
    const want = Buffer.from(
      "11".repeat(48) + // 0x00 previous digest
        "22".repeat(48) + // 0x30 contents
        "7000" + // 0x60 length 0x70, LE
        "06" + // 0x62 page type CPUID
        "00" + // 0x63 IMI
        "000000" + // 0x64..0x66 VMPL3/2/1 permissions
        "00" + // 0x67 reserved
        "0810325476980000", // 0x68 GPA 0x987654321008, LE
      "hex",
    );
    expect(pageInfo(prev, contents, PAGE_TYPES.CPUID, 0x9876_5432_1008).equals(want)).toBe(true);
  });

  it("records VMSA pages at 0xFFFFFFFFF000", () => {
    expect(pageInfo(Buffer.alloc(48), Buffer.alloc(48), PAGE_TYPES.VMSA, VMSA_GPA).subarray(0x68).toString("hex")).toBe("00f0ffffffff0000");
  });

  it("chains the digest through SHA-384 of each record", () => {
    const ld = new LaunchDigest();
    const page = Buffer.alloc(4096, 7);
    ld.normalPages(0x1000, page);
    const contents = createHash("sha384").update(page).digest();
    const expected = createHash("sha384").update(pageInfo(Buffer.alloc(48), contents, PAGE_TYPES.NORMAL, 0x1000)).digest();
    expect(ld.digest.equals(expected)).toBe(true);
    expect(ld.pages).toBe(1);
  });

  it("refuses partial pages and wrong-size seeds", () => {
    expect(() => new LaunchDigest().normalPages(0, Buffer.alloc(100))).toThrow(/whole pages/);
    expect(() => new LaunchDigest(Buffer.alloc(32))).toThrow(/48 bytes/);
  });
});
