// The firmware an emulated launch declares. Under --tee emulated, QEMU boots the kernel directly
// (no SNP, no OVMF), yet the report must carry the SNP launch digest of exactly what was launched,
// reproducible by a reviewer with `airlock measure`. So airlock declares a small firmware image of
// its own making: a 4 KiB page holding nothing but OVMF's reset-vector table (footer, SEV metadata
// with the same sections as an AmdSev OVMF build, including SNP_KERNEL_HASHES, and the SEV-ES reset
// block). Measured with it, the digest covers the kernel, initrd and command line through QEMU's
// kernel-hashes table, exactly as a real SNP launch with AmdSev OVMF would. It is written into each
// image folder as `declared-firmware.fd`; `airlock measure --image DIR --ovmf DIR/declared-firmware.fd`
// reproduces the emulated report's measurement. Real SNP launches use real AmdSev OVMF instead.
import { guidToBytes, OVMF_GUIDS, PAGE_SIZE, SECTION_TYPES } from "./ovmf.ts";

/** Sections in table order, at the GPAs edk2's AmdSev build uses (OvmfPkg/AmdSev, MEMFD base 0x800000). */
const SECTIONS: [gpa: number, size: number, type: number][] = [
  [0x800000, 0x9000, SECTION_TYPES.SNP_SEC_MEM],
  [0x80a000, 0x3000, SECTION_TYPES.SNP_SEC_MEM],
  [0x80d000, 0x1000, SECTION_TYPES.SNP_SECRETS],
  [0x80e000, 0x1000, SECTION_TYPES.CPUID],
  [0x80f000, 0x1000, SECTION_TYPES.SNP_KERNEL_HASHES],
];
const HASH_TABLE_GPA = 0x80f000;
/** Where APs start (the SEV-ES reset block); any fixed value in the image works, this is OVMF's. */
const AP_RESET_EIP = 0xffffe030 & 0xffffffff;

function entry(guid: string, data: Buffer): Buffer {
  const trailer = Buffer.alloc(18);
  trailer.writeUInt16LE(data.length + 18, 0);
  guidToBytes(guid).copy(trailer, 2);
  return Buffer.concat([data, trailer]);
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

/** The declared firmware: always the same 4096 bytes. */
export function declaredFirmware(): Buffer {
  const image = Buffer.alloc(PAGE_SIZE);
  // SEV metadata ("ASEV") at the start of the page.
  const meta = Buffer.concat([Buffer.from("ASEV", "latin1"), u32(16 + 12 * SECTIONS.length), u32(1), u32(SECTIONS.length), ...SECTIONS.map(([g, s, t]) => Buffer.concat([u32(g), u32(s), u32(t)]))]);
  meta.copy(image, 0);
  const entries = Buffer.concat([
    // Where QEMU puts the kernel-hashes table: the start of the SNP_KERNEL_HASHES page, 1 KiB.
    entry(OVMF_GUIDS.sevHashTableRv, Buffer.concat([u32(HASH_TABLE_GPA), u32(0x400)])),
    entry(OVMF_GUIDS.sevEsResetBlock, u32(AP_RESET_EIP)),
    entry(OVMF_GUIDS.sevMetadata, u32(PAGE_SIZE)),
  ]);
  const table = Buffer.concat([entries, entry(OVMF_GUIDS.footer, Buffer.alloc(0))]);
  // The footer entry ends 32 bytes before the end; its size covers the whole table.
  table.writeUInt16LE(table.length, table.length - 18);
  table.copy(image, PAGE_SIZE - 32 - table.length);
  return image;
}
