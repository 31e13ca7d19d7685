// The SNP launch digest of a QEMU (or EC2) guest booted from OVMF, bit-exact with virtee's
// sev-snp-measure `--mode snp`: (1) the firmware as NORMAL pages ending at 4 GiB, (2) the SEV
// metadata sections in table order, (3) one VMSA per vCPU. Every step is recorded so a reviewer can
// see which component moved the digest.
import { AirlockError } from "../../../proto/src/errors.ts";
import { LaunchDigest, sha384, VMSA_GPA } from "./gctx.ts";
import { hashKernelInputs, kernelHashesPage, type BlobSource, type KernelHashes } from "./kernel-hashes.ts";
import { ovmfInfo, PAGE_SIZE, SECTION_TYPES, type OvmfInfo } from "./ovmf.ts";
import { BSP_EIP, buildVmsa, type VmmType } from "./vmsa.ts";
import { vcpuSigByType } from "./vcpu-types.ts";

/** sev-snp-measure's default: SNPActive only. Linux ≥ 6.6 guests may enable more (e.g. 0x21 DebugSwap). */
export const DEFAULT_GUEST_FEATURES = 0x1n;
/** A sanity bound on vCPUs: far above any QEMU machine, low enough to catch garbage. */
export const MAX_VCPUS = 4096;

export interface SnpLaunchInputs {
  /** The firmware image (OVMF.fd); small enough to hold in memory. */
  ovmf: Buffer;
  /** Shown in errors and in the explanation, e.g. the firmware's path. */
  ovmfSource?: string;
  vcpus: number;
  /** A QEMU CPU model name (see VCPU_TYPES); or give vcpuSig. */
  vcpuType?: string;
  vcpuSig?: number;
  /** Path or contents; streamed when a path. Given ⇒ the kernel-hashes page is measured. */
  kernel?: BlobSource;
  initrd?: BlobSource;
  append?: string;
  /** Hashes computed earlier (e.g. by a launcher that already streamed the files) instead of kernel/initrd/append. */
  kernelHashes?: KernelHashes;
  guestFeatures?: bigint | number;
  vmmType?: VmmType;
  /** A digest of the firmware pages computed earlier (sev-snp-measure --snp-ovmf-hash); the firmware's pages are then not hashed again. */
  ovmfHash?: Buffer;
}

/** One measured component, with its own hash and the launch digest after it was folded in. */
export interface ExplainEntry {
  component: string;
  detail: string;
  /** The component's own hash, "<alg>:<hex>", when it has one. */
  hash?: string;
  /** Guest-physical address where it was launched, as hex. */
  gpa?: string;
  pages: number;
  /** Launch digest (hex) after this component. */
  digestAfter: string;
}

export interface SnpLaunchDigest {
  digest: Buffer;
  /** In launch order; the firmware's own (whole-file) hash is computed when this is first read. */
  components: ExplainEntry[];
}

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

/** The launch digest of the firmware pages alone (sev-snp-measure --mode snp:ovmf-hash). */
export function snpOvmfHash(ovmf: Buffer, source = "firmware"): Buffer {
  const info = ovmfInfo(ovmf, source);
  const ld = new LaunchDigest();
  ld.normalPages(info.gpa, ovmf);
  return ld.digest;
}

/** Computes the SNP launch digest, streaming kernel and initrd from disk when given as paths. */
export async function snpLaunchDigest(inputs: SnpLaunchInputs): Promise<SnpLaunchDigest> {
  if (inputs.kernelHashes === undefined && inputs.kernel === undefined && (inputs.initrd || inputs.append)) {
    throw new AirlockError("MEASURE", "an initrd or a command line was given without a kernel", { hint: "add --kernel (the initrd and command line are only measured with a kernel)" });
  }
  // Check the firmware before spending time hashing a large initrd.
  const info = ovmfInfo(inputs.ovmf, inputs.ovmfSource ?? "firmware");
  const wantsKernel = inputs.kernel !== undefined || inputs.kernelHashes !== undefined;
  if (wantsKernel) checkKernelHashesSupport(info, inputs.ovmfSource ?? "firmware");
  const kernelHashes = inputs.kernelHashes ?? (inputs.kernel !== undefined ? await hashKernelInputs({ kernel: inputs.kernel, initrd: inputs.initrd, append: inputs.append }) : undefined);
  return snpLaunchDigestOf(info, { ...inputs, kernelHashes });
}

function checkKernelHashesSupport(info: OvmfInfo, source: string): void {
  if (!info.hasSevMetadata) throw noSevMetadata(source);
  if (!info.hasKernelHashesSection) {
    throw new AirlockError("MEASURE", `${source}: a kernel was given but the firmware's SEV metadata has no SNP_KERNEL_HASHES section, so QEMU cannot measure -kernel/-initrd/-append`, {
      hint: "use an OVMF built from edk2's OvmfPkg/AmdSev/AmdSevX64.dsc for measured direct boot, or measure without --kernel",
    });
  }
}

