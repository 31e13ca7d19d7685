// Choosing the QEMU and the firmware of an --tee snp launch: a QEMU too old or absent is refused
// naming what to install; a firmware is taken only from the user and only with SEV metadata that
// can measure the kernel. (test/pair/snp-qemu.test.ts starts the plans with the chosen QEMU.)
import { writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { AirlockError } from "../../../proto/src/errors.ts";
import { OVMF_AMDSEV_SUFFIX, OVMF_X64_SUFFIX } from "../../../test/fixtures/index.ts";
import { scratchDir } from "../../../test/scratch.ts";
import { chosenSnpFirmware, loadSnpFirmware } from "./snp-firmware.ts";
import { findSnpQemu } from "./snp-qemu.ts";

const codeOf = async (p: Promise<unknown> | (() => unknown)): Promise<AirlockError> => {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    expect(err).toBeInstanceOf(AirlockError);
    return err as AirlockError;
  }
  throw new Error("expected a refusal");
};

describe("the QEMU for --tee snp", () => {
  it("takes AIRLOCK_SNP_QEMU at its word and refuses one too old or absent, naming what to install", async () => {
    const old = await codeOf(findSnpQemu({ AIRLOCK_SNP_QEMU: "qemu-system-x86_64" }));
    expect(old.code).toBe("TEE_UNSUPPORTED");
    expect(old.message).toMatch(/AIRLOCK_SNP_QEMU=qemu-system-x86_64 is QEMU 7\.2\.\d+, which cannot launch an SEV-SNP guest \(sev-snp-guest\): it needs QEMU 9\.1\.0 or later/);
    expect(old.hint).toMatch(/host-tools\/scripts\/setup\.sh .* \/opt\/airlock\/qemu-10/);
    const absent = await codeOf(findSnpQemu({ AIRLOCK_SNP_QEMU: "/nonexistent/qemu-system-x86_64" }));
    expect(absent.code).toBe("TEE_UNSUPPORTED");
    expect(absent.message).toContain("AIRLOCK_SNP_QEMU=/nonexistent/qemu-system-x86_64 does not run");
  });
});

describe("the firmware for --tee snp", () => {
  it("comes from --firmware, else AIRLOCK_SNP_OVMF, never a default", () => {
    expect(chosenSnpFirmware("/a.fd", { AIRLOCK_SNP_OVMF: "/b.fd" })).toBe("/a.fd");
    expect(chosenSnpFirmware(undefined, { AIRLOCK_SNP_OVMF: "/b.fd" })).toBe("/b.fd");
    expect(chosenSnpFirmware(undefined, {})).toBeUndefined();
    expect(chosenSnpFirmware("", { AIRLOCK_SNP_OVMF: "" })).toBeUndefined();
  });

  it("accepts AmdSev firmware, with the digest of the bytes it read", () => {
    const fw = loadSnpFirmware(OVMF_AMDSEV_SUFFIX);
    expect(fw.path).toBe(OVMF_AMDSEV_SUFFIX);
    expect(fw.sha256.startsWith("8f765dfa")).toBe(true);
    expect(fw.info.hasKernelHashesSection).toBe(true);
  });

  it("refuses firmware that cannot launch or measure an SNP guest with -kernel", async () => {
    const dir = scratchDir("airlock-fw-");
    const noKernelHashes = await codeOf(() => loadSnpFirmware(OVMF_X64_SUFFIX));
    expect([noKernelHashes.code, noKernelHashes.message]).toEqual(["MEASURE", expect.stringContaining("no SNP_KERNEL_HASHES section")]);
    writeFileSync(path.join(dir, "plain.fd"), Buffer.alloc(8192, 0x90));
    const noSev = await codeOf(() => loadSnpFirmware(path.join(dir, "plain.fd")));
    expect([noSev.code, noSev.message]).toEqual(["MEASURE", expect.stringContaining("carries no SEV metadata")]);
    writeFileSync(path.join(dir, "odd.fd"), Buffer.alloc(1000));
    expect((await codeOf(() => loadSnpFirmware(path.join(dir, "odd.fd")))).code).toBe("MEASURE");
    const missing = await codeOf(() => loadSnpFirmware(path.join(dir, "none.fd")));
    expect([missing.code, missing.message]).toEqual(["FILE_UNREADABLE", expect.stringContaining("does not exist")]);
    expect((await codeOf(() => loadSnpFirmware(dir))).code).toBe("FILE_UNREADABLE");
  });
});
