// Before a paused guest runs, the launcher asks QEMU what the guest really got and refuses to
// resume on any surprise: the sandbox must have no network device, no shared folder (9p,
// virtio-fs), no USB, no disk, and only the devices on its allowlist; the firewall has no network
// device either, or, when its room names destinations, exactly one virtio-net device on one
// restricted user netdev (QEMU's `info network`). Before an SEV-SNP guest is
// even started, the host must have the SEV firmware device QEMU's sev-snp-guest opens.
import { existsSync } from "node:fs";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { QmpClient } from "../qmp/client.ts";
import { hasNic, type VmSpec } from "./qemu-args.ts";

interface PciDevice {
  bus: number;
  slot: number;
  function: number;
  class_info: { class: number; desc?: string };
  id: { vendor: number; device: number };
  qdev_id?: string;
  pci_bridge?: { devices?: PciDevice[] };
}

export interface GuestInventory {
  status: string;
  pci: PciDevice[];
  block: unknown[];
  chardevs: { label: string; filename: string }[];
  memdevs: { id?: string; size: number; share: boolean }[];
  cpus: unknown[];
  /** QEMU's `info network` (HMP through QMP): every NIC and network backend, one per line. */
  network: string;
}

const INTEL = 0x8086;
const VIRTIO = 0x1af4;
/** The q35 chipset's fixed devices: host bridge, ICH9 LPC/ISA bridge, its AHCI (no drives) and SMBus. */
const Q35_BASE = [
  [INTEL, 0x29c0],
  [INTEL, 0x2918],
  [INTEL, 0x2922],
  [INTEL, 0x2930],
];
const VIRTIO_VSOCK = [VIRTIO, 0x1053];
/** virtio-net, modern only (disable-legacy=on): the firewall's NIC. */
const VIRTIO_NET = [VIRTIO, 0x1041];

function flatten(devices: PciDevice[]): PciDevice[] {
  return devices.flatMap((d) => [d, ...flatten(d.pci_bridge?.devices ?? [])]);
}

const hex = (n: number): string => `0x${n.toString(16).padStart(4, "0")}`;

/** Returns the problems found; an empty list means the guest got exactly what it should. */
export function inspectInventory(spec: VmSpec, inv: GuestInventory): string[] {
  const problems: string[] = [];
  const role = spec.role;
  if (inv.status !== "prelaunch" && inv.status !== "paused") problems.push(`expected a paused guest, QEMU says ${inv.status}`);

  const allowed = [...Q35_BASE, ...(spec.vsockSocket ? [VIRTIO_VSOCK] : [])];
  const nic = role === "firewall" && hasNic(spec);
  let nics = 0;
  for (const d of flatten(inv.pci)) {
    const where = `PCI ${d.bus}:${d.slot}.${d.function} ${hex(d.id.vendor)}:${hex(d.id.device)} (${d.class_info.desc ?? hex(d.class_info.class)})`;
    const cls = d.class_info.class;
    const isVirtioNet = d.id.vendor === VIRTIO_NET[0] && d.id.device === VIRTIO_NET[1];
    if (nic && isVirtioNet && nics++ === 0) continue;
    if (cls >> 8 === 0x02 || isVirtioNet) problems.push(`${where}: a network device${nic ? " besides the firewall's one virtio-net NIC" : ""}`);
    else if (cls === 0x0c03) problems.push(`${where}: a USB controller`);
    else if (d.id.vendor === VIRTIO && (d.id.device === 0x1009 || d.id.device === 0x1049 || d.id.device === 0x105a)) problems.push(`${where}: a shared folder (9p or virtio-fs)`);
    else if (!allowed.some(([v, dev]) => v === d.id.vendor && dev === d.id.device)) problems.push(`${where}: not on the ${role} VM's device allowlist`);
  }
  if (spec.vsockSocket && !flatten(inv.pci).some((d) => d.id.vendor === VIRTIO && d.id.device === 0x1053)) problems.push("the vsock device is missing");
  if (nic && nics === 0) problems.push("the firewall's NIC (virtio-net) is missing");
  problems.push(...networkProblems(role, nic, inv.network));

  if (inv.block.length > 0) problems.push(`${inv.block.length} block device(s): guests get no disks`);

  const expectedChardevs = new Set(["compat_monitor0", ...(spec.inspectSocket ? ["compat_monitor1"] : []), ...(spec.console === "stdio" ? ["serial0"] : []), ...(spec.vsockSocket ? ["vsock0"] : [])]);
  for (const c of inv.chardevs) if (!expectedChardevs.has(c.label)) problems.push(`unexpected character device ${c.label} (${c.filename})`);
  if (spec.console === "none" && inv.chardevs.some((c) => c.label.startsWith("serial"))) problems.push("the console is attached although it should not be");

  const ram = inv.memdevs.filter((m) => m.id === "ram0");
  if (ram.length !== 1 || inv.memdevs.length !== 1) problems.push(`expected one memory backend ram0, found ${inv.memdevs.map((m) => m.id ?? "?").join(", ") || "none"}`);
  else if (ram[0]!.size !== spec.memoryMiB * 1024 * 1024) problems.push(`guest RAM is ${ram[0]!.size} bytes, expected ${spec.memoryMiB} MiB`);
  else if (spec.vsockSocket && !ram[0]!.share) problems.push("guest RAM is not shared (the vsock backend cannot map it)");

  if (inv.cpus.length !== spec.vcpus) problems.push(`guest has ${inv.cpus.length} vCPUs, expected ${spec.vcpus}`);
  return problems;
}

