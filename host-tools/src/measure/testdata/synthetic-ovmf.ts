// Builds small OVMF-shaped images (footer GUIDed table + SEV metadata) for tests: hostile-input
// cases and randomized cross-checks need firmware layouts the two real fixtures do not cover.
import { guidToBytes, OVMF_GUIDS, PAGE_SIZE } from "../ovmf.ts";

export interface SyntheticSection {
  gpa: number;
  size: number;
  type: number;
}

export interface SyntheticOvmf {
  pages: number;
  sections?: SyntheticSection[];
  /** GPA of the kernel-hashes table (SEV_HASH_TABLE_RV entry); omitted ⇒ no entry. */
  kernelHashesGpa?: number;
  /** AP reset EIP (SEV-ES reset block entry); omitted ⇒ no entry. */
  apResetEip?: number;
  /** Extra entries placed before the known ones. */
  extraEntries?: { guid: string; data: Buffer }[];
  /** Fill byte for the rest of the image (its contents are measured too). */
  fill?: number;
}

function entry(guid: string, data: Buffer): Buffer {
  const size = Buffer.alloc(2);
  size.writeUInt16LE(data.length + 18);
  return Buffer.concat([data, size, guidToBytes(guid)]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

export function buildSyntheticOvmf(spec: SyntheticOvmf): Buffer {
  const image = Buffer.alloc(spec.pages * PAGE_SIZE, spec.fill ?? 0xa5);
  const entries: Buffer[] = (spec.extraEntries ?? []).map((e) => entry(e.guid, e.data));
  if (spec.sections !== undefined) {
    // Metadata sits at the start of the last page; the footer entry gives its offset from the end.
    const start = image.length - PAGE_SIZE;
    const meta = Buffer.alloc(16 + 12 * spec.sections.length);
    meta.write("ASEV", 0, "latin1");
    meta.writeUInt32LE(meta.length, 4);
    meta.writeUInt32LE(1, 8);
    meta.writeUInt32LE(spec.sections.length, 12);
    spec.sections.forEach((s, i) => {
      meta.writeUInt32LE(s.gpa >>> 0, 16 + 12 * i);
      meta.writeUInt32LE(s.size >>> 0, 20 + 12 * i);
      meta.writeUInt32LE(s.type >>> 0, 24 + 12 * i);
    });
    meta.copy(image, start);
    entries.push(entry(OVMF_GUIDS.sevMetadata, u32(image.length - start)));
  }
  if (spec.kernelHashesGpa !== undefined) entries.push(entry(OVMF_GUIDS.sevHashTableRv, Buffer.concat([u32(spec.kernelHashesGpa), u32(0x400)])));
  if (spec.apResetEip !== undefined) entries.push(entry(OVMF_GUIDS.sevEsResetBlock, u32(spec.apResetEip)));
  const body = Buffer.concat(entries);
  const footer = Buffer.alloc(18);
  footer.writeUInt16LE(body.length + 18, 0);
  guidToBytes(OVMF_GUIDS.footer).copy(footer, 2);
  const table = Buffer.concat([body, footer]);
  table.copy(image, image.length - 32 - table.length);
  return image;
}
