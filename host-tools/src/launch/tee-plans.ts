// The QEMU command lines a pair would get under each TEE, for `--print-plan` and for `--tee snp`,
// which is built and checked up to the hardware: the plans run with a QEMU that knows sev-snp-guest
// (snp-qemu.ts), from the firmware the user chose (snp-firmware.ts), and the room pins the launch
// measurements computed from that very firmware. This launcher refuses clearly on a host without
// an SEV-SNP device (prelaunch-checks.ts), naming it.
import path from "node:path";
import { DECLARED_VCPU_TYPE, type PairImages } from "../images/build.ts";
import type { Manifest } from "../../../proto/src/manifest/index.ts";
import { AirlockError } from "../../../proto/src/errors.ts";
import { checkQemuSupports, snpLaunchPlan, snpPlanMeasurement, type QemuPlan, type SnpVmSpec } from "./snp-plan.ts";
import { qemuArgs, QEMU_BINARY } from "./qemu-args.ts";
import type { PairDir } from "./pair-state.ts";
import { roomIdentity, type RoomIdentity } from "./room-digest.ts";
import { findSnpQemu, type SnpQemu } from "./snp-qemu.ts";
import type { SnpFirmware } from "./snp-firmware.ts";
import { checkSevDevice } from "./prelaunch-checks.ts";
import { checkNetworkPlan, hostNicDestinations, nicArgs, type ApiForward } from "./nic.ts";
import { SERVICE_API_PORT } from "../../../proto/src/service.ts";

export type Role = "firewall" | "sandbox";

/**
 * What an SNP guest's kernel command line adds to its image's: `airlock.tee=snp`, which the
 * guests' programs read (proto's teeOf) to get reports from configfs-tsm instead of the emulated
 * PSP. It is part of -append, so it is measured (kernel hashes) like the rest; the images
 * themselves stay the same bit for bit under every TEE.
 */
export const SNP_CMDLINE_ARG = "airlock.tee=snp";
export const snpCmdline = (imageCmdline: string): string => `${imageCmdline.trim()} ${SNP_CMDLINE_ARG}`;

function vsockDevice(dir: PairDir, role: Role): string[][] {
  return [["-chardev", `socket,id=vsock0,path=${dir.vhostSocket(role)}`], ["-device", "vhost-user-vsock-pci,chardev=vsock0,id=vsock0"]];
}

/** The firewall's NIC destinations (nic.ts): the room's egress endpoints and governance; the sandbox has none. */
const roleNic = (manifest: Manifest, role: Role) => (role === "firewall" ? hostNicDestinations(manifest) : []);
/**
 * A service room's API forward in the plan: the host's 127.0.0.1 and the API's own port stand for
 * what the launch chooses (the pair's claimed port, or --api-port); devices are not measured.
 */
const roleApi = (manifest: Manifest, role: Role): ApiForward | undefined => (role === "firewall" && manifest.workload?.service ? { hostAddress: "127.0.0.1", hostPort: SERVICE_API_PORT } : undefined);

/** One VM of the pair as its SNP plan launches it; `hostData` is the room's digest once it is known. */
function snpSpec(manifest: Manifest, images: PairImages, dir: PairDir, firmware: SnpFirmware, role: Role, hostData?: Buffer): SnpVmSpec {
  return {
    name: `${dir.name}-${role}`,
    memoryMiB: manifest.resources[role].memoryMiB,
    vcpus: manifest.resources[role].vcpus,
    vcpuType: DECLARED_VCPU_TYPE,
    ovmfPath: firmware.path,
    kernelPath: path.join(images[role].dir, "vmlinuz"),
    initrdPath: path.join(images[role].dir, "initrd.img"),
    append: snpCmdline(images[role].info.cmdline),
    ...(hostData && { hostData }),
    qmpSocket: dir.qmpSocket(role),
    // The same NIC as the emulated firewall's, with iommu_platform=on like the vsock device.
    extraDevices: [...vsockDevice(dir, role), ...nicArgs(roleNic(manifest, role), true, roleApi(manifest, role))],
    spawnsForwarders: roleNic(manifest, role).length > 0,
    console: role === "firewall" ? "stdio" : "none",
  };
}

/** `hostData`: the room's digest with its pins (snpRoom), as the emulated launch binds it. */
export function snpPairPlans(manifest: Manifest, images: PairImages, dir: PairDir, hostData: Buffer, firmware: SnpFirmware): Record<Role, QemuPlan> {
  const plan = (role: Role): QemuPlan => {
    const p = snpLaunchPlan(snpSpec(manifest, images, dir, firmware, role, hostData));
    checkNetworkPlan(role, p.argv, roleNic(manifest, role), roleApi(manifest, role));
    return p;
  };
  return { firewall: plan("firewall"), sandbox: plan("sandbox") };
}

/** The launch measurement each VM of the SNP plans will have: the plan's own inputs, the firmware's checked bytes. */
export async function snpPairMeasurements(manifest: Manifest, images: PairImages, dir: PairDir, firmware: SnpFirmware): Promise<Record<Role, Buffer>> {
  const measure = async (role: Role): Promise<Buffer> => (await snpPlanMeasurement(snpSpec(manifest, images, dir, firmware, role), 0x1n, firmware.bytes)).digest;
  return { firewall: await measure("firewall"), sandbox: await measure("sandbox") };
}

export interface SnpRoom {
  /** The room as the SNP launch binds it: its pins are the SNP launch measurements below. */
  room: RoomIdentity;
  plans: Record<Role, QemuPlan>;
  /** The expected launch measurement of each VM, computed from the chosen firmware. */
  measurements: Record<Role, Buffer>;
}

/** The SNP plans of a pair and the room they launch, all from one firmware file. */
export async function snpRoom(manifest: Manifest, dir: PairDir, firmware: SnpFirmware): Promise<SnpRoom> {
  let measurements: Record<Role, Buffer> | undefined;
  const room = await roomIdentity(manifest, async (images) => (measurements = await snpPairMeasurements(manifest, images, dir, firmware)));
  return { room, plans: snpPairPlans(manifest, room.images, dir, room.digest, firmware), measurements: measurements! };
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
      nic: roleNic(manifest, role),
    }),
  ];
  return { firewall: argv("firewall"), sandbox: argv("sandbox") };
}

/**
 * --tee snp on this host: finds a QEMU that can launch the plans (refusing, naming what to
 * install, when there is none), then checks the host's SEV-SNP device and refuses naming it when
 * it is missing. A host that has both still gets a refusal: airlock launches emulated pairs only.
 */
export async function checkSnpHost(plans: Record<Role, QemuPlan>, sevDevice?: string): Promise<never> {
  const qemu: SnpQemu = await findSnpQemu();
  for (const plan of Object.values(plans)) checkQemuSupports(plan, qemu.version);
  checkSevDevice(qemu, sevDevice);
  throw new AirlockError("TEE_UNSUPPORTED", `this host has an SEV-SNP device and QEMU ${qemu.version} (${qemu.binary}) can launch the plans, but airlock does not launch SNP pairs yet`, {
    hint: "`--print-plan` shows the exact command lines and expected measurements; use --tee emulated meanwhile",
  });
}
