// The backend side of one vhost-user connection (QEMU docs/interop/vhost-user.rst) for a
// vhost-user-vsock device: feature negotiation, the memory table (memfds mapped through the native
// shim), vring set-up with kick/call eventfds, and the 8-byte config space holding the guest CID.
// The frontend is QEMU on an untrusted host, the rings belong to the guest: every size, index and
// address is checked, and any violation ends this session alone.
import type { Logger } from "../../../proto/src/log.ts";
import { GuestMemory, type MemoryRegion } from "./memory.ts";
import type { FabricNative, Poller } from "./native.ts";
import { RingError, SplitVirtqueue, ringSizes } from "./virtqueue.ts";
import { MAX_REGIONS, ProtocolError, decodeConfig, decodeMemTable, decodeU64, decodeVringAddr, decodeVringBase, decodeVringFd, decodeVringNum, decodeVringState } from "./vhost-user-messages.ts";
import { TX_QUEUE, type VsockDevice } from "./vsock-device.ts";

export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  SET_BACKEND_REQ_FD: 21,
  RESET_DEVICE: 34,
} as const;

const HDR_SIZE = 12;
const MAX_PAYLOAD = 4096;
const FLAG_VERSION = 0x1;
const FLAG_REPLY = 0x4;
const FLAG_NEED_REPLY = 0x8;
const NUM_QUEUES = 3;

const F_PROTOCOL_FEATURES = 1n << 30n;
const F_VERSION_1 = 1n << 32n;
/**
 * VIRTIO_F_ACCESS_PLATFORM (bit 33, once IOMMU_PLATFORM). An SEV-SNP guest's Linux refuses a
 * virtio device that does not offer it: for such a device the driver uses the DMA API, which in
 * an SNP guest bounces every buffer through swiotlb, shared (unencrypted) pages inside guest RAM.
 * That RAM is the memfd QEMU hands us in SET_MEM_TABLE, so the bounce buffers are already mapped
 * here. Without a vIOMMU the ring and buffer addresses stay guest-physical (QEMU even strips the
 * bit from SET_FEATURES then), so nothing changes in how the rings are read. Offering it makes
 * QEMU insist on the REPLY_ACK and BACKEND_REQ protocol features (the IOTLB channel a vIOMMU
 * would use); the backend channel's fd is accepted and kept, and never written to.
 */
export const F_ACCESS_PLATFORM = 1n << 33n;
export const DEVICE_FEATURES = F_VERSION_1 | F_PROTOCOL_FEATURES | F_ACCESS_PLATFORM;
const PF_REPLY_ACK = 1n << 3n;
const PF_BACKEND_REQ = 1n << 5n;
const PF_CONFIG = 1n << 9n;
export const PROTOCOL_FEATURES = PF_REPLY_ACK | PF_BACKEND_REQ | PF_CONFIG;

export { ProtocolError };

interface Vring {
  num: number;
  base: number;
  addr: { desc: number; used: number; avail: number } | null;
  kickFd: number;
  callFd: number;
  kickPoller: Poller | null;
  enabled: boolean;
  vq: SplitVirtqueue | null;
}

interface Mapped {
  region: MemoryRegion;
  ab: ArrayBuffer;
}

function newVring(): Vring {
  return { num: 0, base: 0, addr: null, kickFd: -1, callFd: -1, kickPoller: null, enabled: false, vq: null };
}

/** Serves one frontend connection; calls onClose once when it ends (EOF, error or cut-off). */
export class VhostUserSession {
  private readonly poller: Poller;
  private readonly hdrBuf = new Uint8Array(HDR_SIZE);
  private payload: Uint8Array | null = null;
  private got = 0;
  private fds: number[] = [];
  private features = 0n;
  private protocolFeatures = 0n;
  private backendReqFd = -1;
  /** Whether SET_FEATURES came in this session. */
  featuresSet = false;
  private mapped: Mapped[] = [];
  private memory: GuestMemory | null = null;
  private readonly vrings: Vring[] = Array.from({ length: NUM_QUEUES }, newVring);
  private closed = false;