function noSevMetadata(source: string): AirlockError {
  return new AirlockError("MEASURE", `${source}: the firmware has no SEV metadata (no OVMF footer table entry dc886566-984a-4798-a75e-5585a7bf67cc), so it cannot launch an SNP guest`, {
    hint: "pass an OVMF build with SEV-SNP support (edk2 AmdSevX64 or OvmfX64 since stable202205)",
  });
}

/** The synchronous core: all file hashing has been done; `info` is the parsed firmware. */
export function snpLaunchDigestOf(info: OvmfInfo, inputs: SnpLaunchInputs): SnpLaunchDigest {
  const source = inputs.ovmfSource ?? "firmware";
  const vmmType: VmmType = inputs.vmmType ?? "qemu";
  if (vmmType !== "qemu" && vmmType !== "ec2") throw new AirlockError("MEASURE", `unknown VMM type ${JSON.stringify(vmmType)}`, { hint: "use qemu or ec2" });
  const vcpus = inputs.vcpus;
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MAX_VCPUS) throw new AirlockError("MEASURE", `the number of vCPUs must be an integer from 1 to ${MAX_VCPUS}, got ${vcpus}`);
  const vcpuSig = resolveVcpuSig(inputs, vmmType);
  const guestFeatures = BigInt(inputs.guestFeatures ?? DEFAULT_GUEST_FEATURES);
  if (!info.hasSevMetadata) throw noSevMetadata(source);
  if (inputs.kernelHashes !== undefined) checkKernelHashesSupport(info, source);

  const ld = new LaunchDigest(inputs.ovmfHash);
  const components: ExplainEntry[] = [];
  const record = (e: Omit<ExplainEntry, "digestAfter">): void => {
    components.push({ ...e, digestAfter: ld.digest.toString("hex") });
  };

  // (1) The firmware, unless its pages' digest was given. Its whole-file hash is only for the
  // explanation: computed when the components are read (the digest needs only the pages' hashes).
  let firmware: ExplainEntry | undefined;
  if (inputs.ovmfHash === undefined) {
    ld.normalPages(info.gpa, inputs.ovmf);
    record({ component: "firmware", detail: `${source}, ${info.size} bytes as NORMAL pages`, hash: undefined, gpa: hex(info.gpa), pages: info.size / PAGE_SIZE });
    firmware = components.at(-1);
  } else {
    record({ component: "firmware", detail: `precomputed digest of the firmware pages (seed)`, hash: `ld:${inputs.ovmfHash.toString("hex")}`, gpa: hex(info.gpa), pages: 0 });
  }

  // The kernel-hashes inputs, listed so that a reviewer sees which one changed.
  const kh = inputs.kernelHashes;
  if (kh !== undefined) {
    components.push(
      { component: "kernel", detail: "-kernel file", hash: `sha256:${kh.kernel.toString("hex")}`, pages: 0, digestAfter: ld.digest.toString("hex") },
      { component: "initrd", detail: "-initrd file (empty input when none)", hash: `sha256:${kh.initrd.toString("hex")}`, pages: 0, digestAfter: ld.digest.toString("hex") },
      {
        component: "cmdline",
        detail: inputs.append === undefined ? "-append (none: a lone NUL)" : `-append ${JSON.stringify(inputs.append)} plus NUL`,
        hash: `sha256:${kh.cmdline.toString("hex")}`,
        pages: 0,
        digestAfter: ld.digest.toString("hex"),
      },
    );
  }

  // (2) SEV metadata sections, in table order. EC2 measures CPUID pages last.
  for (const [i, s] of info.sections.entries()) {
    const name = `metadata[${i}] ${s.typeName}`;
    const before = ld.pages;
    switch (s.type) {
      case SECTION_TYPES.SNP_SEC_MEM:
      case SECTION_TYPES.SVSM_CAA:
        checkWholePages(s.size, name, source);
        ld.zeroPages(s.gpa, s.size);
        record({ component: name, detail: `${s.size} bytes as ZERO pages`, gpa: hex(s.gpa), pages: ld.pages - before });
        break;
      case SECTION_TYPES.SNP_SECRETS:
        ld.secretsPage(s.gpa);
        record({ component: name, detail: "SECRETS page", gpa: hex(s.gpa), pages: 1 });
        break;
      case SECTION_TYPES.CPUID:
        if (vmmType !== "ec2") {
          ld.cpuidPage(s.gpa);
          record({ component: name, detail: "CPUID page", gpa: hex(s.gpa), pages: 1 });
        }
        break;
      case SECTION_TYPES.SNP_KERNEL_HASHES:
        if (kh !== undefined) {
          if (info.kernelHashesTableGpa === undefined) throw new AirlockError("MEASURE", `${source}: the firmware has an SNP_KERNEL_HASHES section but no SEV_HASH_TABLE_RV footer entry placing the table`);
          if (s.size !== PAGE_SIZE) throw new AirlockError("MEASURE", `${source}: the SNP_KERNEL_HASHES section is ${s.size} bytes; QEMU fills exactly one ${PAGE_SIZE}-byte page`);
          const page = kernelHashesPage(kh, info.kernelHashesTableGpa & (PAGE_SIZE - 1));
          ld.normalPages(s.gpa, page);
          record({ component: name, detail: `kernel-hashes table at 0x${info.kernelHashesTableGpa.toString(16)} in a NORMAL page`, hash: `sha384:${sha384(page).toString("hex")}`, gpa: hex(s.gpa), pages: 1 });
        } else {
          checkWholePages(s.size, name, source);
          ld.zeroPages(s.gpa, s.size);
          record({ component: name, detail: `no kernel: ${s.size} bytes as ZERO pages`, gpa: hex(s.gpa), pages: ld.pages - before });
        }
        break;
      default:
        // ovmfInfo only returns known section types.
        throw new AirlockError("INTERNAL", `unhandled SEV metadata section type ${s.type}`);
    }
  }
  if (vmmType === "ec2") {
    for (const [i, s] of info.sections.entries()) {
      if (s.type !== SECTION_TYPES.CPUID) continue;
      ld.cpuidPage(s.gpa);
      record({ component: `metadata[${i}] CPUID`, detail: "CPUID page (EC2 measures it last)", gpa: hex(s.gpa), pages: 1 });
    }
  }

  // (3) One VMSA per vCPU: the BSP at the reset vector, APs at the firmware's SEV-ES reset EIP.
  if (info.apResetEip === undefined) throw new AirlockError("MEASURE", `${source}: the firmware has no SEV-ES reset block (footer entry 00f771de-1a7e-4fcb-890e-68c77e2fb44e), so vCPUs have no SNP start address`);
  const vmsaFor = (eip: number): Buffer => buildVmsa({ eip, vcpuSig, guestFeatures, vmmType });
  const bsp = sha384(vmsaFor(BSP_EIP));
  ld.vmsaPageHash(bsp);
  record({ component: "vmsa[0] BSP", detail: `VMSA page, EIP ${hex(BSP_EIP)}, sig ${hex(vcpuSig)}, features ${hex(guestFeatures)}, ${vmmType}`, hash: `sha384:${bsp.toString("hex")}`, gpa: hex(VMSA_GPA), pages: 1 });
  if (vcpus > 1) {
    if (info.apResetEip === 0) throw new AirlockError("MEASURE", `${source}: the firmware's SEV-ES reset block gives AP EIP 0, so it cannot start ${vcpus - 1} more vCPUs`, { hint: "launch with --vcpus 1 or use a firmware with an SEV-ES reset block" });
    const ap = sha384(vmsaFor(info.apResetEip));
    for (let i = 1; i < vcpus; i++) ld.vmsaPageHash(ap);
    record({ component: vcpus === 2 ? "vmsa[1] AP" : `vmsa[1..${vcpus - 1}] AP`, detail: `${vcpus - 1} VMSA page(s), EIP ${hex(info.apResetEip)}`, hash: `sha384:${ap.toString("hex")}`, gpa: hex(VMSA_GPA), pages: vcpus - 1 });
  }
  const ovmf = inputs.ovmf;
  return {
    digest: ld.digest,
    get components() {
      if (firmware !== undefined && firmware.hash === undefined) firmware.hash = `sha384:${sha384(ovmf).toString("hex")}`;
      return components;
    },
  };
}