/**
 * QEMU 7.2 has no QMP query for network backends, so `info network` it is: one line per NIC, each
 * followed by its backend (" \ net0: index=0,type=user,net=10.0.2.0,restrict=on"). The firewall
 * with a NIC must show exactly one virtio-net NIC and one user backend with restrict=on (the
 * guestfwd rules are not listed there; networkPlanProblems checked them in the plan); anyone else
 * must show nothing.
 */
export function networkProblems(role: string, nic: boolean, info: string): string[] {
  const entries = info
    .split(/\r?\n/)
    .map((l) => l.replace(/^[\s\\]+/, "").trim())
    .filter(Boolean);
  if (!nic) return entries.map((e) => `a network ${e.includes("type=nic") ? "device" : "backend"} QEMU reports: ${e}`);
  const device = entries.filter((e) => /^net0: index=0,type=nic,model=virtio-net-pci(,|$)/.test(e));
  const backend = entries.filter((e) => /^net0: index=0,type=user,net=10\.0\.2\.0,restrict=on$/.test(e));
  if (device.length === 1 && backend.length === 1 && entries.length === 2) return [];
  return [`the ${role} VM's network is not one virtio-net NIC on one restricted user netdev; QEMU reports: ${entries.join(" | ") || "nothing"}`];
}

export async function queryInventory(qmp: QmpClient): Promise<GuestInventory> {
  const [status, pciBuses, block, chardevs, memdevs, cpus, network] = await Promise.all([
    qmp.execute<{ status: string }>("query-status"),
    qmp.execute<{ devices: PciDevice[] }[]>("query-pci"),
    qmp.execute<unknown[]>("query-block"),
    qmp.execute<{ label: string; filename: string }[]>("query-chardev"),
    qmp.execute<{ id?: string; size: number; share: boolean }[]>("query-memdev"),
    qmp.execute<unknown[]>("query-cpus-fast"),
    qmp.execute<string>("human-monitor-command", { "command-line": "info network" }),
  ]);
  return { status: status.status, pci: pciBuses.flatMap((b) => b.devices), block, chardevs, memdevs, cpus, network };
}

/** One line per PCI device, for `airlock status`: what a reviewer would check. */
export function describeDevices(inv: GuestInventory): string[] {
  return flatten(inv.pci).map((d) => `${d.bus}:${d.slot}.${d.function} ${hex(d.id.vendor)}:${hex(d.id.device)} ${d.class_info.desc ?? hex(d.class_info.class)}`);
}

/** Queries the paused guest and throws LAUNCH naming every surprise. */
export async function checkGuest(spec: VmSpec, qmp: QmpClient): Promise<GuestInventory> {
  const inv = await queryInventory(qmp);
  const problems = inspectInventory(spec, inv);
  if (problems.length > 0) {
    throw new AirlockError("LAUNCH", `the ${spec.role} VM did not get what it should (refusing to start it):\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
  return inv;
}

/** The SEV firmware device (the `ccp` driver's); QEMU's sev-snp-guest opens it (its sev-device property). */
export const SEV_DEVICE = "/dev/sev";

/**
 * --tee snp: refuses, naming the device, on a host without SEV-SNP. QEMU itself stops earlier
 * there (KVM: "vm-type SEV-SNP not supported by KVM"), which says less about what is missing.
 */
export function checkSevDevice(qemu: { binary: string; version: string }, device = SEV_DEVICE): void {
  if (existsSync(device)) return;
  throw new AirlockError("TEE_UNSUPPORTED", `this host has no SEV-SNP device: ${device} does not exist, so QEMU ${qemu.version} (${qemu.binary}) cannot start these SEV-SNP guests`, {
    hint: "run on an AMD EPYC host with SEV-SNP enabled in its firmware and kernel (kvm_amd sev_snp=1, the ccp driver loaded); `--print-plan` shows the exact command lines",
  });
}
