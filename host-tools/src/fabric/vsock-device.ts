// One guest's virtio-vsock device: takes packets off its tx queue and hands them to the router,
// writes packets the router addresses to it into its rx queue. Whatever the guest does to its
// rings ends here as a fault of this device alone (RingError): the device stops and reports it.
import type { Logger } from "../../../proto/src/log.ts";
import { HDR_LEN, MAX_PAYLOAD, Op, decodeHeader, writeHeader, type VsockHeader } from "./vsock-packet.ts";
import { RingError, gather, type Chain, type SplitVirtqueue } from "./virtqueue.ts";

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
export const EVENT_QUEUE = 2;

/** Bytes a device may hold for a guest that does not take them (beyond that: RST the flow). */
export const MAX_PENDING_BYTES = 64 * 1024 * 1024;
/** Packets likewise (control packets carry no payload but still cost memory). */
export const MAX_PENDING_PACKETS = 65536;
const FENCE = new Int32Array(new SharedArrayBuffer(4));
/** Chains taken off tx per turn of the event loop, so one busy guest cannot starve the others. */
const TX_BUDGET = 1024;

/** What the device hands packets to. `payload` views are valid only during the call. */
export interface PacketSink {
  fromGuest(dev: VsockDevice, hdr: VsockHeader, payload: readonly Uint8Array[], payloadOff: number): void;
}

interface Pending {
  hdr: VsockHeader;
  data: Uint8Array | null;
  off: number;
}

export class VsockDevice {
  private rx: SplitVirtqueue | null = null;
  private tx: SplitVirtqueue | null = null;
  private pending: Pending[] = [];
  private pendingHead = 0;
  private pendingBytes = 0;
  private readonly hdrBuf = new Uint8Array(HDR_LEN);
  private readonly hdrView = new DataView(this.hdrBuf.buffer);
  private readonly notifyDue = [false, false];
  private notifyScheduled = false;
  private txScheduled = false;
  private faulted = false;
  /** Packets dropped because they were malformed (counted, logged sparingly). */
  dropped = 0;

  constructor(
    readonly cid: number,
    private readonly sink: PacketSink,
    private readonly notify: (queue: number) => void,
    private readonly onFault: (err: Error) => void,
    private readonly log: Logger,
  ) {}

  get broken(): boolean {
    return this.faulted;
  }

  /** Rings set up and not cut off: the guest's driver is running. */
  get ready(): boolean {
    return !this.faulted && this.rx !== null && this.tx !== null;
  }

  get hasPending(): boolean {
    return this.pendingHead < this.pending.length;
  }

  /** Installs (or with null, removes) the ring behind rx or tx; the event queue is not used. */
  setQueue(index: number, vq: SplitVirtqueue | null): void {
    if (index === RX_QUEUE) this.rx = vq;
    else if (index === TX_QUEUE) this.tx = vq;
    if (vq) this.kick(index);
  }

  /** The guest signalled a queue. */
  kick(index: number): void {
    if (this.faulted) return;
    if (index === TX_QUEUE) this.processTx();
    else if (index === RX_QUEUE) this.guard(() => this.drainPending());
  }

  /** Counters for status and diagnosis. */
  stats(): { pendingPackets: number; pendingBytes: number; rxNextAvail: number | null; txNextAvail: number | null; dropped: number } {
    return {
      pendingPackets: this.pending.length - this.pendingHead,
      pendingBytes: this.pendingBytes,
      rxNextAvail: this.rx?.nextAvail ?? null,
      txNextAvail: this.tx?.nextAvail ?? null,
      dropped: this.dropped,
    };
  }

  /** Drops all queued packets and rings (the guest went away). */
  reset(): void {
    this.rx = this.tx = null;
    this.dropPending();
  }

  /** Forgets packets queued for the guest (its connections are gone). */
  dropPending(): void {
    this.pending = [];
    this.pendingHead = 0;
    this.pendingBytes = 0;
  }