  constructor(
    private readonly native: FabricNative,
    private readonly fd: number,
    private readonly cid: number,
    private readonly device: VsockDevice,
    private readonly log: Logger,
    private readonly onClose: (reason: Error | null) => void,
    private readonly onStopped: () => void = () => undefined,
  ) {
    this.poller = new native.Poller(fd, (err) => this.onReadable(err));
    this.poller.start(true);
  }

  /** Raises the call eventfd of a queue (the device has used buffers for the guest). */
  notify(queue: number): void {
    const v = this.vrings[queue];
    if (!v || v.callFd < 0 || this.closed) return;
    try {
      this.native.eventfdWrite(v.callFd);
    } catch (e) {
      this.close(e instanceof Error ? e : new Error(String(e)));
    }
  }

  close(reason: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    this.poller.close();
    this.stopAll();
    for (const v of this.vrings) {
      if (v.callFd >= 0) this.native.close(v.callFd);
      v.callFd = -1;
    }
    this.unmapAll();
    if (this.backendReqFd >= 0) this.native.close(this.backendReqFd);
    this.backendReqFd = -1;
    for (const fd of this.fds) this.native.close(fd);
    this.fds = [];
    this.native.close(this.fd);
    this.onClose(reason);
  }

  private onReadable(err: string | null): void {
    if (this.closed) return;
    try {
      if (err) throw new ProtocolError(`socket error: ${err}`);
      // Bounded loop: a frontend that floods us yields the event loop every 64 messages.
      for (let i = 0; i < 64 && !this.closed; i++) if (!this.readSome()) return;
    } catch (e) {
      this.close(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Reads what is there of the current message; returns false when the socket is drained. */
  private readSome(): boolean {
    const target = this.payload ?? this.hdrBuf;
    const r = this.native.recvMsg(this.fd, target.subarray(this.got));
    if (r === null) return false;
    for (const fd of r.fds) this.fds.push(fd);
    if (r.truncated || this.fds.length > MAX_REGIONS) throw new ProtocolError("too many file descriptors in a message");
    if (r.bytes === 0) {
      this.close(null);
      return false;
    }
    this.got += r.bytes;
    if (this.got < target.length) return true;
    if (this.payload === null) {
      const dv = new DataView(this.hdrBuf.buffer);
      const size = dv.getUint32(8, true);
      if (size > MAX_PAYLOAD) throw new ProtocolError(`message of ${size} bytes`);
      this.payload = new Uint8Array(size);
      this.got = 0;
      if (size > 0) return true;
    }
    const dv = new DataView(this.hdrBuf.buffer);
    const request = dv.getUint32(0, true);
    const flags = dv.getUint32(4, true);
    const body = this.payload;
    const fds = this.fds;
    this.payload = null;
    this.got = 0;
    this.fds = [];
    try {
      this.handle(request, flags, body, fds);
    } finally {
      // Whatever fds the handler did not take (splice()d out) are closed, never leaked.
      for (const fd of fds) this.native.close(fd);
    }
    return true;
  }

  private reply(request: number, body: Uint8Array): void {
    // A request can end the session while it is handled (the device faults when a ring starts):
    // its fd is closed then, and its number may already belong to another file.
    if (this.closed) return;
    const out = new Uint8Array(HDR_SIZE + body.length);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, request, true);
    dv.setUint32(4, FLAG_VERSION | FLAG_REPLY, true);
    dv.setUint32(8, body.length, true);
    out.set(body, HDR_SIZE);
    this.native.send(this.fd, out);
  }

  private replyU64(request: number, v: bigint): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v, true);
    this.reply(request, b);
  }

  /** Features the frontend last set (what the driver negotiated, as QEMU passes it on). */
  get negotiatedFeatures(): bigint {
    return this.features;
  }

  private vring(i: number): Vring {
    const ring = this.vrings[i];
    if (!ring) throw new ProtocolError(`vring index ${i}`);
    return ring;
  }

