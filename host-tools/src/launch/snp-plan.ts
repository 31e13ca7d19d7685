// QEMU command lines for `--tee snp`: SEV-SNP guests booted from OVMF with measured direct boot
// (QEMU ≥ 9.1), and VMPL-partitioned guests booted from an IGVM file holding an SVSM (QEMU ≥ 10.1)
// in the two arrangements of the seed design: Type 2 (the sandbox nested in the firewall's TEE,
// one VM whose SVSM keeps the sandbox at a lower VMPL) and Type 3 (two SNP VMs joined by vsock).
// Pure functions of plain data, pinned by golden files; the launcher runs what they return after
// checkQemuSupports() accepts the local QEMU. The ID block / ID auth follow the SNP ABI
// (pub. 56860, SNP_LAUNCH_FINISH) so the PSP itself refuses a launch whose digest differs.
import { execFile } from "node:child_process";
import { createHash, sign, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { AirlockError } from "../../../proto/src/errors.ts";
import { snpLaunchDigest, type SnpLaunchDigest } from "../measure/index.ts";
import { QEMU_SECCOMP, QEMU_SECCOMP_NIC } from "./nic.ts";

export const QEMU_SNP_BINARY = "qemu-system-x86_64";
export const MIN_QEMU_SNP = "9.1.0";
export const MIN_QEMU_IGVM = "10.1.0";

/** SMT allowed (bit 16) and the must-be-one bit 17; ABI 0.0; no debug, no migration agent. */
export const DEFAULT_SNP_POLICY = 0x30000n;
const POLICY_RESERVED_ONE = 1n << 17n;

/** Signs the ID block so the PSP enforces the expected launch digest at SNP_LAUNCH_FINISH. */
export interface IdKeyInput {
  /** EC P-384 private key. Its SHA-384 public-key digest appears in reports as id_key_digest. */
  privateKey: KeyObject;
  /** The launch digest this launch must produce (from snpLaunchDigest of the same inputs). */
  launchDigest: Buffer;
  /** Optional author key (P-384) that signs the ID key; reports then carry author_key_digest. */
  authorKey?: KeyObject;
  familyId?: Buffer;
  imageId?: Buffer;
  guestSvn?: number;
}

/** A plain description of one SNP guest; the launcher fills it, nothing here touches the host. */
export interface SnpVmSpec {
  name: string;
  memoryMiB: number;
  vcpus: number;
  /** QEMU CPU model; must be the one the launch digest was computed for (it sets the VMSA's RDX). */
  vcpuType: string;
  ovmfPath: string;
  kernelPath: string;
  initrdPath?: string;
  append: string;
  /** 32 bytes the guest cannot change and reports carry (airlock: digest of the room manifest). */
  hostData?: Buffer;
  idKey?: IdKeyInput;
  policy?: bigint | number;
  qmpSocket: string;
  /** Whole option groups appended as given, e.g. [["-chardev", "socket,..."], ["-device", "vhost-user-vsock-pci,..."]]. */
  extraDevices: string[][];
  /** Serial console: QEMU's stdout (default) or none. */
  console?: "stdio" | "none";
  /**
   * The guest has a user netdev whose guestfwd commands QEMU starts (the firewall's NIC): its
   * seccomp filter then allows spawning (nic.ts, QEMU_SECCOMP_NIC).
   */
  spawnsForwarders?: boolean;
}

/** An SNP guest whose firmware (and SVSM) come from an IGVM file instead of -bios. */
export interface IgvmVmSpec extends Omit<SnpVmSpec, "ovmfPath"> {
  igvmPath: string;
}

export interface QemuPlan {
  /** Which VM of the arrangement this command line starts. */
  role: "snp" | "firewall" | "sandbox" | "firewall+sandbox";
  binary: string;
  argv: string[];
  requires: { feature: "SEV-SNP" | "IGVM"; minQemu: string };
  /** VMPL each party runs at, for the verifier's expectations (IGVM plans). */
  vmpls?: Record<string, number>;
  /**
   * What vouches for -kernel/-initrd/-append: the SNP launch digest (OVMF's kernel-hashes page,
   * `airlock measure`), or, under an SVSM, the firmware's measured boot into the SVSM's vTPM
   * (the launch digest then covers the IGVM contents only).
   */
  kernelMeasuredBy: "launch-digest" | "svsm-vtpm";
  /** The ID block and ID auth as passed to QEMU (also in argv, base64), when an ID key was given. */
  idBlock?: Buffer;
  idAuth?: Buffer;
}

// ---------------------------------------------------------------------------------------------
// ID block and ID auth (SNP ABI: ID_BLOCK 96 bytes, ID_AUTH_INFO 4096 bytes, little-endian).

export const ID_BLOCK_SIZE = 0x60;
export const ID_AUTH_SIZE = 0x1000;
const ECDSA_P384_SHA384 = 1;
const CURVE_P384 = 2;
const PUBKEY_SIZE = 0x404;
const SIG_SIZE = 0x200;

export function buildIdBlock(p: { launchDigest: Buffer; familyId?: Buffer; imageId?: Buffer; guestSvn?: number; policy: bigint }): Buffer {
  if (p.launchDigest.length !== 48) throw new AirlockError("LAUNCH", `the ID block needs a 48-byte launch digest, got ${p.launchDigest.length} bytes`);
  for (const [name, v] of [["familyId", p.familyId], ["imageId", p.imageId]] as const) {
    if (v !== undefined && v.length !== 16) throw new AirlockError("LAUNCH", `the ID block's ${name} must be 16 bytes, got ${v.length}`);
  }
  const svn = p.guestSvn ?? 0;
  if (!Number.isInteger(svn) || svn < 0 || svn > 0xffff_ffff) throw new AirlockError("LAUNCH", `guest SVN ${svn} is not a u32`);
  const b = Buffer.alloc(ID_BLOCK_SIZE);
  p.launchDigest.copy(b, 0x00);
  p.familyId?.copy(b, 0x30);
  p.imageId?.copy(b, 0x40);
  b.writeUInt32LE(1, 0x50); // ID block version
  b.writeUInt32LE(svn, 0x54);
  b.writeBigUInt64LE(p.policy, 0x58);
  return b;
}

function p384(key: KeyObject, what: string): void {
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "secp384r1") throw new AirlockError("LAUNCH", `the ${what} must be an EC P-384 key`);
}

