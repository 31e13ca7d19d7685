// The QEMU command lines a pair would get under each TEE, for `--print-plan` and for `--tee snp`,
// which is built and checked up to the command line: this launcher runs SNP guests only on a host
// whose QEMU can (≥ 9.1, an SEV-SNP kernel), and refuses clearly everywhere else.
import path from "node:path";
import { DECLARED_VCPU_TYPE, type PairImages } from "../images/build.ts";
import type { Manifest } from "../../../proto/src/manifest/index.ts";
import { AirlockError } from "../../../proto/src/errors.ts";
import { checkQemuSupports, localQemuVersion, snpLaunchPlan, type QemuPlan } from "./snp-plan.ts";
import { qemuArgs, QEMU_BINARY } from "./qemu-args.ts";
import type { PairDir } from "./pair-state.ts";

/** AmdSev OVMF (with the SNP kernel-hashes section) for real SNP launches. */
export const SNP_OVMF_ENV = "AIRLOCK_SNP_OVMF";

export type Role = "firewall" | "sandbox";


function vsockDevice(dir: PairDir, role: Role): string[][] {
  return [["-chardev", `socket,id=vsock0,path=${dir.vhostSocket(role)}`], ["-device", "vhost-user-vsock-pci,chardev=vsock0,id=vsock0"]];
}

/** `hostData`: the room's digest with its pins (room-digest.ts), as the emulated launch binds it. */
export function snpPairPlans(manifest: Manifest, images: PairImages, dir: PairDir, hostData: Buffer): Record<Role, QemuPlan> {
  const ovmf = process.env[SNP_OVMF_ENV] ?? "/usr/share/ovmf/AMDSEV.fd";
  const plan = (role: Role): QemuPlan =>
    snpLaunchPlan({
      name: `${dir.name}-${role}`,
      memoryMiB: manifest.resources[role].memoryMiB,
      vcpus: manifest.resources[role].vcpus,
      vcpuType: DECLARED_VCPU_TYPE,
      ovmfPath: ovmf,
      kernelPath: path.join(images[role].dir, "vmlinuz"),
      initrdPath: path.join(images[role].dir, "initrd.img"),
      append: images[role].info.cmdline,
      hostData,
      qmpSocket: dir.qmpSocket(role),
      extraDevices: vsockDevice(dir, role),
      console: role === "firewall" ? "stdio" : "none",
    });
  return { firewall: plan("firewall"), sandbox: plan("sandbox") };
}

export function emulatedPairArgv(manifest: Manifest, images: PairImages, dir: PairDir, accel: "kvm" | "tcg"): Record<Role, string[]> {
  const argv = (role: Role): string[] => [
    QEMU_BINARY,
    ...qemuArgs({
      pair: dir.name,
      role,
      imageDir: images[role].dir,
      cmdline: images[role].info.cmdline,
      memoryMiB: manifest.resources[role].memoryMiB,
      vcpus: manifest.resources[role].vcpus,
      accel,
      qmpSocket: dir.qmpSocket(role),
      inspectSocket: dir.inspectSocket(role),
      console: role === "firewall" ? "stdio" : "none",
      vsockSocket: dir.vhostSocket(role),
    }),
  ];
  return { firewall: argv("firewall"), sandbox: argv("sandbox") };
}

/** --tee snp: refuses, naming the QEMU version needed, when the local QEMU cannot launch the plans. */
export async function checkSnpHost(plans: Record<Role, QemuPlan>): Promise<void> {
  const version = await localQemuVersion();
  for (const plan of Object.values(plans)) checkQemuSupports(plan, version);
  throw new AirlockError("TEE_UNSUPPORTED", `QEMU ${version} could launch SNP guests, but this host has no SEV-SNP support airlock can use (/dev/sev missing)`, {
    hint: "run on an SEV-SNP host; `--print-plan` shows the exact command lines",
  });
}