  /** Decodes a request with vhost-user-messages.ts and hands it to what acts on it. */
  private handle(request: number, flags: number, body: Uint8Array, fds: number[]): void {
    if ((flags & 0x3) !== FLAG_VERSION) throw new ProtocolError(`message version ${flags & 0x3}`);
    let replied = false;
    switch (request) {
      case Req.GET_FEATURES:
        this.replyU64(request, DEVICE_FEATURES);
        replied = true;
        break;
      case Req.SET_FEATURES:
        this.setFeatures(decodeU64(body, "SET_FEATURES"));
        break;
      case Req.GET_PROTOCOL_FEATURES:
        this.replyU64(request, PROTOCOL_FEATURES);
        replied = true;
        break;
      case Req.SET_PROTOCOL_FEATURES:
        this.protocolFeatures = decodeU64(body, "SET_PROTOCOL_FEATURES") & PROTOCOL_FEATURES;
        break;
      case Req.GET_QUEUE_NUM:
        this.replyU64(request, BigInt(NUM_QUEUES));
        replied = true;
        break;
      case Req.SET_OWNER:
        break;
      case Req.RESET_OWNER:
      case Req.RESET_DEVICE:
        this.stopAll();
        this.unmapAll();
        this.features = 0n;
        break;
      case Req.SET_MEM_TABLE:
        this.setMemTable(body, fds);
        break;
      case Req.SET_VRING_NUM: {
        const s = decodeVringNum(body);
        this.vring(s.index).num = s.num;
        break;
      }
      case Req.SET_VRING_BASE: {
        const s = decodeVringBase(body);
        this.vring(s.index).base = s.num;
        break;
      }
      case Req.SET_VRING_ADDR: {
        const a = decodeVringAddr(body);
        this.vring(a.index).addr = { desc: a.desc, used: a.used, avail: a.avail };
        break;
      }
      case Req.GET_VRING_BASE:
        this.getVringBase(decodeVringState(body, "GET_VRING_BASE").index);
        replied = true;
        break;
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR:
        this.setVringFd(request, body, fds);
        break;
      case Req.SET_VRING_ENABLE: {
        const s = decodeVringState(body, "SET_VRING_ENABLE");
        const v = this.vring(s.index);
        v.enabled = s.num === 1;
        if (v.enabled) this.startRing(s.index);
        else this.stopRing(s.index);
        break;
      }
      case Req.SET_BACKEND_REQ_FD: {
        if (fds.length !== 1) throw new ProtocolError("SET_BACKEND_REQ_FD without exactly one fd");
        if (this.backendReqFd >= 0) this.native.close(this.backendReqFd);
        this.backendReqFd = fds.splice(0, 1)[0]!;
        break;
      }
      case Req.GET_CONFIG:
        this.reply(request, this.config(body));
        replied = true;
        break;
      case Req.SET_CONFIG:
        break; // the guest CID is ours to say; writes are ignored
      default:
        throw new ProtocolError(`unsupported request ${request}`);
    }
    if (!replied && flags & FLAG_NEED_REPLY && this.protocolFeatures & PF_REPLY_ACK) this.replyU64(request, 0n);
  }

  private setFeatures(f: bigint): void {
    if (f & ~DEVICE_FEATURES) throw new ProtocolError("frontend set features we did not offer");
    this.features = f;
    this.featuresSet = true;
    this.log.debug({ cid: this.cid, features: `0x${f.toString(16)}`, accessPlatform: (f & F_ACCESS_PLATFORM) !== 0n }, "features negotiated");
  }

  private getVringBase(i: number): void {
    const v = this.vring(i);
    this.stopRing(i);
    // The device is being stopped (guest reset, shutdown): its connections cannot survive.
    if (i === TX_QUEUE) this.onStopped();
    const b = new Uint8Array(8);
    const o = new DataView(b.buffer);
    o.setUint32(0, i, true);
    o.setUint32(4, v.base, true);
    this.reply(Req.GET_VRING_BASE, b);
  }

  private setVringFd(request: number, body: Uint8Array, fds: number[]): void {
    const { index: i, noFd } = decodeVringFd(body);
    const v = this.vring(i);
    if (!noFd && fds.length !== 1) throw new ProtocolError(`request ${request} without exactly one fd`);
    const fd = noFd ? -1 : fds.splice(0, 1)[0]!;
    if (request === Req.SET_VRING_ERR) {
      if (fd >= 0) this.native.close(fd);
    } else if (request === Req.SET_VRING_CALL) {
      if (v.callFd >= 0) this.native.close(v.callFd);
      v.callFd = fd;
    } else {
      this.stopRing(i);
      if (v.kickFd >= 0) this.native.close(v.kickFd);
      v.kickFd = fd;
      // Without PROTOCOL_FEATURES a ring starts on its kick fd; with it, on SET_VRING_ENABLE.
      if (!(this.features & F_PROTOCOL_FEATURES)) v.enabled = true;
      this.startRing(i);
    }
  }