/** A P-384 public key in the SNP ABI layout: u32 curve, Qx and Qy little-endian in 72 bytes each. */
export function snpPublicKey(key: KeyObject): Buffer {
  p384(key, "key");
  const jwk = key.export({ format: "jwk" });
  const out = Buffer.alloc(PUBKEY_SIZE);
  out.writeUInt32LE(CURVE_P384, 0);
  Buffer.from(jwk.x!, "base64url").reverse().copy(out, 4);
  Buffer.from(jwk.y!, "base64url").reverse().copy(out, 4 + 72);
  return out;
}

/** SHA-384 of the ABI public key: what reports show as id_key_digest / author_key_digest. */
export function snpKeyDigest(key: KeyObject): Buffer {
  return createHash("sha384").update(snpPublicKey(key)).digest();
}

/** ECDSA P-384/SHA-384 in the ABI layout: r and s little-endian in 72 bytes each, then reserved. */
function snpSign(privateKey: KeyObject, data: Buffer): Buffer {
  const rs = sign("sha384", data, { key: privateKey, dsaEncoding: "ieee-p1363" });
  const out = Buffer.alloc(SIG_SIZE);
  Buffer.from(rs.subarray(0, 48)).reverse().copy(out, 0);
  Buffer.from(rs.subarray(48, 96)).reverse().copy(out, 72);
  return out;
}

export function signIdBlock(idBlock: Buffer, idKey: KeyObject, authorKey?: KeyObject): Buffer {
  p384(idKey, "ID key");
  if (authorKey !== undefined) p384(authorKey, "author key");
  const auth = Buffer.alloc(ID_AUTH_SIZE);
  auth.writeUInt32LE(ECDSA_P384_SHA384, 0x00); // id_key_algo
  auth.writeUInt32LE(authorKey === undefined ? 0 : ECDSA_P384_SHA384, 0x04); // auth_key_algo
  snpSign(idKey, idBlock).copy(auth, 0x40);
  const idPub = snpPublicKey(idKey);
  idPub.copy(auth, 0x240);
  if (authorKey !== undefined) {
    snpSign(authorKey, idPub).copy(auth, 0x680);
    snpPublicKey(authorKey).copy(auth, 0x880);
  }
  return auth;
}

