// Split virtqueues (virtio 1.x §2.7) served from the device side. The rings live in guest memory
// that the guest can rewrite at any moment, so each field is read once into a local and checked
// before use: indexes against the queue size, descriptor buffers against the memory regions,
// chains cut after `size` links. Any violation throws RingError; the caller cuts that VM off.
import type { GuestMemory} from "./memory.ts";
import { readAddr } from "./memory.ts";

export class RingError extends Error {
  override name = "RingError";
}

const DESC_F_NEXT = 1;
const DESC_F_WRITE = 2;
const DESC_F_INDIRECT = 4;
const AVAIL_F_NO_INTERRUPT = 1;
export const MAX_QUEUE_SIZE = 32768;

export interface Chain {
  head: number;
  /** Device-readable buffers, in order (views into guest memory). */
  readable: Uint8Array[];
  readableLen: number;
  /** Device-writable buffers, in order. */
  writable: Uint8Array[];
  writableLen: number;
}

/** Byte sizes of the three ring areas for a queue of `size` entries. */
export function ringSizes(size: number): { desc: number; avail: number; used: number } {
  return { desc: 16 * size, avail: 6 + 2 * size, used: 6 + 8 * size };
}

export class SplitVirtqueue {
  private readonly desc: DataView;
  private readonly avail: DataView;
  private readonly used: DataView;
  private lastAvail: number;
  private usedIdx: number;

  constructor(
    readonly size: number,
    private readonly memory: GuestMemory,
    rings: { desc: Uint8Array; avail: Uint8Array; used: Uint8Array },
    lastAvail = 0,
  ) {
    if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
      throw new RingError(`queue size ${size} is not a power of two up to ${MAX_QUEUE_SIZE}`);
    }
    const need = ringSizes(size);
    if (rings.desc.length < need.desc || rings.avail.length < need.avail || rings.used.length < need.used) {
      throw new RingError("ring areas are smaller than the queue size needs");
    }
    this.desc = new DataView(rings.desc.buffer, rings.desc.byteOffset, need.desc);
    this.avail = new DataView(rings.avail.buffer, rings.avail.byteOffset, need.avail);
    this.used = new DataView(rings.used.buffer, rings.used.byteOffset, need.used);
    this.lastAvail = lastAvail & 0xffff;
    // The used index is ours; start from what the ring holds (0 on a fresh queue, or where a
    // previous backend stopped) and never read it back from guest memory afterwards.
    this.usedIdx = this.used.getUint16(2, true);
  }

  /** Where the device stopped consuming (GET_VRING_BASE). */
  get nextAvail(): number {
    return this.lastAvail;
  }

  /** True if the guest has posted chains we have not taken yet. */
  hasAvailable(): boolean {
    return this.avail.getUint16(2, true) !== this.lastAvail;
  }

  /** Takes the next chain the guest made available, or null if there is none. */
  pop(): Chain | null {
    const availIdx = this.avail.getUint16(2, true);
    if (availIdx === this.lastAvail) return null;
    if (((availIdx - this.lastAvail) & 0xffff) > this.size) throw new RingError("avail index moved past the queue size");
    const head = this.avail.getUint16(4 + 2 * (this.lastAvail % this.size), true);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    if (head >= this.size) throw new RingError(`avail ring names descriptor ${head} of ${this.size}`);
    const chain: Chain = { head, readable: [], readableLen: 0, writable: [], writableLen: 0 };
    let i = head;
    for (let links = 0; ; links++) {
      if (links >= this.size) throw new RingError("descriptor chain loops or is longer than the queue");
      const off = 16 * i;
      const addr = readAddr(this.desc, off);
      const len = this.desc.getUint32(off + 8, true);
      const flags = this.desc.getUint16(off + 12, true);
      const next = this.desc.getUint16(off + 14, true);
      if (flags & DESC_F_INDIRECT) throw new RingError("indirect descriptor (not negotiated)");
      if (len > 0) {
        const view = addr < 0 ? null : this.memory.view(addr, len);
        if (!view) throw new RingError(`descriptor buffer [0x${addr.toString(16)}, +${len}) is outside guest memory`);
        if (flags & DESC_F_WRITE) {
          chain.writable.push(view);
          chain.writableLen += len;
        } else {
          if (chain.writable.length > 0) throw new RingError("device-readable descriptor after a writable one");
          chain.readable.push(view);
          chain.readableLen += len;
        }
      }
      if (!(flags & DESC_F_NEXT)) break;
      if (next >= this.size) throw new RingError(`descriptor ${i} links to ${next} of ${this.size}`);
      i = next;
    }
    return chain;
  }

  /** Returns a chain to the guest with `written` bytes written into its writable part. */
  push(head: number, written: number): void {
    const off = 4 + 8 * (this.usedIdx % this.size);
    this.used.setUint32(off, head, true);
    this.used.setUint32(off + 4, written, true);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.used.setUint16(2, this.usedIdx, true);
  }

  /** Whether the guest wants an interrupt for used buffers. */
  wantsInterrupt(): boolean {
    return (this.avail.getUint16(0, true) & AVAIL_F_NO_INTERRUPT) === 0;
  }
}

/** Copies up to `max` bytes from a list of segments starting at logical offset `from` into dst. */
export function gather(segs: readonly Uint8Array[], from: number, dst: Uint8Array, dstOff: number, max: number): number {
  let skip = from;
  let copied = 0;
  for (const s of segs) {
    if (copied >= max) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    const n = Math.min(s.length - skip, max - copied);
    dst.set(s.subarray(skip, skip + n), dstOff + copied);
    copied += n;
    skip = 0;
  }
  return copied;
}
