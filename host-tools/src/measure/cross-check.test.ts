// Randomized cross-check: random firmware layouts (synthetic OVMF images with random SEV metadata,
// kernel-hashes placement and AP reset EIP), random kernels/initrds/command lines, vCPU counts,
// signatures, guest features and VMM types, measured here and by an independent Python
// calculator (testdata/snp_digest_ref.py). The known-answer vectors pin the semantics; this pins
// the arithmetic on inputs the vectors do not reach.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { snpLaunchDigest } from "./index.ts";
import { buildSyntheticOvmf, type SyntheticSection } from "./testdata/synthetic-ovmf.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
const reference = path.join(here, "testdata/snp_digest_ref.py");
const hasPython = spawnSync("python3", ["--version"], { timeout: 10_000 }).status === 0;
const dir = mkdtempSync(path.join(tmpdir(), "airlock-measure-xcheck-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A small seeded PRNG so a failing case can be reproduced from its index.
function prng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}

interface Case {
  ovmf: string;
  kernel?: string;
  initrd?: string;
  append?: string;
  vcpus: number;
  sig: number;
  features: string;
  vmm: "qemu" | "ec2";
}

function makeCase(i: number): Case {
  const r = prng(0x5eed + i * 7919);
  const withKernel = r(3) !== 0;
  const sections: SyntheticSection[] = [];
  const nSections = 1 + r(6);
  for (let k = 0; k < nSections; k++) {
    const type = [1, 2, 3, 4, 1][r(5)]!;
    sections.push({ gpa: (0x800 + r(0x7000)) * 0x1000 + (r(4) === 0 ? r(0x1000) : 0), size: (1 + r(4)) * 0x1000, type });
  }
  if (withKernel || r(2) === 0) sections.splice(r(sections.length + 1), 0, { gpa: 0x810000 + r(64) * 0x1000, size: 0x1000, type: 0x10 });
  const ovmf = path.join(dir, `ovmf-${i}.fd`);
  writeFileSync(ovmf, buildSyntheticOvmf({ pages: 1 + r(5), sections, kernelHashesGpa: 0x810000 + r(4096 - 176), apResetEip: r(2) === 0 ? 0x80b004 : r(0xffffffff), fill: r(256) }));
  const c: Case = {
    ovmf,
    vcpus: 1 + r(8),
    sig: r(0xffffffff),
    features: `0x${(BigInt(r(0x10000)) | (BigInt(r(0xffffffff)) << 32n) | 1n).toString(16)}`,
    vmm: r(3) === 0 ? "ec2" : "qemu",
  };
  if (withKernel) {
    c.kernel = path.join(dir, `kernel-${i}`);
    // Sizes around the 1 MiB streaming chunk exercise chunk boundaries.
    writeFileSync(c.kernel, randomBytes([0, 1, 4095, (1 << 20) + 17][r(4)]!));
    if (r(2) === 0) {
      c.initrd = path.join(dir, `initrd-${i}`);
      writeFileSync(c.initrd, randomBytes(r(3 << 20)));
    }
    if (r(3) !== 0) c.append = ["", "console=ttyS0", "root=/dev/vda ro quiet é ✓", "x".repeat(r(3000))][r(4)]!;
  }
  return c;
}

describe("randomized cross-check against an independent implementation", () => {
  it.skipIf(!hasPython)("agrees on 40 random launches and on Debian's real OVMF builds", async () => {
    const cases = Array.from({ length: 40 }, (_, i) => makeCase(i));
    // Full-size firmware with a real footer table (the ovmf package is part of the setup).
    for (const ovmf of ["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF_CODE.fd"].filter((f) => existsSync(f))) {
      cases.push({ ovmf, vcpus: 3, sig: 0xa10f10, features: "0x21", vmm: "qemu" }, { ovmf, vcpus: 2, sig: 0, features: "0x1", vmm: "ec2" });
    }
    const run = spawnSync("python3", [reference], { input: cases.map((c) => JSON.stringify(c)).join("\n"), encoding: "utf8", timeout: 60_000 });
    expect(run.status, run.stderr).toBe(0);
    const theirs = run.stdout.trim().split("\n");
    expect(theirs).toHaveLength(cases.length);
    for (const [i, c] of cases.entries()) {
      const ours = await snpLaunchDigest({
        ovmf: readFileSync(c.ovmf),
        vcpus: c.vcpus,
        vcpuSig: c.sig,
        guestFeatures: BigInt(c.features),
        vmmType: c.vmm,
        ...(c.kernel !== undefined && { kernel: c.kernel }),
        ...(c.initrd !== undefined && { initrd: c.initrd }),
        ...(c.append !== undefined && { append: c.append }),
      });
      expect(ours.digest.toString("hex"), `case ${i}: ${JSON.stringify(c)}`).toBe(theirs[i]);
    }
  });
});
