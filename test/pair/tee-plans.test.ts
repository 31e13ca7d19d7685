// --tee snp is built and tested up to the hardware: the plan boots the firmware the user chose
// (--firmware), checked to carry SEV metadata, carries the room's digest as host_data, kernel
// hashes on and airlock.tee=snp on the measured command line; the room pins the launch
// measurements computed from that very firmware; and on this host, which has a QEMU that knows
// sev-snp-guest (setup.sh) but no SEV-SNP device, the launch is refused naming the device.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadManifest } from "../../proto/src/manifest/index.ts";
import { OVMF_AMDSEV_SUFFIX, OVMF_X64_SUFFIX } from "../fixtures/index.ts";
import { PairDir } from "../../host-tools/src/launch/pair-state.ts";
import { loadSnpFirmware } from "../../host-tools/src/launch/snp-firmware.ts";
import { findSnpQemu } from "../../host-tools/src/launch/snp-qemu.ts";
import { snpRoom } from "../../host-tools/src/launch/tee-plans.ts";
import { snpLaunchDigest } from "../../host-tools/src/measure/index.ts";
import { airlock, repoRoot, testStateDir } from "../helpers.ts";

const hello = path.join(repoRoot, "examples/hello/room.yaml");
const env = { AIRLOCK_STATE: testStateDir(), AIRLOCK_SNP_OVMF: "" };
const haveSnpQemu = await findSnpQemu().then(
  () => true,
  () => false,
);

async function withState<T>(fn: () => Promise<T>): Promise<T> {
  const saved = process.env.AIRLOCK_STATE;
  process.env.AIRLOCK_STATE = env.AIRLOCK_STATE;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env.AIRLOCK_STATE;
    else process.env.AIRLOCK_STATE = saved;
  }
}

describe("TEE launch plans from the CLI", () => {
  it("prints SNP command lines bound to the room and measured from the chosen firmware", async () => {
    const plan = await airlock(["up", hello, "--tee", "snp", "--firmware", OVMF_AMDSEV_SUFFIX, "--print-plan"], env);
    expect(plan.code, plan.stderr).toBe(0);
    // host_data is the room's digest with its pins: the SNP launch measurements of both images, the broker.
    const manifest = loadManifest(hello);
    const snp = await withState(() => snpRoom(manifest, new PairDir(manifest.name), loadSnpFirmware(OVMF_AMDSEV_SUFFIX)));
    const hostData = snp.room.digest.toString("base64");
    expect(plan.stdout).toMatch(new RegExp(`sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30000,kernel-hashes=on,host-data=${hostData.replace(/[+/]/g, "\\$&")}`));
    expect(plan.stdout).toContain(`-bios ${OVMF_AMDSEV_SUFFIX}`);
    expect(plan.stdout).toContain("vhost-user-vsock-pci");
    expect(plan.stdout).not.toMatch(/-netdev|virtio-net/);
    for (const role of ["firewall", "sandbox"] as const) {
      // The measured command line tells the guest's programs to ask configfs-tsm for reports.
      const image = snp.room.images[role];
      const append = `${image.info.cmdline.trim()} airlock.tee=snp`;
      expect(plan.stdout).toContain(`-append '${append}'`);
      // The expected measurement, recomputed here from the firmware file, the image and that command line.
      const { digest } = await snpLaunchDigest({ ovmf: loadSnpFirmware(OVMF_AMDSEV_SUFFIX).bytes, vcpus: manifest.resources[role].vcpus, vcpuType: "EPYC-v4", kernel: path.join(image.dir, "vmlinuz"), initrd: path.join(image.dir, "initrd.img"), append });
      expect(plan.stdout).toContain(`# ${role} (SNP, needs QEMU ≥ 9.1.0), expected launch measurement ${digest.toString("hex")}`);
      expect(snp.room.pins[role]).toBe(digest.toString("hex"));
    }
  });

  it("refuses --tee snp on this host naming the missing SEV-SNP device, not the QEMU version", async () => {
    const run = await airlock(["run", hello, "--out", "/nonexistent", "--tee", "snp", "--firmware", OVMF_AMDSEV_SUFFIX], env);
    expect(run.code).toBe(2);
    expect(run.stderr).not.toMatch(/QEMU 7\.2/);
    if (haveSnpQemu) expect(run.stderr).toMatch(/this host has no SEV-SNP device: \/dev\/sev does not exist, so QEMU \d+\.\d+\.\d+ \(.*\) cannot start these SEV-SNP guests \[TEE_UNSUPPORTED\]/);
    else expect(run.stderr).toMatch(/no QEMU here can launch an SEV-SNP guest .* \[TEE_UNSUPPORTED\]\n {2}hint: run host-tools\/scripts\/setup\.sh/);
    const up = await airlock(["up", hello, "--tee", "snp", "--firmware", OVMF_AMDSEV_SUFFIX], env);
    expect(up.code).toBe(2);
    expect(up.stderr).toContain(haveSnpQemu ? "/dev/sev does not exist" : "no QEMU here can launch an SEV-SNP guest");
  });

  it("takes the firmware only from the user, and only SNP firmware", async () => {
    const none = await airlock(["up", hello, "--tee", "snp", "--print-plan"], env);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--tee snp needs the firmware to boot and measure: pass --firmware PATH or set AIRLOCK_SNP_OVMF \[USAGE\]/);
    const fromEnv = await airlock(["up", hello, "--tee", "snp", "--print-plan"], { ...env, AIRLOCK_SNP_OVMF: OVMF_AMDSEV_SUFFIX });
    expect(fromEnv.code, fromEnv.stderr).toBe(0);
    expect(fromEnv.stdout).toContain(`# firmware ${OVMF_AMDSEV_SUFFIX}`);

    const noKernelHashes = await airlock(["up", hello, "--tee", "snp", "--firmware", OVMF_X64_SUFFIX, "--print-plan"], env);
    expect(noKernelHashes.code).toBe(2);
    expect(noKernelHashes.stderr).toMatch(/has no SNP_KERNEL_HASHES section .* \[MEASURE\]/);
    const plain = path.join(env.AIRLOCK_STATE, "plain.fd");
    writeFileSync(plain, Buffer.alloc(8192, 0x90));
    const noSev = await airlock(["up", hello, "--tee", "snp", "--firmware", plain, "--print-plan"], env);
    expect(noSev.code).toBe(2);
    expect(noSev.stderr).toMatch(/the firmware carries no SEV metadata .* \[MEASURE\]/);
    const missing = await airlock(["up", hello, "--tee", "snp", "--firmware", "/nonexistent/AMDSEV.fd"], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/the SNP firmware \/nonexistent\/AMDSEV\.fd does not exist \[FILE_UNREADABLE\]/);
    const emulated = await airlock(["up", hello, "--firmware", OVMF_AMDSEV_SUFFIX, "--print-plan"], env);
    expect(emulated.code).toBe(2);
    expect(emulated.stderr).toMatch(/--firmware is for --tee snp only .*\[USAGE\]/);
  });

  it("prints the emulated command lines, paused and without a NIC", async () => {
    const r = await airlock(["up", hello, "--print-plan", "--accel", "tcg"], env);
    expect(r.code, r.stderr).toBe(0);
    const sandbox = r.stdout.split("# sandbox (emulated TEE)\n")[1]!;
    expect(sandbox).toMatch(/-nodefaults .* -S .* -serial none/);
    expect(sandbox).not.toMatch(/-netdev|-nic|virtio-net/);
  });
});
