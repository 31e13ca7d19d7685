// OVMF's reset-vector GUIDed table and SEV metadata: how the firmware tells the VMM which pages to
// pre-populate for an SNP launch, where the kernel-hashes table goes and where APs start. The
// firmware file is hostile input (a reviewer measures images they did not build), so every offset
// and size is checked before use and a malformed file gets a MEASURE error naming what is wrong.
import { AirlockError } from "../../../proto/src/errors.ts";

export const PAGE_SIZE = 4096;
const FOUR_GIB = 0x1_0000_0000;

/** GUIDs of the footer table entries the launch digest depends on (edk2 OvmfPkg/ResetVector). */
export const OVMF_GUIDS = {
  footer: "96b582de-1fb2-45f7-baea-a366c55a082d",
  sevHashTableRv: "7255371f-3a3b-4b04-927b-1da6efa8d454",
  sevEsResetBlock: "00f771de-1a7e-4fcb-890e-68c77e2fb44e",
  sevMetadata: "dc886566-984a-4798-a75e-5585a7bf67cc",
} as const;

/** SEV metadata section types (OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm). */
export const SECTION_TYPES = {
  SNP_SEC_MEM: 0x1,
  SNP_SECRETS: 0x2,
  CPUID: 0x3,
  SVSM_CAA: 0x4,
  SNP_KERNEL_HASHES: 0x10,
} as const;

export type SectionTypeName = keyof typeof SECTION_TYPES;

export interface MetadataSection {
  gpa: number;
  size: number;
  type: number;
  /** Name of the type, e.g. "SNP_SEC_MEM". */
  typeName: SectionTypeName;
}

export interface OvmfInfo {
  /** Firmware size in bytes; the image is mapped so that it ends at 4 GiB. */
  size: number;
  /** GPA of the first byte of the image (4 GiB - size). */
  gpa: number;
  /** Footer table entries by GUID (data only, without the size and GUID trailer). */
  table: ReadonlyMap<string, Buffer>;
  /** SEV metadata sections in table order; empty when the firmware has none. */
  sections: readonly MetadataSection[];
  hasSevMetadata: boolean;
  /** GPA of the kernel-hashes table (SEV_HASH_TABLE_RV), when the firmware declares one. */
  kernelHashesTableGpa: number | undefined;
  /** AP reset EIP from the SEV-ES reset block, when the firmware declares one. */
  apResetEip: number | undefined;
  /** True when the metadata has an SNP_KERNEL_HASHES section (firmware built for measured direct boot). */
  hasKernelHashesSection: boolean;
}

/** A GUID in its little-endian ("mixed-endian") byte form, as edk2 and QEMU store it. */
export function guidToBytes(guid: string): Buffer {
  const hex = guid.replace(/-/g, "");
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new AirlockError("INTERNAL", `not a GUID: ${guid}`);
  const b = Buffer.from(hex, "hex");
  // The first three fields are little-endian; the last eight bytes are kept in order.
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
}

