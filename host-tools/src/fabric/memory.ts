// Guest memory as the backend sees it: regions of guest-physical address space, each backed by
// bytes (an mmap of QEMU's memfd, or a plain Buffer in tests). Every address a guest hands us is
// translated here, and only here, with its whole length checked against one region.

export interface MemoryRegion {
  /** Guest-physical start address. */
  gpa: number;
  /** Start address in QEMU's own address space (vring addresses are given in it). */
  uva: number;
  size: number;
  bytes: Uint8Array;
}

/** Largest address we accept; JS numbers are exact to 2^53 and real addresses stay far below. */
const MAX_ADDR = 2 ** 52;

export class GuestMemory {
  readonly regions: readonly MemoryRegion[];

  constructor(regions: MemoryRegion[]) {
    for (const r of regions) {
      if (!Number.isSafeInteger(r.gpa) || !Number.isSafeInteger(r.uva) || !Number.isSafeInteger(r.size) || r.size <= 0) {
        throw new RangeError("memory region with a bad address or size");
      }
      if (r.gpa + r.size > MAX_ADDR || r.uva + r.size > MAX_ADDR || r.bytes.length !== r.size) {
        throw new RangeError("memory region out of range or not fully backed");
      }
    }
    this.regions = regions;
  }

  /** A view of guest-physical [gpa, gpa+len), or null unless it lies inside one region. */
  view(gpa: number, len: number): Uint8Array | null {
    for (const r of this.regions) {
      const off = gpa - r.gpa;
      if (off >= 0 && off < r.size && len <= r.size - off) return r.bytes.subarray(off, off + len);
    }
    return null;
  }

  /** Same for an address in QEMU's address space (vring addresses). */
  viewUva(uva: number, len: number): Uint8Array | null {
    for (const r of this.regions) {
      const off = uva - r.uva;
      if (off >= 0 && off < r.size && len <= r.size - off) return r.bytes.subarray(off, off + len);
    }
    return null;
  }
}

/** Reads a little-endian u64 as a number, or -1 if it is too large to be a real address. */
export function readAddr(dv: DataView, off: number): number {
  const lo = dv.getUint32(off, true);
  const hi = dv.getUint32(off + 4, true);
  if (hi >= MAX_ADDR / 2 ** 32) return -1;
  return hi * 2 ** 32 + lo;
}
