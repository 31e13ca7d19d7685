import { describe, expect, it } from "vitest";
import { declaredFirmware } from "./declared-firmware.ts";
import { ovmfInfo } from "./ovmf.ts";
import { snpLaunchDigest } from "./index.ts";

describe("declared firmware for emulated launches", () => {
  it("parses as AmdSev-like firmware with a kernel-hashes section", () => {
    const info = ovmfInfo(declaredFirmware());
    expect(info.size).toBe(4096);
    expect(info.hasSevMetadata).toBe(true);
    expect(info.hasKernelHashesSection).toBe(true);
    expect(info.sections.map((s) => s.typeName)).toEqual(["SNP_SEC_MEM", "SNP_SEC_MEM", "SNP_SECRETS", "CPUID", "SNP_KERNEL_HASHES"]);
    expect(info.apResetEip).toBe(0xffffe030);
  });

  it("is always the same bytes, and its digest covers kernel, initrd and command line", async () => {
    expect(declaredFirmware().equals(declaredFirmware())).toBe(true);
    const base = { ovmf: declaredFirmware(), vcpus: 1, vcpuType: "EPYC-v4", kernel: Buffer.from("kernel"), initrd: Buffer.from("initrd"), append: "console=ttyS0" };
    const d = (await snpLaunchDigest(base)).digest;
    expect(d).toHaveLength(48);
    for (const change of [{ kernel: Buffer.from("kernel2") }, { initrd: Buffer.from("initrd2") }, { append: "console=ttyS1" }, { vcpus: 2 }]) {
      expect((await snpLaunchDigest({ ...base, ...change })).digest.equals(d)).toBe(false);
    }
  });
});