export function guidFromBytes(bytes: Buffer): string {
  const b = Buffer.concat([Buffer.from(bytes.subarray(0, 4)).reverse(), Buffer.from(bytes.subarray(4, 6)).reverse(), Buffer.from(bytes.subarray(6, 8)).reverse(), bytes.subarray(8, 16)]);
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function bad(source: string, what: string, hint?: string): AirlockError {
  return new AirlockError("MEASURE", `${source}: ${what}`, { hint: hint ?? "pass an OVMF build with SEV support (e.g. edk2's AmdSevX64 for measured direct boot)" });
}

// Footer entries are `data ‖ u16 size ‖ GUID`; size counts the whole entry.
const ENTRY_HEADER = 2 + 16;

/** Parses the footer table and SEV metadata of an OVMF image. Never reads outside `buf`. */
export function ovmfInfo(buf: Buffer, source = "firmware"): OvmfInfo {
  if (buf.length === 0) throw bad(source, "the firmware file is empty");
  if (buf.length % PAGE_SIZE !== 0) throw bad(source, `firmware size ${buf.length} is not a multiple of ${PAGE_SIZE} bytes`);
  if (buf.length >= FOUR_GIB) throw bad(source, `firmware size ${buf.length} does not fit below 4 GiB`);

  const table = parseFooterTable(buf, source);
  const sections = parseSevMetadata(buf, table, source);
  const u32Entry = (guid: string, name: string): number | undefined => {
    const data = table.get(guid);
    if (data === undefined) return undefined;
    if (data.length < 4) throw bad(source, `footer table entry ${name} is ${data.length} bytes, shorter than its u32 value`);
    return data.readUInt32LE(0);
  };
  return {
    size: buf.length,
    gpa: FOUR_GIB - buf.length,
    table,
    sections,
    hasSevMetadata: table.has(OVMF_GUIDS.sevMetadata),
    kernelHashesTableGpa: u32Entry(OVMF_GUIDS.sevHashTableRv, "SEV_HASH_TABLE_RV"),
    apResetEip: u32Entry(OVMF_GUIDS.sevEsResetBlock, "SEV_ES_RESET_BLOCK"),
    hasKernelHashesSection: sections.some((s) => s.type === SECTION_TYPES.SNP_KERNEL_HASHES),
  };
}

function parseFooterTable(buf: Buffer, source: string): Map<string, Buffer> {
  const table = new Map<string, Buffer>();
  // The table ends 32 bytes before the end of the image with its own footer entry.
  const footerStart = buf.length - 32 - ENTRY_HEADER;
  if (footerStart < 0) return table;
  if (!buf.subarray(footerStart + 2, footerStart + ENTRY_HEADER).equals(guidToBytes(OVMF_GUIDS.footer))) return table;
  const fullSize = buf.readUInt16LE(footerStart);
  const tableSize = fullSize - ENTRY_HEADER;
  if (tableSize < 0) throw bad(source, `footer table size ${fullSize} is smaller than its ${ENTRY_HEADER}-byte header`);
  if (tableSize > footerStart) throw bad(source, `footer table size ${fullSize} runs past the start of the image`);

  // Entries are walked backwards from the footer. A repeated GUID keeps the entry nearest the
  // start of the table, as sev-snp-measure's dictionary does.
  let end = footerStart;
  const start = footerStart - tableSize;
  while (end - start >= ENTRY_HEADER) {
    const size = buf.readUInt16LE(end - ENTRY_HEADER);
    const guid = guidFromBytes(buf.subarray(end - 16, end));
    if (size < ENTRY_HEADER) throw bad(source, `footer table entry ${guid} has size ${size}, smaller than its header`);
    if (size > end - start) throw bad(source, `footer table entry ${guid} has size ${size}, larger than the rest of the table`);
    table.set(guid, buf.subarray(end - size, end - ENTRY_HEADER));
    end -= size;
  }
  return table;
}

const METADATA_HEADER = 16; // "ASEV", u32 size, u32 version, u32 count
const METADATA_DESC = 12; // u32 gpa, u32 size, u32 type

function parseSevMetadata(buf: Buffer, table: Map<string, Buffer>, source: string): MetadataSection[] {
  const entry = table.get(OVMF_GUIDS.sevMetadata);
  if (entry === undefined) return [];
  if (entry.length < 4) throw bad(source, "the SEV metadata footer entry is shorter than its u32 offset");
  const offsetFromEnd = entry.readUInt32LE(0);
  const start = buf.length - offsetFromEnd;
  if (offsetFromEnd > buf.length || start + METADATA_HEADER > buf.length) {
    throw bad(source, `SEV metadata offset ${offsetFromEnd} (from the end) points outside the ${buf.length}-byte image`);
  }
  const signature = buf.subarray(start, start + 4).toString("latin1");
  if (signature !== "ASEV") throw bad(source, `SEV metadata at offset ${start} has signature ${JSON.stringify(signature)}, expected "ASEV"`);
  const size = buf.readUInt32LE(start + 4);
  const version = buf.readUInt32LE(start + 8);
  const count = buf.readUInt32LE(start + 12);
  if (version !== 1) throw bad(source, `SEV metadata version ${version} is not supported (expected 1)`);
  if (size < METADATA_HEADER || start + size > buf.length) throw bad(source, `SEV metadata size ${size} runs outside the image`);
  if (count * METADATA_DESC > size - METADATA_HEADER) throw bad(source, `SEV metadata declares ${count} sections but holds room for ${Math.floor((size - METADATA_HEADER) / METADATA_DESC)}`);

  const names = new Map<number, SectionTypeName>(Object.entries(SECTION_TYPES).map(([k, v]) => [v, k as SectionTypeName]));
  const sections: MetadataSection[] = [];
  for (let i = 0; i < count; i++) {
    const at = start + METADATA_HEADER + i * METADATA_DESC;
    const gpa = buf.readUInt32LE(at);
    const secSize = buf.readUInt32LE(at + 4);
    const type = buf.readUInt32LE(at + 8);
    const typeName = names.get(type);
    if (typeName === undefined) throw bad(source, `SEV metadata section ${i} has unknown type 0x${type.toString(16)}`);
    sections.push({ gpa, size: secSize, type, typeName });
  }
  return sections;
}
