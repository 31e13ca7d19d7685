// Known-answer vectors from the reference implementations' own test suites (virtee/sev
// tests/measurement.rs, mirroring sev-snp-measure tests/test_guest.py), which use the same
// ovmf_*_suffix.bin fixtures as test/fixtures/ovmf/. Kernel and initrd are /dev/null there.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { AirlockError } from "../../../proto/src/errors.ts";
import { OVMF_AMDSEV_SUFFIX, OVMF_X64_SUFFIX } from "../../../test/fixtures/index.ts";
import { hashKernelInputs, snpLaunchDigest, snpOvmfHash, type SnpLaunchInputs } from "./index.ts";

const amdSev = readFileSync(OVMF_AMDSEV_SUFFIX);
const ovmfX64 = readFileSync(OVMF_X64_SUFFIX);
const AMDSEV_OVMF_HASH = "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74";

const base = { vcpus: 1, vcpuType: "EPYC-v4", kernel: "/dev/null", initrd: "/dev/null" };
const vectors: [string, SnpLaunchInputs, string][] = [
  ["ovmf hash seed, SNP-only features", { ...base, ovmf: amdSev, guestFeatures: 0x1, ovmfHash: Buffer.from(AMDSEV_OVMF_HASH, "hex") }, "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5"],
  ["ovmf hash seed, features 0x21", { ...base, ovmf: amdSev, guestFeatures: 0x21, ovmfHash: Buffer.from(AMDSEV_OVMF_HASH, "hex") }, "329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198"],
  ["kernel + cmdline, SNP-only", { ...base, ovmf: amdSev, guestFeatures: 0x1, append: "console=ttyS0 loglevel=7" }, "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa"],
  ["kernel + cmdline, features 0x21", { ...base, ovmf: amdSev, guestFeatures: 0x21, append: "console=ttyS0 loglevel=7" }, "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"],
  ["EC2, SNP-only", { ...base, ovmf: amdSev, guestFeatures: 0x1, vmmType: "ec2" }, "7d3756157c805bf6adf617064c8552e8c1688fa1c8756f11cbf56ba5d25c9270fb69c0505c1cbe1c5c66c0e34c6ed3be"],
  ["EC2, features 0x21", { ...base, ovmf: amdSev, guestFeatures: 0x21, vmmType: "ec2" }, "6ae80856486b1396af8c82a40351d6ed76a20c785e9c7fa4ffa27c22d5d6313b4b3b458cd3c9968e6f89fb5d8450d7a6"],
  ["no kernel, SNP-only", { ovmf: amdSev, vcpus: 1, vcpuType: "EPYC-v4", guestFeatures: 0x1 }, "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"],
  ["no kernel, features 0x21", { ovmf: amdSev, vcpus: 1, vcpuType: "EPYC-v4", guestFeatures: 0x21 }, "e1e1ca029dd7973ab9513295be68198472dcd4fc834bd9af9b63f6e8a1674dbf281a9278a4a2ebe0eed9f22adbcd0e2b"],
  ["4 vCPUs, SNP-only", { ...base, ovmf: amdSev, vcpus: 4, guestFeatures: 0x1 }, "5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5"],
  ["4 vCPUs, features 0x21", { ...base, ovmf: amdSev, vcpus: 4, guestFeatures: 0x21 }, "4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78eafe7b422907be0b4698e2414a631942"],
  ["OvmfX64 without kernel, SNP-only", { ovmf: ovmfX64, vcpus: 1, vcpuType: "EPYC-v4", guestFeatures: 0x1 }, "da0296de8193586a5512078dcd719eccecbd87e2b825ad4148c44f665dc87df21e5b49e21523a9ad993afdb6a30b4005"],
  ["OvmfX64 without kernel, features 0x21", { ovmf: ovmfX64, vcpus: 1, vcpuType: "EPYC-v4", guestFeatures: 0x21 }, "28797ae0afaba4005a81e629acebfb59e6687949d6be44007cd5506823b0dd66f146aaae26ff291eed7b493d8a64c385"],
];

