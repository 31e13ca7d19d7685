// A virtio driver in plain JavaScript over a Buffer that stands in for guest RAM: it lays out the
// rx and tx split rings like Linux's virtio-vsock driver (rx chains of a 44-byte header buffer
// and a 4 KiB data buffer; tx chains of header + payload) and speaks raw vsock packets. Used by
// the fabric's unit tests, its randomized ring test and its benchmark: what runs against it is
// the real device and router code.
import { GuestMemory } from "./memory.ts";
import { SplitVirtqueue, ringSizes } from "./virtqueue.ts";
import type { VsockDevice } from "./vsock-device.ts";
import { RX_QUEUE, TX_QUEUE } from "./vsock-device.ts";
import { HDR_LEN, MAX_PAYLOAD, TYPE_STREAM, decodeHeader, encodeHeader, type VsockHeader } from "./vsock-packet.ts";

export const GPA_BASE = 0x100000;
export const UVA_BASE = 0x7f1200000000;

export interface RxPacket {
  hdr: VsockHeader;
  payload: Buffer;
}

interface DriverRing {
  size: number;
  descOff: number;
  availOff: number;
  usedOff: number;
  availIdx: number;
  lastUsed: number;
}

export interface SyntheticGuestOptions {
  queueSize?: number;
  rxBufSize?: number;
  /** Bytes of guest RAM; must fit rings and buffers. */
  memSize?: number;
  /** Put the region inside a larger buffer with this many guard bytes on each side. */
  guard?: number;
}

export function header(h: Partial<VsockHeader> & Pick<VsockHeader, "srcCid" | "dstCid" | "op">): VsockHeader {
  return { srcPort: 0, dstPort: 0, len: 0, type: TYPE_STREAM, flags: 0, bufAlloc: 256 * 1024, fwdCnt: 0, ...h };
}

export class SyntheticGuest {
  readonly backing: Buffer;
  readonly ram: Buffer;
  readonly memory: GuestMemory;
  readonly rx: DriverRing;
  readonly tx: DriverRing;
  readonly rxBufSize: number;
  private readonly rxBufs: number[] = []; // ram offsets of rx data buffers, per chain slot
  private readonly rxHdrs: number[] = [];
  private readonly txSlots: number[] = [];
  private readonly freeTx: number[] = [];
  private top = 0;
  readonly guard: number;
  /** Set by the test harness once a device serves this guest. */
  device: VsockDevice | null = null;
  /** Calls the device raised, per queue. */
  readonly interrupts = [0, 0];

  constructor(
    readonly cid: number,
    opts: SyntheticGuestOptions = {},
  ) {
    const q = opts.queueSize ?? 256;
    this.rxBufSize = opts.rxBufSize ?? 4096;
    const mem = opts.memSize ?? 8 * 1024 * 1024;
    this.guard = opts.guard ?? 0;
    this.backing = Buffer.alloc(mem + 2 * this.guard, 0);
    this.ram = this.backing.subarray(this.guard, this.guard + mem);
    // The device sees plain Uint8Array views, as it does over an mmap()ed memfd.
    const bytes = new Uint8Array(this.backing.buffer, this.backing.byteOffset + this.guard, mem);
    this.memory = new GuestMemory([{ gpa: GPA_BASE, uva: UVA_BASE, size: mem, bytes }]);
    this.rx = this.layoutRing(q);
    this.tx = this.layoutRing(q);
    // rx: chains of two descriptors (header, data): q/2 chains.
    for (let i = 0; i < q / 2; i++) {
      this.rxHdrs.push(this.alloc(HDR_LEN, 8));
      this.rxBufs.push(this.alloc(this.rxBufSize, 8));
    }
    for (let i = 0; i < q / 2; i++) this.txSlots.push(this.alloc(HDR_LEN + MAX_PAYLOAD, 8));
    this.reset();
  }

