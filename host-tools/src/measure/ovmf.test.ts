import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { guidFromBytes, guidToBytes, ovmfInfo, OVMF_GUIDS } from "./ovmf.ts";
import { buildSyntheticOvmf } from "./testdata/synthetic-ovmf.ts";
import { OVMF_AMDSEV_SUFFIX } from "../../../test/fixtures/index.ts";

const amdSev = readFileSync(OVMF_AMDSEV_SUFFIX);

describe("ovmfInfo", () => {
  it("reads the AmdSev fixture's table and SEV metadata", () => {
    const info = ovmfInfo(amdSev);
    expect(info.gpa).toBe(0xffff_f000);
    expect(info.apResetEip).toBe(0x80b004);
    expect(info.kernelHashesTableGpa).toBe(0x810c00);
    expect(info.hasKernelHashesSection).toBe(true);
    expect(info.sections.map((s) => [s.gpa, s.size, s.typeName])).toEqual([
      [0x800000, 0x9000, "SNP_SEC_MEM"],
      [0x80a000, 0x3000, "SNP_SEC_MEM"],
      [0x80d000, 0x1000, "SNP_SECRETS"],
      [0x80e000, 0x1000, "CPUID"],
      [0x80f000, 0x1000, "SVSM_CAA"],
      [0x810000, 0x1000, "SNP_KERNEL_HASHES"],
      [0x811000, 0xf000, "SNP_SEC_MEM"],
    ]);
  });

  it("stores GUIDs in mixed-endian form", () => {
    expect(guidToBytes(OVMF_GUIDS.footer).toString("hex")).toBe("de82b596b21ff745baeaa366c55a082d");
    expect(guidFromBytes(guidToBytes(OVMF_GUIDS.sevMetadata))).toBe(OVMF_GUIDS.sevMetadata);
  });

  it("round-trips a synthetic image", () => {
    const img = buildSyntheticOvmf({ pages: 3, sections: [{ gpa: 0x5000, size: 0x2000, type: 1 }], apResetEip: 0x1234, kernelHashesGpa: 0x7f00 });
    const info = ovmfInfo(img);
    expect(info.sections).toEqual([{ gpa: 0x5000, size: 0x2000, type: 1, typeName: "SNP_SEC_MEM" }]);
    expect(info.apResetEip).toBe(0x1234);
    expect(info.kernelHashesTableGpa).toBe(0x7f00);
  });

  it("treats an image without the footer GUID as having no table", () => {
    const info = ovmfInfo(Buffer.alloc(4096));
    expect(info.hasSevMetadata).toBe(false);
    expect(info.sections).toEqual([]);
  });

  describe("hostile images", () => {
    const good = (): Buffer => buildSyntheticOvmf({ pages: 2, sections: [{ gpa: 0x1000, size: 0x1000, type: 2 }], apResetEip: 0x100 });
    const footerAt = (img: Buffer): number => img.length - 50;
    const metaAt = (img: Buffer): number => img.length - 4096;

    it("rejects sizes that are not whole pages or empty", () => {
      expect(() => ovmfInfo(Buffer.alloc(4095))).toThrow(/not a multiple of 4096/);
      expect(() => ovmfInfo(Buffer.alloc(0))).toThrow(/empty/);
    });

    it("rejects a table size that runs past the image or under its header", () => {
      const a = good();
      a.writeUInt16LE(0xffff, footerAt(a));
      expect(() => ovmfInfo(a.subarray(a.length - 4096))).toThrow(/footer table size 65535 runs past/);
      const b = good();
      b.writeUInt16LE(3, footerAt(b));
      expect(() => ovmfInfo(b)).toThrow(/smaller than its 18-byte header/);
    });

    it("rejects an entry whose size is under its header or over the table", () => {
      const a = good();
      a.writeUInt16LE(5, footerAt(a) - 18); // the last entry (the reset block) just before the footer
      expect(() => ovmfInfo(a)).toThrow(/has size 5, smaller than its header/);
      const b = good();
      b.writeUInt16LE(4000, footerAt(b) - 18);
      expect(() => ovmfInfo(b)).toThrow(/larger than the rest of the table/);
    });

    it("rejects bad SEV metadata: offset, signature, version, count, section type", () => {
      const cases: [(img: Buffer) => void, RegExp][] = [
        [(img) => img.write("XSEV", metaAt(img), "latin1"), /signature "XSEV", expected "ASEV"/],
        [(img) => img.writeUInt32LE(2, metaAt(img) + 8), /version 2 is not supported/],
        [(img) => img.writeUInt32LE(1000, metaAt(img) + 12), /declares 1000 sections/],
        [(img) => img.writeUInt32LE(0x100000, metaAt(img) + 4), /size 1048576 runs outside/],
        [(img) => img.writeUInt32LE(0x7, metaAt(img) + 24), /section 0 has unknown type 0x7/],
      ];
      for (const [spoil, msg] of cases) {
        const img = good();
        spoil(img);
        expect(() => ovmfInfo(img)).toThrow(msg);
      }
      const far = buildSyntheticOvmf({ pages: 2, extraEntries: [{ guid: OVMF_GUIDS.sevMetadata, data: Buffer.from([0, 0, 1, 0]) }] });
      expect(() => ovmfInfo(far)).toThrow(/points outside/);
    });

    it("rejects truncated u32 entries", () => {
      const img = buildSyntheticOvmf({ pages: 1, extraEntries: [{ guid: OVMF_GUIDS.sevEsResetBlock, data: Buffer.from([1, 2]) }] });
      expect(() => ovmfInfo(img)).toThrow(/SEV_ES_RESET_BLOCK is 2 bytes/);
    });
  });
});