// ---------------------------------------------------------------------------------------------
// Command lines.

function checkPolicy(policy: bigint | number | undefined): bigint {
  const p = BigInt(policy ?? DEFAULT_SNP_POLICY);
  if (p < 0n || p > 0xffff_ffff_ffff_ffffn) throw new AirlockError("LAUNCH", `SNP policy 0x${p.toString(16)} does not fit in 64 bits`);
  if ((p & POLICY_RESERVED_ONE) === 0n) throw new AirlockError("LAUNCH", `SNP policy 0x${p.toString(16)} lacks bit 17, which the PSP requires to be 1`, { hint: "start from 0x30000" });
  return p;
}

function checkSpec(s: Omit<SnpVmSpec, "ovmfPath">): void {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(s.name)) throw new AirlockError("LAUNCH", `VM name ${JSON.stringify(s.name)} must be 1-64 letters, digits, '.', '_' or '-'`);
  if (!Number.isInteger(s.memoryMiB) || s.memoryMiB < 64) throw new AirlockError("LAUNCH", `memory ${s.memoryMiB} MiB is not an integer of at least 64`);
  if (!Number.isInteger(s.vcpus) || s.vcpus < 1 || s.vcpus > 512) throw new AirlockError("LAUNCH", `vCPUs ${s.vcpus} must be an integer from 1 to 512`);
  if (s.hostData !== undefined && s.hostData.length !== 32) throw new AirlockError("LAUNCH", `host data must be 32 bytes, got ${s.hostData.length}`);
  // QEMU splits -object and -machine values on commas; a path with one would change the options.
  for (const [what, v] of [["kernel path", s.kernelPath], ["initrd path", s.initrdPath], ["QMP socket", s.qmpSocket]] as const) {
    if (v !== undefined && v.includes(",")) throw new AirlockError("LAUNCH", `the ${what} ${JSON.stringify(v)} contains a comma, which QEMU option syntax cannot carry here`);
  }
}

/** `-object sev-snp-guest,...` for a spec, plus the ID block/auth when an ID key is given. */
function snpGuestObject(s: Omit<SnpVmSpec, "ovmfPath">, kernelHashes: boolean): { value: string; idBlock?: Buffer; idAuth?: Buffer } {
  const policy = checkPolicy(s.policy);
  const opts = ["sev-snp-guest", "id=sev0", "cbitpos=51", "reduced-phys-bits=1", `policy=0x${policy.toString(16)}`];
  if (kernelHashes) opts.push("kernel-hashes=on");
  if (s.hostData !== undefined) opts.push(`host-data=${s.hostData.toString("base64")}`);
  if (s.idKey === undefined) return { value: opts.join(",") };
  const idBlock = buildIdBlock({ ...s.idKey, policy });
  const idAuth = signIdBlock(idBlock, s.idKey.privateKey, s.idKey.authorKey);
  opts.push(`id-block=${idBlock.toString("base64")}`, `id-auth=${idAuth.toString("base64")}`, `author-key-enabled=${s.idKey.authorKey === undefined ? "off" : "on"}`);
  return { value: opts.join(","), idBlock, idAuth };
}

function commonArgs(s: Omit<SnpVmSpec, "ovmfPath">, machineExtra: string): string[] {
  return [
    "-name", `airlock-${s.name},debug-threads=on`,
    "-nodefaults",
    "-no-user-config",
    "-display", "none",
    // SNP needs KVM; the memfd backend lets vhost-user devices (the vsock fabric) map guest RAM.
    "-machine", `q35,accel=kvm,confidential-guest-support=sev0,memory-backend=ram1${machineExtra}`,
    "-cpu", s.vcpuType,
    "-smp", String(s.vcpus),
    "-m", `${s.memoryMiB}M`,
    "-object", `memory-backend-memfd,id=ram1,size=${s.memoryMiB}M,share=true`,
  ];
}