  /** Stops this device for good: the guest broke the rules. */
  fault(err: Error): void {
    if (this.faulted) return;
    this.faulted = true;
    this.reset();
    this.onFault(err);
  }

  /**
   * Queues a packet for the guest, writing it into rx buffers at once when nothing is queued
   * ahead of it. `payload` (views valid only during the call) is copied. Returns false if the
   * packet was refused because the guest is not taking what it already has.
   */
  send(hdr: VsockHeader, payload: readonly Uint8Array[] = [], payloadOff = 0): boolean {
    if (this.faulted) return false;
    let done = 0;
    let complete = false;
    if (!this.hasPending && this.rx) {
      const rx = this.rx;
      let wrote = false;
      const ok = this.guard(() => {
        while (!complete) {
          const chain = rx.pop();
          if (!chain) return;
          const n = this.fill(chain, hdr, payload, payloadOff + done, hdr.len - done);
          if (n < 0) continue;
          wrote = true;
          done += n;
          complete = done >= hdr.len;
        }
      });
      if (!ok) return false;
      if (wrote) this.scheduleNotify(RX_QUEUE);
      if (complete) return true;
    }
    const left = hdr.len - done;
    if (this.pending.length - this.pendingHead >= MAX_PENDING_PACKETS || this.pendingBytes + left > MAX_PENDING_BYTES) return false;
    let data: Uint8Array | null = null;
    if (left > 0) {
      // Not zeroed: gather() overwrites all of it (hdr.len was checked against the buffers).
      data = Buffer.allocUnsafe(left);
      const n = gather(payload, payloadOff + done, data, 0, left);
      if (n !== left) throw new Error("payload shorter than its header says");
    }
    this.pending.push({ hdr: { ...hdr, len: left }, data, off: 0 });
    this.pendingBytes += left;
    return true;
  }

  /**
   * Writes a header and up to `len` payload bytes into one rx chain and returns it to the guest.
   * Returns the payload bytes written, or -1 if the chain was unusable (returned empty).
   */
  private fill(chain: Chain, hdr: VsockHeader, payload: readonly Uint8Array[], off: number, len: number): number {
    const rx = this.rx!;
    const room = chain.writableLen - HDR_LEN;
    if (room < 0 || (len > 0 && room === 0)) {
      rx.push(chain.head, 0);
      this.dropped++;
      return -1;
    }
    const n = Math.min(len, room, MAX_PAYLOAD);
    writeHeader(this.hdrView, hdr, n);
    const first = chain.writable[0]!;
    if (first.length >= HDR_LEN) first.set(this.hdrBuf);
    else scatter(chain.writable, 0, [this.hdrBuf], 0, HDR_LEN);
    if (n > 0) scatter(chain.writable, HDR_LEN, payload, off, n);
    rx.push(chain.head, HDR_LEN + n);
    return n;
  }

  private drainPending(): void {
    const rx = this.rx;
    if (!rx) return;
    let wrote = false;
    while (this.hasPending) {
      const p = this.pending[this.pendingHead]!;
      const chain = rx.pop();
      if (!chain) break;
      const n = this.fill(chain, p.hdr, p.data ? [p.data] : [], p.off, p.hdr.len - p.off);
      if (n < 0) continue;
      wrote = true;
      p.off += n;
      this.pendingBytes -= n;
      if (p.off >= p.hdr.len) {
        this.pending[this.pendingHead++] = undefined as unknown as Pending;
        if (this.pendingHead > 1024 && this.pendingHead * 2 > this.pending.length) {
          this.pending = this.pending.slice(this.pendingHead);
          this.pendingHead = 0;
        }
      }
    }
    if (wrote) this.scheduleNotify(RX_QUEUE);
  }

  private processTx(): void {
    const tx = this.tx;
    if (!tx || this.faulted) return;
    let budget = TX_BUDGET;
    this.guard(() => {
      while (budget-- > 0 && !this.faulted) {
        const chain = tx.pop();
        if (!chain) return;
        this.handleTx(chain);
        tx.push(chain.head, 0);
        this.scheduleNotify(TX_QUEUE);
      }
      // Out of budget with work left: continue on a later turn.
      if (tx.hasAvailable() && !this.txScheduled) {
        this.txScheduled = true;
        setImmediate(() => {
          this.txScheduled = false;
          this.processTx();
        });
      }
    });
  }

