// The initial VMSA (SEV-ES save area, AMD APM vol. 2 table B-4) of each vCPU as QEMU/KVM (or EC2)
// hands it to SNP_LAUNCH_UPDATE. Field offsets follow Linux's struct sev_es_save_area, which is
// what sev-snp-measure's vmsa.py lays out; every field not set here is zero.
import { AirlockError } from "../../../proto/src/errors.ts";
import { PAGE_SIZE } from "./ovmf.ts";

export type VmmType = "qemu" | "ec2";

/** The BSP starts at the reset vector; APs start at the firmware's SEV-ES reset block EIP. */
export const BSP_EIP = 0xffff_fff0;

const OFF = {
  es: 0x000,
  cs: 0x010,
  ss: 0x020,
  ds: 0x030,
  fs: 0x040,
  gs: 0x050,
  gdtr: 0x060,
  ldtr: 0x070,
  idtr: 0x080,
  tr: 0x090,
  efer: 0x0d0,
  cr4: 0x148,
  cr0: 0x158,
  dr7: 0x160,
  dr6: 0x168,
  rflags: 0x170,
  rip: 0x178,
  gPat: 0x268,
  rdx: 0x310,
  sevFeatures: 0x3b0,
  xcr0: 0x3e8,
  mxcsr: 0x408,
  x87Fcw: 0x410,
} as const;

export interface VmsaParams {
  eip: number;
  /** CPUID signature placed in RDX (QEMU); EC2 leaves RDX zero. */
  vcpuSig: number;
  /** SEV_FEATURES: the guest features the kernel enables (bit 0 SNPActive). */
  guestFeatures: bigint;
  vmmType: VmmType;
}

/** struct vmcb_seg: u16 selector, u16 attrib, u32 limit, u64 base. */
function writeSeg(page: Buffer, at: number, selector: number, attrib: number, limit: number, base: number): void {
  page.writeUInt16LE(selector, at);
  page.writeUInt16LE(attrib, at + 2);
  page.writeUInt32LE(limit, at + 4);
  page.writeBigUInt64LE(BigInt(base), at + 8);
}

/** One 4 KiB VMSA page. */
export function buildVmsa(p: VmsaParams): Buffer {
  if (!Number.isInteger(p.eip) || p.eip < 0 || p.eip > 0xffff_ffff) throw new AirlockError("MEASURE", `vCPU start EIP 0x${p.eip.toString(16)} is not a 32-bit address`);
  if (!Number.isInteger(p.vcpuSig) || p.vcpuSig < 0 || p.vcpuSig > 0xffff_ffff) throw new AirlockError("MEASURE", `vCPU signature ${p.vcpuSig} is not a 32-bit value`);
  if (p.guestFeatures < 0n || p.guestFeatures > 0xffff_ffff_ffff_ffffn) throw new AirlockError("MEASURE", `guest features 0x${p.guestFeatures.toString(16)} do not fit in 64 bits`);

  // QEMU and EC2 differ slightly in their initial register state.
  const qemu = p.vmmType === "qemu";
  const csFlags = qemu || p.eip !== BSP_EIP ? 0x9b : 0x9a;
  const ssFlags = qemu ? 0x93 : 0x92;
  const trFlags = qemu ? 0x8b : 0x83;

  const page = Buffer.alloc(PAGE_SIZE);
  writeSeg(page, OFF.es, 0, 0x93, 0xffff, 0);
  writeSeg(page, OFF.cs, 0xf000, csFlags, 0xffff, (p.eip & 0xffff0000) >>> 0);
  writeSeg(page, OFF.ss, 0, ssFlags, 0xffff, 0);
  writeSeg(page, OFF.ds, 0, 0x93, 0xffff, 0);
  writeSeg(page, OFF.fs, 0, 0x93, 0xffff, 0);
  writeSeg(page, OFF.gs, 0, 0x93, 0xffff, 0);
  writeSeg(page, OFF.gdtr, 0, 0, 0xffff, 0);
  writeSeg(page, OFF.idtr, 0, 0, 0xffff, 0);
  writeSeg(page, OFF.ldtr, 0, 0x82, 0xffff, 0);
  writeSeg(page, OFF.tr, 0, trFlags, 0xffff, 0);
  page.writeBigUInt64LE(0x1000n, OFF.efer); // KVM sets EFER.SVME
  page.writeBigUInt64LE(0x40n, OFF.cr4); // KVM sets CR4.MCE
  page.writeBigUInt64LE(0x10n, OFF.cr0);
  page.writeBigUInt64LE(0x400n, OFF.dr7);
  page.writeBigUInt64LE(0xffff0ff0n, OFF.dr6);
  page.writeBigUInt64LE(0x2n, OFF.rflags);
  page.writeBigUInt64LE(BigInt(p.eip & 0xffff), OFF.rip);
  page.writeBigUInt64LE(0x0007040600070406n, OFF.gPat); // power-on PAT (APM vol. 2 A.3)
  page.writeBigUInt64LE(qemu ? BigInt(p.vcpuSig) : 0n, OFF.rdx);
  page.writeBigUInt64LE(p.guestFeatures, OFF.sevFeatures);
  page.writeBigUInt64LE(0x1n, OFF.xcr0);
  // KVM (since the SNP INIT2 interface) syncs the FPU reset state into the VMSA; EC2 does not.
  page.writeUInt32LE(qemu ? 0x1f80 : 0, OFF.mxcsr);
  page.writeUInt16LE(qemu ? 0x37f : 0, OFF.x87Fcw);
  return page;
}