function tailArgs(s: Omit<SnpVmSpec, "ovmfPath">): string[] {
  return [
    "-kernel", s.kernelPath,
    ...(s.initrdPath === undefined ? [] : ["-initrd", s.initrdPath]),
    "-append", s.append,
    // SNP guests cannot reboot (their state cannot be re-measured).
    "-no-reboot",
    // Paused: the launch is finished and checked before the first `cont`.
    "-S",
    "-qmp", `unix:${s.qmpSocket},server=on,wait=off`,
    "-serial", (s.console ?? "stdio") === "stdio" ? "stdio" : "none",
    "-sandbox", s.spawnsForwarders ? QEMU_SECCOMP_NIC : QEMU_SECCOMP,
    ...s.extraDevices.flatMap(withAccessPlatform),
  ];
}

/**
 * An SNP guest's Linux refuses a virtio device without VIRTIO_F_ACCESS_PLATFORM (its DMA must go
 * through the DMA API, i.e. swiotlb bounce buffers in shared memory), so every vhost-user-vsock
 * and virtio-net device of an SNP plan gets `iommu_platform=on`. There is no vIOMMU: the vsock
 * fabric keeps seeing guest-physical addresses, and the bounce buffers lie in the memfd RAM it maps.
 */
function withAccessPlatform(group: string[]): string[] {
  return group.map((arg, i) =>
    i > 0 && group[i - 1] === "-device" && /^(vhost-user-vsock-pci|virtio-net-pci)(,|$)/.test(arg) && !/(^|,)iommu_platform=/.test(arg) ? `${arg},iommu_platform=on` : arg,
  );
}

/** An SNP guest from OVMF with measured direct boot: the kernel, initrd and command line are in the launch digest. */
export function snpLaunchPlan(spec: SnpVmSpec): QemuPlan {
  checkSpec(spec);
  if (spec.ovmfPath.includes(",")) throw new AirlockError("LAUNCH", `the firmware path ${JSON.stringify(spec.ovmfPath)} contains a comma`);
  const guest = snpGuestObject(spec, true);
  const argv = [...commonArgs(spec, ""), "-object", guest.value, "-bios", spec.ovmfPath, ...tailArgs(spec)];
  return {
    role: "snp",
    binary: QEMU_SNP_BINARY,
    argv,
    requires: { feature: "SEV-SNP", minQemu: MIN_QEMU_SNP },
    kernelMeasuredBy: "launch-digest",
    ...(guest.idBlock && { idBlock: guest.idBlock, idAuth: guest.idAuth }),
  };
}

function igvmPlan(spec: IgvmVmSpec, role: QemuPlan["role"], vmpls: Record<string, number>): QemuPlan {
  checkSpec(spec);
  if (spec.igvmPath.includes(",")) throw new AirlockError("LAUNCH", `the IGVM path ${JSON.stringify(spec.igvmPath)} contains a comma`);
  // The IGVM file carries the firmware and SVSM, so there is no -bios. QEMU finds the
  // kernel-hashes location in a -bios/flash OVMF only, so kernel-hashes stays off: the firmware
  // measures -kernel/-initrd/-append into the SVSM's vTPM instead (kernelMeasuredBy).
  const guest = snpGuestObject(spec, false);
  const argv = [...commonArgs(spec, ",igvm-cfg=igvm0"), "-object", `igvm-cfg,id=igvm0,file=${spec.igvmPath}`, "-object", guest.value, ...tailArgs(spec)];
  return {
    role,
    binary: QEMU_SNP_BINARY,
    argv,
    requires: { feature: "IGVM", minQemu: MIN_QEMU_IGVM },
    vmpls,
    kernelMeasuredBy: "svsm-vtpm",
    ...(guest.idBlock && { idBlock: guest.idBlock, idAuth: guest.idAuth }),
  };
}

/**
 * Type 2: one SNP VM. The IGVM file holds the SVSM (VMPL0), the firewall (VMPL1) and the
 * sandbox's partition (VMPL2); the SVSM keeps the sandbox out of the firewall's memory, and the
 * firewall's reports (requested at VMPL1) cover the whole partitioned TEE.
 */
export function type2LaunchPlan(vm: IgvmVmSpec): QemuPlan[] {
  return [igvmPlan(vm, "firewall+sandbox", { svsm: 0, firewall: 1, sandbox: 2 })];
}