  private handleTx(chain: Chain): void {
    if (chain.readableLen < HDR_LEN || chain.writable.length > 0) {
      this.drop("tx buffer is shorter than a header or device-writable");
      return;
    }
    gather(chain.readable, 0, this.hdrBuf, 0, HDR_LEN);
    const hdr = decodeHeader(this.hdrBuf);
    if (hdr.len > MAX_PAYLOAD || hdr.len > chain.readableLen - HDR_LEN || (hdr.op !== Op.RW && hdr.len !== 0)) {
      this.drop(`packet length ${hdr.len} is oversized or does not match its buffer`);
      return;
    }
    try {
      this.sink.fromGuest(this, hdr, chain.readable, HDR_LEN);
    } catch (err) {
      // A fault in our own routing code must not take the fabric down; the packet is lost.
      if (err instanceof RingError) throw err;
      this.log.error({ err }, "internal error while routing a packet");
    }
  }

  /** Counts a dropped packet; logs the first few and then every 1000th. */
  drop(why: string): void {
    this.dropped++;
    if (this.dropped <= 10 || this.dropped % 1000 === 0) this.log.warn({ cid: this.cid, dropped: this.dropped }, `dropped a packet: ${why}`);
  }

  /** Runs ring work; a RingError faults this device. Returns false if it faulted. */
  private guard(fn: () => void): boolean {
    try {
      fn();
      return true;
    } catch (err) {
      if (!(err instanceof RingError)) throw err;
      this.fault(err);
      return false;
    }
  }

  private scheduleNotify(queue: number): void {
    this.notifyDue[queue === RX_QUEUE ? 0 : 1] = true;
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    queueMicrotask(() => this.flushNotify());
  }

  /** Signals the guest for queues with new used buffers (once per batch, not per packet). */
  flushNotify(): void {
    this.notifyScheduled = false;
    if (this.faulted) return;
    // Full fence between our used-index stores and the loads of the guest's NO_INTERRUPT flag
    // (the guest's side of this Dekker pattern is virtio_mb()); a locked add gives one on x86.
    Atomics.add(FENCE, 0, 0);
    const rx = this.notifyDue[0] && this.rx?.wantsInterrupt();
    const tx = this.notifyDue[1] && this.tx?.wantsInterrupt();
    this.notifyDue[0] = this.notifyDue[1] = false;
    // Runs as a microtask: a throw here would be uncaught, so it faults this device instead.
    try {
      if (rx) this.notify(RX_QUEUE);
      if (tx) this.notify(TX_QUEUE);
    } catch (err) {
      this.fault(err instanceof Error ? err : new Error(String(err)));
    }
  }
}

/** Copies n bytes from segments `src` (at logical offset srcOff) into segments `dst` (at dstOff). */
export function scatter(dst: readonly Uint8Array[], dstOff: number, src: readonly Uint8Array[], srcOff: number, n: number): void {
  let di = 0;
  while (di < dst.length && dstOff >= dst[di]!.length) dstOff -= dst[di++]!.length;
  let si = 0;
  while (si < src.length && srcOff >= src[si]!.length) srcOff -= src[si++]!.length;
  while (n > 0 && di < dst.length && si < src.length) {
    const d = dst[di]!;
    const s = src[si]!;
    const k = Math.min(n, d.length - dstOff, s.length - srcOff);
    d.set(k === s.length && srcOff === 0 ? s : s.subarray(srcOff, srcOff + k), dstOff);
    n -= k;
    dstOff += k;
    srcOff += k;
    if (dstOff === d.length) {
      di++;
      dstOff = 0;
    }
    if (srcOff === s.length) {
      si++;
      srcOff = 0;
    }
  }
}