  /** Back to a freshly booted driver: zeroed RAM and rings, all rx buffers posted, no device. */
  reset(): void {
    this.device = null;
    if (this.guard) this.backing.fill(0xa5);
    this.ram.fill(0);
    for (const r of [this.rx, this.tx]) r.availIdx = r.lastUsed = 0;
    this.freeTx.length = 0;
    for (let i = 0; i < this.txSlots.length; i++) this.freeTx.push(i);
    for (let i = 0; i < this.rxBufs.length; i++) {
      this.writeDesc(this.rx, 2 * i, GPA_BASE + this.rxHdrs[i]!, HDR_LEN, 1 | 2, 2 * i + 1);
      this.writeDesc(this.rx, 2 * i + 1, GPA_BASE + this.rxBufs[i]!, this.rxBufSize, 2, 0);
      this.postRx(i);
    }
    this.interrupts[0] = this.interrupts[1] = 0;
  }

  /** True if the guard bytes around guest RAM are untouched. */
  guardsIntact(): boolean {
    if (!this.guard) return true;
    const pattern = Buffer.alloc(this.guard, 0xa5);
    return this.backing.subarray(0, this.guard).equals(pattern) && this.backing.subarray(this.guard + this.ram.length).equals(pattern);
  }

  private alloc(size: number, align: number): number {
    this.top = Math.ceil(this.top / align) * align;
    const off = this.top;
    this.top += size;
    if (this.top > this.ram.length) throw new Error("synthetic guest memory too small");
    return off;
  }

  private layoutRing(size: number): DriverRing {
    const s = ringSizes(size);
    return { size, descOff: this.alloc(s.desc, 16), availOff: this.alloc(s.avail, 2), usedOff: this.alloc(s.used, 4), availIdx: 0, lastUsed: 0 };
  }

  /** The device's view of this guest's queues. */
  queues(): { rx: SplitVirtqueue; tx: SplitVirtqueue } {
    const view = (off: number, len: number): Uint8Array => this.memory.viewUva(UVA_BASE + off, len)!;
    const mk = (r: DriverRing): SplitVirtqueue => {
      const s = ringSizes(r.size);
      return new SplitVirtqueue(r.size, this.memory, { desc: view(r.descOff, s.desc), avail: view(r.availOff, s.avail), used: view(r.usedOff, s.used) });
    };
    return { rx: mk(this.rx), tx: mk(this.tx) };
  }

  /** Attaches a device to this guest's rings. */
  attach(device: VsockDevice): void {
    this.device = device;
    const { rx, tx } = this.queues();
    device.setQueue(RX_QUEUE, rx);
    device.setQueue(TX_QUEUE, tx);
  }

  writeDesc(r: DriverRing, i: number, gpa: number, len: number, flags: number, next: number): void {
    const o = r.descOff + 16 * i;
    this.ram.writeUInt32LE(gpa % 2 ** 32, o);
    this.ram.writeUInt32LE(Math.floor(gpa / 2 ** 32), o + 4);
    this.ram.writeUInt32LE(len, o + 8);
    this.ram.writeUInt16LE(flags, o + 12);
    this.ram.writeUInt16LE(next, o + 14);
  }

  publish(r: DriverRing, head: number): void {
    this.ram.writeUInt16LE(head, r.availOff + 4 + 2 * (r.availIdx % r.size));
    r.availIdx = (r.availIdx + 1) & 0xffff;
    this.ram.writeUInt16LE(r.availIdx, r.availOff + 2);
  }

  /** Gives an rx chain back (its descriptors were written once, at reset, like a real driver's). */
  private postRx(slot: number): void {
    this.publish(this.rx, 2 * slot);
  }

  /** Reclaims sent tx buffers. */
  private reapTx(): void {
    const r = this.tx;
    while (r.lastUsed !== this.ram.readUInt16LE(r.usedOff + 2)) {
      const id = this.ram.readUInt32LE(r.usedOff + 4 + 8 * (r.lastUsed % r.size));
      r.lastUsed = (r.lastUsed + 1) & 0xffff;
      // The randomized test scribbles over rings; this driver just skips what makes no sense.
      if (id % 2 === 0 && id / 2 < this.txSlots.length && !this.freeTx.includes(id / 2)) this.freeTx.push(id / 2);
    }
  }