/** Type 3: two SNP VMs, each with its own SVSM; the guest OS runs at VMPL2 under it. */
export function type3LaunchPlan(firewall: IgvmVmSpec, sandbox: IgvmVmSpec): QemuPlan[] {
  if (firewall.name === sandbox.name) throw new AirlockError("LAUNCH", "the firewall and sandbox VMs need different names");
  if (firewall.qmpSocket === sandbox.qmpSocket) throw new AirlockError("LAUNCH", "the firewall and sandbox VMs need different QMP sockets");
  return [igvmPlan(firewall, "firewall", { svsm: 0, firewall: 2 }), igvmPlan(sandbox, "sandbox", { svsm: 0, sandbox: 2 })];
}

/**
 * The launch digest the guest of `snpLaunchPlan(spec)` will have, computed by the same code as
 * `airlock measure` from the same firmware, kernel, initrd, command line and vCPUs. Use it for the
 * ID block (idKey.launchDigest) and as the verifier's expected measurement. `guestFeatures` is the
 * SEV_FEATURES the host's KVM/QEMU give the guest (0x1 unless they enable more). `firmware`: the
 * contents of spec.ovmfPath when the caller has read them already (so one read is checked and measured).
 */
export async function snpPlanMeasurement(spec: SnpVmSpec, guestFeatures: bigint = 0x1n, firmware?: Buffer): Promise<SnpLaunchDigest> {
  let ovmf: Buffer;
  try {
    // The caller may hand over the bytes it already read and checked from spec.ovmfPath.
    ovmf = firmware ?? (await readFile(spec.ovmfPath));
  } catch (err) {
    throw new AirlockError("IMAGE_MISSING", `cannot read the firmware ${spec.ovmfPath}`, { cause: err });
  }
  return snpLaunchDigest({
    ovmf,
    ovmfSource: spec.ovmfPath,
    vcpus: spec.vcpus,
    vcpuType: spec.vcpuType,
    kernel: spec.kernelPath,
    ...(spec.initrdPath !== undefined && { initrd: spec.initrdPath }),
    append: spec.append,
    guestFeatures,
  });
}

// ---------------------------------------------------------------------------------------------
// QEMU version checks.

export type QemuVersion = [number, number, number];

/** Parses "9.1.0", "7.2.22" or QEMU's `--version` banner. */
export function parseQemuVersion(text: string): QemuVersion {
  const m = /(?:version\s+)?(\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  if (!m) throw new AirlockError("TEE_UNSUPPORTED", `cannot read a QEMU version from ${JSON.stringify(text.slice(0, 80))}`);
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

function versionAtLeast(have: QemuVersion, want: QemuVersion): boolean {
  for (let i = 0; i < 3; i++) if (have[i] !== want[i]) return have[i]! > want[i]!;
  return true;
}

/** Refuses, naming the version needed, when the given QEMU cannot run the plan. */
export function checkQemuSupports(plan: QemuPlan, qemuVersion: string): void {
  const have = parseQemuVersion(qemuVersion);
  const want = parseQemuVersion(plan.requires.minQemu);
  if (versionAtLeast(have, want)) return;
  const what = plan.requires.feature === "IGVM" ? "an IGVM/SVSM guest (igvm-cfg)" : "an SEV-SNP guest (sev-snp-guest)";
  throw new AirlockError("TEE_UNSUPPORTED", `QEMU ${have.join(".")} cannot launch ${what}: it needs QEMU ${want[0]}.${want[1]} or later`, {
    hint: `install QEMU ≥ ${want[0]}.${want[1]} on an SEV-SNP host (and a host kernel with SNP support), or use --tee emulated`,
  });
}

/** The local QEMU's version, from `qemu-system-x86_64 --version` (bounded wait). */
export function localQemuVersion(binary = QEMU_SNP_BINARY, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(binary, ["--version"], { timeout: timeoutMs }, (err, stdout) => {
      if (err) return reject(new AirlockError("TEE_UNSUPPORTED", `cannot run ${binary} --version: ${err.message}`, { cause: err }));
      const [major, minor, micro] = parseQemuVersion(stdout);
      resolve(`${major}.${minor}.${micro}`);
    });
  });
}

