// QEMU command lines for airlock's emulated-TEE guests (the --tee snp plans live in snp-plan.ts).
// A pure function of a VM's description, so a golden test pins every option and a reviewer can
// read exactly what a guest gets: -nodefaults (no NIC, no VGA, no USB, no default serial),
// no disks, guest RAM in a shared memfd (the vhost-user vsock backend maps it), paused at start.
// The firewall gets a NIC only when its room has destinations (nic.ts); the sandbox never does.
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import { nicArgs, QEMU_SECCOMP, QEMU_SECCOMP_NIC, type ApiForward, type NicDestination } from "./nic.ts";

export type VmRole = "firewall" | "sandbox" | "minimal";
export type Accel = "kvm" | "tcg";

export interface VmSpec {
  /** Pair name; shows in `ps` as the QEMU process name. */
  pair: string;
  role: VmRole;
  /** Folder holding vmlinuz, initrd.img and cmdline. */
  imageDir: string;
  cmdline: string;
  memoryMiB: number;
  vcpus: number;
  accel: Accel;
  qmpSocket: string;
  /** A second QMP socket for people and tools to inspect the running guest (the launcher holds the first). */
  inspectSocket?: string;
  /** "stdio": the console goes to QEMU's stdout (the launcher captures it); "none": no serial port at all. */
  console: "stdio" | "none";
  /** vhost-user-vsock backend socket; the guest CID comes from the backend (GET_CONFIG). */
  vsockSocket?: string;
  /** The firewall's NIC destinations (nic.ts); absent or empty: no NIC. Never set for the sandbox. */
  nic?: NicDestination[];
  /** A service room's API: a host port forwarded to the firewall's (nic.ts). Never set for the sandbox. */
  apiForward?: ApiForward;
}

export const QEMU_BINARY = "qemu-system-x86_64";

export function qemuArgs(vm: VmSpec): string[] {
  if (vm.role !== "firewall" && hasNic(vm)) throw new AirlockError("LAUNCH", `only the firewall VM gets a NIC, not the ${vm.role} VM`);
  const args = [
    "-name", `airlock-${vm.pair}-${vm.role},debug-threads=on`,
    "-nodefaults",
    "-no-user-config",
    "-display", "none",
    "-machine", `q35,accel=${vm.accel},memory-backend=ram0`,
    "-cpu", vm.accel === "kvm" ? "host" : "max",
    "-smp", String(vm.vcpus),
    "-m", `${vm.memoryMiB}M`,
    "-object", `memory-backend-memfd,id=ram0,size=${vm.memoryMiB}M,share=on`,
    "-kernel", path.join(vm.imageDir, "vmlinuz"),
    "-initrd", path.join(vm.imageDir, "initrd.img"),
    "-append", vm.cmdline,
    // A guest that reboots or panics ends instead (SNP guests cannot reboot either).
    "-no-reboot",
    // Start paused: the launcher checks over QMP what the guest got before it runs.
    "-S",
    "-qmp", `unix:${vm.qmpSocket},server=on,wait=off`,
    ...(vm.inspectSocket ? ["-qmp", `unix:${vm.inspectSocket},server=on,wait=off`] : []),
    // QEMU's own seccomp filter: no spawning, no privilege changes (a NIC's forwarders need
    // spawning: nic.ts says why).
    "-sandbox", (vm.nic?.length ?? 0) > 0 ? QEMU_SECCOMP_NIC : QEMU_SECCOMP,
  ];
  args.push("-serial", vm.console === "stdio" ? "stdio" : "none");
  if (vm.vsockSocket) {
    args.push("-chardev", `socket,id=vsock0,path=${vm.vsockSocket}`, "-device", "vhost-user-vsock-pci,chardev=vsock0,id=vsock0");
  }
  args.push(...nicArgs(vm.nic, false, vm.apiForward).flat());
  return args;
}

export const hasNic = (vm: Pick<VmSpec, "nic" | "apiForward">): boolean => (vm.nic?.length ?? 0) > 0 || vm.apiForward !== undefined;