  /** Fills every tx buffer's payload area with `byte` (what queuePacket(h, length) then sends). */
  fillTxPayloads(byte: number): void {
    for (const off of this.txSlots) this.ram.fill(byte, off + HDR_LEN, off + HDR_LEN + MAX_PAYLOAD);
  }

  /** Free tx chains after reclaiming. */
  txRoom(): number {
    this.reapTx();
    return this.freeTx.length;
  }

  /**
   * Queues a packet on tx (header + payload in two descriptors); false if the ring is full.
   * A number instead of a payload sends that many bytes of whatever the slot holds (benchmarks:
   * the guest's own copy into its buffer is not the fabric's work).
   */
  queuePacket(h: VsockHeader, payload?: Uint8Array | number): boolean {
    this.reapTx();
    const slot = this.freeTx.pop();
    if (slot === undefined) return false;
    const off = this.txSlots[slot]!;
    const len = typeof payload === "number" ? Math.min(payload, MAX_PAYLOAD) : (payload?.length ?? 0);
    encodeHeader({ ...h, len }, this.ram, off);
    if (payload && typeof payload !== "number") this.ram.set(payload, off + HDR_LEN);
    const d = 2 * slot;
    this.writeDesc(this.tx, d, GPA_BASE + off, HDR_LEN, len > 0 ? 1 : 0, d + 1);
    if (len > 0) this.writeDesc(this.tx, d + 1, GPA_BASE + off + HDR_LEN, len, 0, 0);
    this.publish(this.tx, d);
    return true;
  }

  /** Queues a packet and kicks tx. */
  send(h: VsockHeader, payload?: Uint8Array): void {
    if (!this.queuePacket(h, payload)) throw new Error("tx ring full");
    this.device?.kick(TX_QUEUE);
  }

  /** Like receive() for a benchmark: only counts the payload bytes delivered (no decoding). */
  receiveCount(): number {
    const r = this.rx;
    const ram = this.ram;
    let bytes = 0;
    const usedIdx = ram.readUInt16LE(r.usedOff + 2);
    if (usedIdx === r.lastUsed) return 0;
    while (r.lastUsed !== usedIdx) {
      const e = r.usedOff + 4 + 8 * (r.lastUsed % r.size);
      bytes += ram.readUInt32LE(e + 4) - HDR_LEN;
      r.lastUsed = (r.lastUsed + 1) & 0xffff;
      this.publish(r, ram.readUInt32LE(e));
    }
    this.device?.kick(RX_QUEUE);
    return bytes;
  }

  /** Takes packets the device delivered, reposts the buffers and kicks rx. */
  receive(copy = true): RxPacket[] {
    const out: RxPacket[] = [];
    const r = this.rx;
    let reposted = false;
    while (r.lastUsed !== this.ram.readUInt16LE(r.usedOff + 2)) {
      const e = r.usedOff + 4 + 8 * (r.lastUsed % r.size);
      const id = this.ram.readUInt32LE(e);
      const len = this.ram.readUInt32LE(e + 4);
      r.lastUsed = (r.lastUsed + 1) & 0xffff;
      const slot = id / 2;
      if (id % 2 !== 0 || slot >= this.rxBufs.length) continue;
      if (len >= HDR_LEN) {
        const hdr = decodeHeader(this.ram.subarray(this.rxHdrs[slot]!, this.rxHdrs[slot]! + HDR_LEN));
        const n = Math.min(hdr.len, len - HDR_LEN);
        const data = this.ram.subarray(this.rxBufs[slot]!, this.rxBufs[slot]! + n);
        out.push({ hdr, payload: copy ? Buffer.from(data) : data });
      }
      this.postRx(slot);
      reposted = true;
    }
    if (reposted) this.device?.kick(RX_QUEUE);
    return out;
  }
}