function checkWholePages(size: number, name: string, source: string): void {
  if (size % PAGE_SIZE !== 0) throw new AirlockError("MEASURE", `${source}: SEV metadata ${name} is ${size} bytes, not a whole number of pages`);
}

function resolveVcpuSig(inputs: SnpLaunchInputs, vmmType: VmmType): number {
  if (inputs.vcpuSig !== undefined && inputs.vcpuType !== undefined) throw new AirlockError("MEASURE", "give a vCPU type or a vCPU signature, not both");
  if (inputs.vcpuSig !== undefined) {
    if (!Number.isInteger(inputs.vcpuSig) || inputs.vcpuSig < 0 || inputs.vcpuSig > 0xffff_ffff) throw new AirlockError("MEASURE", `vCPU signature ${inputs.vcpuSig} is not a 32-bit value`);
    return inputs.vcpuSig;
  }
  if (inputs.vcpuType !== undefined) return vcpuSigByType(inputs.vcpuType);
  // EC2 leaves RDX zero, so it needs no signature.
  if (vmmType === "ec2") return 0;
  throw new AirlockError("MEASURE", "the vCPU type is missing", { hint: "give --vcpu-type (e.g. EPYC-Milan), --vcpu-sig, or --vcpu-family/--vcpu-model/--vcpu-stepping" });
}