  /** GET_CONFIG's reply: the request's header, then struct virtio_vsock_config { le64 guest_cid; }. */
  private config(body: Uint8Array): Uint8Array {
    const { offset, size } = decodeConfig(body);
    const out = new Uint8Array(12 + size);
    out.set(body.subarray(0, 12));
    const cfg = new Uint8Array(8);
    new DataView(cfg.buffer).setBigUint64(0, BigInt(this.cid), true);
    for (let k = 0; k < size; k++) out[12 + k] = offset + k < 8 ? cfg[offset + k]! : 0;
    return out;
  }

  private setMemTable(body: Uint8Array, fds: number[]): void {
    const regions = decodeMemTable(body);
    const n = regions.length;
    if (fds.length !== n) throw new ProtocolError(`SET_MEM_TABLE with ${n} regions and ${fds.length} fds`);
    const running = this.vrings.map((v) => v.vq !== null);
    this.stopAll();
    this.unmapAll();
    const mapped: Mapped[] = [];
    try {
      regions.forEach((r, i) => {
        const ab = this.native.mmap(fds[i]!, r.mmapOffset + r.size);
        const bytes = new Uint8Array(ab, r.mmapOffset, r.size);
        mapped.push({ ab, region: { gpa: r.gpa, uva: r.uva, size: r.size, bytes } });
      });
    } catch (e) {
      for (const m of mapped) this.native.munmap(m.ab);
      throw e;
    }
    this.mapped = mapped;
    this.memory = new GuestMemory(mapped.map((m) => m.region));
    this.log.debug({ cid: this.cid, regions: n }, "guest memory mapped");
    running.forEach((was, i) => was && this.startRing(i));
  }

  /** Starts serving ring i if it is fully set up and enabled. */
  private startRing(i: number): void {
    const v = this.vrings[i]!;
    if (v.vq || !v.enabled || v.kickFd < 0 || !v.addr || !this.memory || v.num === 0) return;
    if (i === 2) return; // event queue: we send no events
    const sz = ringSizes(v.num);
    const desc = this.memory.viewUva(v.addr.desc, sz.desc);
    const avail = this.memory.viewUva(v.addr.avail, sz.avail);
    const used = this.memory.viewUva(v.addr.used, sz.used);
    if (!desc || !avail || !used) throw new ProtocolError(`vring ${i} lies outside guest memory`);
    try {
      v.vq = new SplitVirtqueue(v.num, this.memory, { desc, avail, used }, v.base);
    } catch (e) {
      if (e instanceof RingError) throw new ProtocolError(e.message);
      throw e;
    }
    const poller = new this.native.Poller(v.kickFd, (err) => {
      if (err || this.closed) return;
      // This runs straight from the event loop: nothing may escape, or the fabric would crash.
      try {
        if (this.native.eventfdRead(v.kickFd) > 0) this.device.kick(i);
      } catch (e) {
        this.log.error({ err: (e as Error).message }, "internal error while serving a queue");
        this.close(e instanceof Error ? e : new Error(String(e)));
      }
    });
    poller.start(true);
    v.kickPoller = poller;
    this.device.setQueue(i, v.vq);
  }

  private stopRing(i: number): void {
    const v = this.vrings[i]!;
    if (v.vq) {
      v.base = v.vq.nextAvail;
      this.device.setQueue(i, null);
      v.vq = null;
    }
    v.kickPoller?.close();
    v.kickPoller = null;
  }

  private stopAll(): void {
    for (let i = 0; i < NUM_QUEUES; i++) {
      this.stopRing(i);
      const v = this.vrings[i]!;
      if (v.kickFd >= 0) this.native.close(v.kickFd);
      v.kickFd = -1;
    }
  }

  private unmapAll(): void {
    this.memory = null;
    for (const m of this.mapped) this.native.munmap(m.ab);
    this.mapped = [];
  }
}