describe("snpLaunchDigest known answers (sev-snp-measure test vectors)", () => {
  it("digests the AmdSev firmware pages as the reference does", () => {
    expect(snpOvmfHash(amdSev).toString("hex")).toBe(AMDSEV_OVMF_HASH);
  });

  for (const [name, inputs, want] of vectors) {
    it(name, async () => {
      expect((await snpLaunchDigest(inputs)).digest.toString("hex")).toBe(want);
    });
  }

  it("defaults to guest features 0x1 and accepts the signature instead of the type", async () => {
    const { digest } = await snpLaunchDigest({ ovmf: amdSev, vcpus: 4, vcpuSig: 0x800f12, kernel: Buffer.alloc(0), initrd: Buffer.alloc(0) });
    expect(digest.toString("hex")).toBe("5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5");
  });

  it("gives the same digest from precomputed kernel hashes", async () => {
    const kernelHashes = await hashKernelInputs({ kernel: "/dev/null", initrd: "/dev/null", append: "console=ttyS0 loglevel=7" });
    const { digest } = await snpLaunchDigest({ ovmf: amdSev, vcpus: 1, vcpuType: "EPYC-v4", kernelHashes, append: "console=ttyS0 loglevel=7" });
    expect(digest.toString("hex")).toBe("6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa");
  });

  it("explains every component and ends on the digest", async () => {
    const { digest, components } = await snpLaunchDigest({ ...base, ovmf: amdSev, vcpus: 3, append: "x" });
    expect(components.map((c) => c.component)).toEqual([
      "firmware",
      "kernel",
      "initrd",
      "cmdline",
      "metadata[0] SNP_SEC_MEM",
      "metadata[1] SNP_SEC_MEM",
      "metadata[2] SNP_SECRETS",
      "metadata[3] CPUID",
      "metadata[4] SVSM_CAA",
      "metadata[5] SNP_KERNEL_HASHES",
      "metadata[6] SNP_SEC_MEM",
      "vmsa[0] BSP",
      "vmsa[1..2] AP",
    ]);
    expect(components.at(-1)!.digestAfter).toBe(digest.toString("hex"));
    expect(components.find((c) => c.component === "kernel")!.hash).toBe("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  });

  it("changes when any input changes", async () => {
    const d = async (over: Partial<SnpLaunchInputs>): Promise<string> => (await snpLaunchDigest({ ...base, ovmf: amdSev, append: "a", ...over })).digest.toString("hex");
    const ref = await d({});
    const variants = await Promise.all([d({ append: "b" }), d({ initrd: Buffer.from("x") }), d({ kernel: Buffer.from("x") }), d({ vcpus: 2 }), d({ vcpuType: "EPYC-Milan" }), d({ guestFeatures: 0x21 }), d({ vmmType: "ec2" })]);
    expect(new Set([ref, ...variants]).size).toBe(variants.length + 1);
  });
});

describe("snpLaunchDigest errors", () => {
  const code = async (inputs: SnpLaunchInputs): Promise<string> => {
    try {
      await snpLaunchDigest(inputs);
    } catch (err) {
      expect(err).toBeInstanceOf(AirlockError);
      return `${(err as AirlockError).code}: ${(err as AirlockError).message}`;
    }
    throw new Error("expected a failure");
  };

  it("refuses a kernel with firmware that has no kernel-hashes section", async () => {
    expect(await code({ ...base, ovmf: ovmfX64 })).toMatch(/^MEASURE: .*no SNP_KERNEL_HASHES section/);
  });

  it("refuses firmware without SEV metadata", async () => {
    expect(await code({ ovmf: Buffer.alloc(8192), vcpus: 1, vcpuType: "EPYC-v4" })).toMatch(/^MEASURE: .*no SEV metadata/);
  });

  it("refuses an unknown vCPU type and a missing one", async () => {
    expect(await code({ ovmf: amdSev, vcpus: 1, vcpuType: "EPYC-v99" })).toMatch(/^MEASURE: unknown vCPU type "EPYC-v99"/);
    expect(await code({ ovmf: amdSev, vcpus: 1 })).toMatch(/^MEASURE: the vCPU type is missing/);
  });

  it("refuses nonsense vCPU counts and an initrd without a kernel", async () => {
    expect(await code({ ovmf: amdSev, vcpus: 0, vcpuType: "EPYC" })).toMatch(/^MEASURE: the number of vCPUs/);
    expect(await code({ ovmf: amdSev, vcpus: 1.5, vcpuType: "EPYC" })).toMatch(/^MEASURE: the number of vCPUs/);
    expect(await code({ ovmf: amdSev, vcpus: 1, vcpuType: "EPYC", initrd: "/dev/null" })).toMatch(/^MEASURE: an initrd or a command line was given without a kernel/);
  });

  it("names a kernel file it cannot read", async () => {
    expect(await code({ ...base, ovmf: amdSev, kernel: "/nonexistent/vmlinuz" })).toMatch(/^MEASURE: cannot read the kernel \/nonexistent\/vmlinuz \(ENOENT\)/);
  });
});
