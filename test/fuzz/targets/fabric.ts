// Fuzz targets on the vsock fabric's decoders of guest- and QEMU-supplied bytes: vsock packets
// through the real device and router, split virtqueues, and the vhost-user message stream.
import pino from "pino";
import type { Logger } from "../../../proto/src/log.ts";
import { GuestMemory } from "../../../host-tools/src/fabric/memory.ts";
import type { FabricNative, Poller, RecvResult } from "../../../host-tools/src/fabric/native.ts";
import { Router } from "../../../host-tools/src/fabric/router.ts";
import { GPA_BASE, SyntheticGuest, header } from "../../../host-tools/src/fabric/synthetic-guest.ts";
import { DEVICE_FEATURES, PROTOCOL_FEATURES, ProtocolError, Req, VhostUserSession } from "../../../host-tools/src/fabric/vhost-user.ts";
import { RingError, SplitVirtqueue, gather, ringSizes } from "../../../host-tools/src/fabric/virtqueue.ts";
import { TX_QUEUE, VsockDevice } from "../../../host-tools/src/fabric/vsock-device.ts";
import { HDR_LEN, Op, decodeHeader, encodeHeader, type VsockHeader } from "../../../host-tools/src/fabric/vsock-packet.ts";
import { Refused, Violation, type DecoderTarget, type TargetFactory } from "../engine.ts";
import type { Field, Rng, Seed } from "../mutate.ts";

/** A logger that keeps error-level lines: the fabric logs its own internal faults that way. */
function errorRecorder(): { log: Logger; errors: string[] } {
  const errors: string[] = [];
  return { log: pino({ level: "error" }, { write: (line: string) => void errors.push(line) }), errors };
}

// ---- vsock packets: a hostile guest's packet stream through the real device and router ----

function packet(h: Partial<VsockHeader> & Pick<VsockHeader, "op">, payload = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(HDR_LEN + payload.length);
  encodeHeader(header({ srcCid: 3, dstCid: 4, srcPort: 1000, dstPort: 80, ...h, len: payload.length }), b);
  payload.copy(b, HDR_LEN);
  return b;
}

function packetSeed(name: string, packets: Buffer[]): Seed {
  const fields: Field[] = [];
  let off = 0;
  for (const p of packets) {
    for (const [o, size] of [[0, 8], [8, 8], [16, 4], [20, 4], [24, 4], [28, 2], [30, 2], [32, 4], [36, 4], [40, 4]] as const) fields.push({ off: off + o, size, le: true });
    off += p.length;
  }
  return { name, data: Buffer.concat(packets), fields };
}

const vsockPacket: TargetFactory = {
  name: "vsock-packet",
  what: "virtio-vsock packets a guest sends (vsock-packet.ts decodeHeader, the device's tx path, the router's connection state)",
  create(): DecoderTarget {
    const rec = errorRecorder();
    const guests = new Map([3, 4].map((cid) => [cid, new SyntheticGuest(cid, { queueSize: 8, memSize: 512 * 1024, guard: 4096 })]));
    const hello = Buffer.from("hello");
    const seeds = [
      packetSeed("stream to the peer", [
        packet({ op: Op.REQUEST }),
        packet({ op: Op.RW }, hello),
        packet({ op: Op.CREDIT_REQUEST }),
        packet({ op: Op.CREDIT_UPDATE, fwdCnt: 5 }),
        packet({ op: Op.RW }, Buffer.alloc(3000, 0x61)),
        packet({ op: Op.SHUTDOWN, flags: 3 }),
        packet({ op: Op.RST }),
      ]),
      packetSeed("two connections", [
        packet({ op: Op.REQUEST, srcPort: 1001 }),
        packet({ op: Op.REQUEST, srcPort: 1002, dstPort: 81 }),
        packet({ op: Op.RW, srcPort: 1002, dstPort: 81 }, hello),
        packet({ op: Op.RW, srcPort: 1001 }, hello),
        packet({ op: Op.RST, srcPort: 1001 }),
      ]),
      packetSeed("host ports", [packet({ op: Op.REQUEST, dstCid: 2, dstPort: 1024 }), packet({ op: Op.RW, dstCid: 2, dstPort: 1024 }, hello), packet({ op: Op.SHUTDOWN, dstCid: 2, dstPort: 1024, flags: 3 }), packet({ op: Op.REQUEST, dstCid: 2, dstPort: 9999 })]),
      packetSeed("unknown peer", [packet({ op: Op.REQUEST, dstCid: 99 }), packet({ op: Op.RW, dstCid: 99 }, hello)]),
    ];
    const run = (input: Buffer, rng: Rng): void => {
      const router = new Router(rec.log);
      const faults: number[] = [];
      rec.errors.length = 0;
      const mk = (cid: number): SyntheticGuest => {
        const g = guests.get(cid)!;
        g.reset();
        const dev = new VsockDevice(cid, router, () => undefined, () => faults.push(cid), rec.log);
        // A may reach host port 1024 (no one listens there: the connect fails later, asynchronously).
        router.addVm({ cid, groups: new Set(["g"]), udsPath: "/nonexistent/airlock-fuzz", ...(cid === 3 ? { hostPorts: new Set([1024]) } : {}), device: dev });
        g.attach(dev);
        return g;
      };
      const a = mk(3);
      const b = mk(4);
      try {
        exchange(a, b, input, rng, faults);
      } finally {
        // Late events (a failed host connect) must not reach RAM the next case reuses.
        router.vmDown(3);
        router.vmDown(4);
        a.device?.reset();
        b.device?.reset();
      }
    };
    const exchange = (a: SyntheticGuest, b: SyntheticGuest, input: Buffer, rng: Rng, faults: number[]): void => {
      // B: a well-behaved peer that accepts every connection and returns credit.
      const serveB = (): void => {
        for (let round = 0; round < 4; round++) {
          const got = b.receive();
          if (got.length === 0) return;
          for (const p of got) {
            if (b.txRoom() === 0) return;
            if (p.hdr.op === Op.REQUEST) b.send(header({ srcCid: 4, dstCid: p.hdr.srcCid, srcPort: p.hdr.dstPort, dstPort: p.hdr.srcPort, op: Op.RESPONSE }));
            else if (p.hdr.op === Op.RW && rng.chance(0.5)) b.send(header({ srcCid: 4, dstCid: p.hdr.srcCid, srcPort: p.hdr.dstPort, dstPort: p.hdr.srcPort, op: Op.CREDIT_UPDATE, fwdCnt: p.payload.length }));
          }
        }
      };
      // Cut the input into packets as a guest's tx buffers: a header, then as many payload bytes
      // as its len field says (what is left, at the end); a tail under 44 bytes is a short buffer.
      for (let off = 0; off < input.length; ) {
        const avail = input.length - off;
        const len = avail >= HDR_LEN ? Math.min(input.readUInt32LE(off + 24), 65536, avail - HDR_LEN) : 0;
        const pkt = input.subarray(off, off + (avail >= HDR_LEN ? HDR_LEN + len : avail));
        off += pkt.length;
        if (pkt.length >= HDR_LEN) decodeHeader(pkt); // never throws on a whole header
        if (a.txRoom() === 0) throw new Violation("the device did not take the guest's tx buffers back");
        a.queuePacket(header({ srcCid: 3, dstCid: 4, op: Op.RW }), pkt.subarray(HDR_LEN));
        // The raw header bytes (or a short buffer) replace the ones queuePacket wrote.
        const r = a.tx;
        const head = a.ram.readUInt16LE(r.availOff + 4 + 2 * ((r.availIdx + 0xffff) % r.size));
        const at = a.ram.readUInt32LE(r.descOff + 16 * head) - GPA_BASE;
        pkt.copy(a.ram, at, 0, Math.min(HDR_LEN, pkt.length));
        if (pkt.length < HDR_LEN) {
          a.ram.writeUInt32LE(pkt.length, r.descOff + 16 * head + 8);
          a.ram.writeUInt16LE(0, r.descOff + 16 * head + 12);
        }
        if (rng.chance(0.7) || a.txRoom() === 0) a.device!.kick(TX_QUEUE);
        serveB();
        a.receive();
      }
      a.device!.kick(TX_QUEUE);
      serveB();
      a.receive();
      if (!a.guardsIntact() || !b.guardsIntact()) throw new Violation("guard bytes around guest RAM changed");
      if (faults.length > 0) throw new Violation(`guest ${faults[0]} was cut off, though its rings are well-formed (only packet contents were hostile)`);
      if (rec.errors.length > 0) throw new Violation(`internal error logged: ${rec.errors[0]!.trim()}`);
      b.receive();
      b.send(header({ srcCid: 4, dstCid: 77, srcPort: 9, dstPort: 9, op: Op.REQUEST }));
      if (!b.receive().some((p) => p.hdr.op === Op.RST)) throw new Violation("the well-behaved guest stopped routing (no RST for a REQUEST to an unknown CID)");
    };
    return { name: this.name, what: this.what, seeds, dict: [], maxLen: 200_000, refusal: () => false, run };
  },
};

// ---- split virtqueues: descriptor tables and rings a guest wrote ----

const VQ_RAM = 64 * 1024;
const VQ_GPA = 0x10000;
const VQ_AVAIL = 0x4000;
const VQ_USED = 0x5000;
const VQ_DATA = 0x8000;

function vqSeed(name: string, size: number, lastAvail: number, chains: { bufs: { len: number; write: boolean }[] }[], writes: [number, number][] = []): Seed {
  const s = ringSizes(size);
  const desc = Buffer.alloc(s.desc);
  const avail = Buffer.alloc(s.avail);
  const used = Buffer.alloc(s.used);
  let d = 0;
  let data = VQ_DATA;
  let idx = lastAvail;
  for (const c of chains) {
    const head = d;
    c.bufs.forEach((buf, k) => {
      desc.writeBigUInt64LE(BigInt(VQ_GPA + data), 16 * d);
      desc.writeUInt32LE(buf.len, 16 * d + 8);
      desc.writeUInt16LE((k < c.bufs.length - 1 ? 1 : 0) | (buf.write ? 2 : 0), 16 * d + 12);
      desc.writeUInt16LE(k < c.bufs.length - 1 ? d + 1 : 0, 16 * d + 14);
      data += buf.len;
      d++;
    });
    avail.writeUInt16LE(head, 4 + 2 * (idx % size));
    idx = (idx + 1) & 0xffff;
  }
  avail.writeUInt16LE(idx, 2);
  used.writeUInt16LE(lastAvail, 2);
  const headerBytes = Buffer.alloc(4);
  headerBytes.writeUInt16LE(size, 0);
  headerBytes.writeUInt16LE(lastAvail, 2);
  const w = Buffer.alloc(3 * writes.length);
  writes.forEach(([o, v], i) => {
    w.writeUInt16LE(o, 3 * i);
    w[3 * i + 2] = v;
  });
  const fields: Field[] = [
    { off: 0, size: 2, le: true },
    { off: 2, size: 2, le: true },
    { off: 4 + s.desc + 2, size: 2, le: true },
    ...Array.from({ length: size }, (_, i) => [
      { off: 4 + 16 * i, size: 8 as const, le: true },
      { off: 4 + 16 * i + 8, size: 4 as const, le: true },
      { off: 4 + 16 * i + 12, size: 2 as const, le: true },
      { off: 4 + 16 * i + 14, size: 2 as const, le: true },
      { off: 4 + s.desc + 4 + 2 * i, size: 2 as const, le: true },
    ]).flat(),
  ];
  return { name, data: Buffer.concat([headerBytes, desc, avail, used, w]), fields };
}

const virtqueue: TargetFactory = {
  name: "virtqueue",
  what: "split virtqueues a guest laid out (virtqueue.ts SplitVirtqueue: size, descriptors, avail ring, rewrites between pops)",
  create(): DecoderTarget {
    const backing = Buffer.alloc(VQ_RAM + 2 * 4096);
    const ram = backing.subarray(4096, 4096 + VQ_RAM);
    const mem = new GuestMemory([{ gpa: VQ_GPA, uva: 0x7000_0000_0000, size: VQ_RAM, bytes: new Uint8Array(backing.buffer, backing.byteOffset + 4096, VQ_RAM) }]);
    const rx = { bufs: [{ len: 44, write: true }, { len: 4096, write: true }] };
    const tx = { bufs: [{ len: 44, write: false }, { len: 100, write: false }] };
    const seeds = [
      vqSeed("rx chains", 8, 0, [rx, rx, rx, rx]),
      vqSeed("tx chains", 8, 0, [tx, tx, { bufs: [{ len: 44, write: false }] }]),
      vqSeed("mixed chain, index wrap", 4, 0xfffe, [{ bufs: [{ len: 44, write: false }, { len: 8, write: true }] }, tx]),
      vqSeed("rewritten while popped", 16, 5, [tx, rx, tx, rx], [[4 + 16 * 8 + 2, 0xff], [4 + 8, 0x40]]),
    ];
    const run = (input: Buffer): void => {
      backing.fill(0xa5, 0, 4096);
      backing.fill(0xa5, 4096 + VQ_RAM);
      ram.fill(0);
      const size = input.length >= 2 ? input.readUInt16LE(0) : 0;
      const lastAvail = input.length >= 4 ? input.readUInt16LE(2) : 0;
      const layout = ringSizes(size >= 1 && size <= 1024 ? size : 8);
      let off = 4;
      for (const [at, len] of [[0, layout.desc], [VQ_AVAIL, layout.avail], [VQ_USED, layout.used]] as const) {
        if (off < input.length) input.copy(ram, at, off, Math.min(input.length, off + len));
        off += len;
      }
      const want = ringSizes(Math.min(size, 1 << 15));
      let vq: SplitVirtqueue;
      try {
        vq = new SplitVirtqueue(size, mem, { desc: ram.subarray(0, Math.min(want.desc, VQ_AVAIL)), avail: ram.subarray(VQ_AVAIL, VQ_AVAIL + Math.min(want.avail, VQ_USED - VQ_AVAIL)), used: ram.subarray(VQ_USED, VQ_USED + Math.min(want.used, VQ_DATA - VQ_USED)) }, lastAvail);
      } catch (err) {
        if (err instanceof RingError) throw new Refused(err.message);
        throw err;
      }
      const tmp = Buffer.alloc(256);
      let refused: RingError | null = null;
      const lo = ram.byteOffset;
      const hi = ram.byteOffset + ram.length;
      try {
        for (let pops = 0; pops < 3 * size + 4; pops++) {
          // The guest rewrites a ring byte between two pops.
          if (off + 3 <= input.length) {
            const o = input.readUInt16LE(off) % VQ_DATA;
            ram[o] = input[off + 2]!;
            off += 3;
          }
          vq.hasAvailable();
          vq.wantsInterrupt();
          const chain = vq.pop();
          if (!chain) {
            if (off + 3 <= input.length) continue;
            break;
          }
          let r = 0;
          let w = 0;
          for (const v of chain.readable) r += v.length;
          for (const v of chain.writable) w += v.length;
          if (r !== chain.readableLen || w !== chain.writableLen) throw new Violation("chain lengths do not add up");
          if (chain.readable.length + chain.writable.length > size) throw new Violation(`a chain of ${chain.readable.length + chain.writable.length} buffers in a queue of ${size}`);
          if (chain.head >= size) throw new Violation(`chain head ${chain.head} of ${size}`);
          for (const v of [...chain.readable, ...chain.writable]) {
            if (v.buffer !== backing.buffer || v.byteOffset < lo || v.byteOffset + v.length > hi) throw new Violation("a descriptor buffer lies outside guest memory");
          }
          gather(chain.readable, 0, tmp, 0, tmp.length);
          vq.push(chain.head, Math.min(chain.writableLen, 64));
        }
      } catch (err) {
        if (!(err instanceof RingError)) throw err;
        refused = err;
      }
      if (!backing.subarray(0, 4096).every((x) => x === 0xa5) || !backing.subarray(4096 + VQ_RAM).every((x) => x === 0xa5)) throw new Violation("guard bytes around guest RAM changed");
      if (refused) throw new Refused(refused.message);
    };
    return { name: this.name, what: this.what, seeds, dict: [], maxLen: 64 * 1024, refusal: () => false, run };
  },
};

// ---- vhost-user: the message stream QEMU (an untrusted host process) sends the backend ----

class FakeNativeError extends Error {
  override name = "FakeNativeError";
}

/** Where the backend made a call it should not have (the first frames of the stack). */
function where(): string {
  const frames = (new Error().stack ?? "").split("\n").slice(3, 9).map((l) => l.trim());
  return `\n    ${frames.join("\n    ")}`;
}

const SESSION_FD = 10;
const MAX_MMAP = 1 << 20;

/** The native shim as a deterministic in-memory fake that checks fd and mapping hygiene. */
class FakeNative implements FabricNative {
  readonly Poller: FabricNative["Poller"];
  readonly violations: string[] = [];
  private pos = 0;
  private nextFd = 100;
  /** fd → open? (false once closed). */
  readonly fds = new Map<number, boolean>([[SESSION_FD, true]]);
  readonly mapped = new Set<ArrayBuffer>();
  readonly pollers: { fd: number; cb: (err: string | null, events: number) => void; closed: boolean }[] = [];
  /** Message starts in the input → fds that come with that message. */
  private readonly fdPlan = new Map<number, number>();

  constructor(
    private readonly input: Buffer,
    private readonly rng: Rng,
  ) {
    const pollers = this.pollers;
    const violations = this.violations;
    this.Poller = class implements Poller {
      private readonly entry: { fd: number; cb: (err: string | null, events: number) => void; closed: boolean };
      constructor(fd: number, cb: (err: string | null, events: number) => void) {
        this.entry = { fd, cb, closed: false };
        pollers.push(this.entry);
      }
      start(): void {
        if (this.entry.closed) violations.push("a closed poller was started");
      }
      stop(): void {}
      close(): void {
        this.entry.closed = true;
      }
    };
    for (let p = 0; p + 12 <= input.length; ) {
      const request = input.readUInt32LE(p);
      const size = input.readUInt32LE(p + 8);
      let n = 0;
      if (request === Req.SET_MEM_TABLE) n = p + 16 <= input.length ? Math.min(input.readUInt32LE(p + 12), 9) : 0;
      else if (request === Req.SET_VRING_KICK || request === Req.SET_VRING_CALL || request === Req.SET_VRING_ERR) n = 1;
      // A hostile frontend sends fds nobody asked for, or none where one is due.
      if (rng.chance(0.05)) n = rng.int(3);
      this.fdPlan.set(p, n);
      if (size > 4096) break;
      p += 12 + size;
    }
  }

  private checkOpen(fd: number, what: string): void {
    if (this.fds.get(fd) !== true) this.violations.push(`${what} on fd ${fd}, which is ${this.fds.has(fd) ? "closed" : "not ours"}${where()}`);
  }

  listenUnix(): number {
    throw new FakeNativeError("listenUnix");
  }
  accept(): number {
    throw new FakeNativeError("accept");
  }
  recvMsg(fd: number, buf: Uint8Array): RecvResult | null {
    this.checkOpen(fd, "recvmsg");
    if (this.pos >= this.input.length) return { bytes: 0, fds: [], truncated: false };
    const n = Math.min(buf.length, this.input.length - this.pos, this.rng.chance(0.2) ? 1 + this.rng.int(16) : Infinity);
    const fds: number[] = [];
    const count = this.fdPlan.get(this.pos) ?? 0;
    for (let i = 0; i < count; i++) {
      const f = this.nextFd++;
      this.fds.set(f, true);
      fds.push(f);
    }
    buf.set(this.input.subarray(this.pos, this.pos + n));
    this.pos += n;
    return { bytes: n, fds, truncated: false };
  }
  send(fd: number, buf: Uint8Array): number {
    this.checkOpen(fd, "send");
    return buf.length;
  }
  close(fd: number): void {
    if (this.fds.get(fd) !== true) this.violations.push(`close of fd ${fd}, which is ${this.fds.has(fd) ? "already closed" : "not ours"}${where()}`);
    else this.fds.set(fd, false);
  }
  mmap(fd: number, length: number): ArrayBuffer {
    this.checkOpen(fd, "mmap");
    if (!Number.isSafeInteger(length) || length <= 0) this.violations.push(`mmap of ${length} bytes`);
    if (length > MAX_MMAP) throw new FakeNativeError(`mmap: cannot map ${length} bytes (ENOMEM)`);
    const ab = new ArrayBuffer(length);
    this.mapped.add(ab);
    return ab;
  }
  munmap(buf: ArrayBuffer): void {
    if (!this.mapped.delete(buf)) this.violations.push("munmap of a buffer that is not mapped");
  }
  eventfdRead(fd: number): number {
    this.checkOpen(fd, "eventfd read");
    return 1;
  }
  eventfdWrite(fd: number): void {
    this.checkOpen(fd, "eventfd write");
  }
}

function msg(request: number, body: Buffer = Buffer.alloc(0), flags = 1): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt32LE(request, 0);
  h.writeUInt32LE(flags, 4);
  h.writeUInt32LE(body.length, 8);
  return Buffer.concat([h, body]);
}

function u64(...vs: (bigint | number)[]): Buffer {
  const b = Buffer.alloc(8 * vs.length);
  vs.forEach((v, i) => b.writeBigUInt64LE(BigInt(v), 8 * i));
  return b;
}

function u32(...vs: number[]): Buffer {
  const b = Buffer.alloc(4 * vs.length);
  vs.forEach((v, i) => b.writeUInt32LE(v, 4 * i));
  return b;
}

function vhostSeed(name: string, msgs: Buffer[]): Seed {
  const fields: Field[] = [];
  let off = 0;
  for (const m of msgs) {
    fields.push({ off, size: 4, le: true }, { off: off + 4, size: 4, le: true }, { off: off + 8, size: 4, le: true });
    for (let o = 12; o + 8 <= m.length; o += 8) fields.push({ off: off + o, size: 8, le: true }, { off: off + o, size: 4, le: true }, { off: off + o + 4, size: 4, le: true });
    off += m.length;
  }
  return { name, data: Buffer.concat(msgs), fields };
}

/** QEMU 7.2's vhost-user-vsock start-up: negotiation, one memory region, rx and tx rings. */
function qemuStartup(regions: { gpa: number; size: number; uva: bigint; off: number }[], needReply = false): Buffer[] {
  const f = needReply ? 1 | 8 : 1;
  const UVA = regions[0]!.uva;
  const ring = (i: number): Buffer[] => {
    const base = UVA + BigInt(0x1000 * (2 * i + 1));
    return [
      msg(Req.SET_VRING_NUM, u32(i, 8), f),
      msg(Req.SET_VRING_BASE, u32(i, 0), f),
      msg(Req.SET_VRING_ADDR, Buffer.concat([u32(i, 0), u64(base, base + 0x800n, base + 0x200n, 0)]), f),
      msg(Req.SET_VRING_KICK, u64(i)),
      msg(Req.SET_VRING_CALL, u64(i)),
      msg(Req.SET_VRING_ENABLE, u32(i, 1), f),
    ];
  };
  return [
    msg(Req.GET_FEATURES),
    msg(Req.GET_PROTOCOL_FEATURES),
    msg(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_FEATURES)),
    msg(Req.GET_QUEUE_NUM),
    msg(Req.SET_OWNER),
    msg(Req.SET_FEATURES, u64(DEVICE_FEATURES), f),
    msg(Req.GET_CONFIG, Buffer.concat([u32(0, 8, 0), Buffer.alloc(8)])),
    msg(Req.SET_MEM_TABLE, Buffer.concat([u32(regions.length, 0), ...regions.map((r) => u64(r.gpa, r.size, r.uva, r.off))]), f),
    ...ring(0),
    ...ring(1),
    msg(Req.SET_VRING_CALL, u64(2 | 0x100)),
    msg(Req.SET_VRING_ERR, u64(0)),
  ];
}

const vhostUser: TargetFactory = {
  name: "vhost-user",
  what: "vhost-user messages from QEMU (vhost-user.ts VhostUserSession over a fake native shim that checks fds and mappings)",
  create(): DecoderTarget {
    const rec = errorRecorder();
    const region = { gpa: 0, size: 0x10000, uva: 0x7f0000000000n, off: 0 };
    const seeds = [
      vhostSeed("QEMU start-up", [...qemuStartup([region]), msg(Req.GET_VRING_BASE, u32(0, 0)), msg(Req.GET_VRING_BASE, u32(1, 0))]),
      vhostSeed("start-up with reply-ack, two regions, reset", [
        ...qemuStartup([region, { gpa: 0x100000, size: 0x8000, uva: 0x7f0000100000n, off: 0x1000 }], true),
        msg(Req.SET_VRING_ENABLE, u32(0, 0)),
        msg(Req.RESET_DEVICE),
        msg(Req.SET_CONFIG, Buffer.alloc(20)),
      ]),
      vhostSeed("new memory table while running", [...qemuStartup([region]), msg(Req.SET_MEM_TABLE, Buffer.concat([u32(1, 0), u64(0, 0x20000, 0x7f0000000000n, 0)])), msg(Req.RESET_OWNER)]),
    ];
    const run = (input: Buffer, rng: Rng): void => {
      rec.errors.length = 0;
      const fake = new FakeNative(input, rng);
      const router = new Router(rec.log);
      let closes = 0;
      let reason: Error | null = null;
      // eslint-disable-next-line prefer-const -- the device's callbacks reach the session made after it
      let session: VhostUserSession | undefined;
      const device = new VsockDevice(3, router, (q) => session?.notify(q), (err) => session?.close(err), rec.log);
      router.addVm({ cid: 3, groups: new Set(["g"]), udsPath: "/nonexistent/airlock-fuzz", device });
      session = new VhostUserSession(fake, SESSION_FD, 3, device, rec.log, (r) => {
        closes++;
        reason = r;
        device.reset();
        router.vmDown(3);
      }, () => {
        device.dropPending();
        router.vmDown(3);
      });
      const main = fake.pollers[0]!;
      for (let spins = 0; closes === 0; spins++) {
        if (spins > input.length + 16) throw new Violation("the session stopped reading before the end of its input");
        main.cb(null, 1);
        // Sometimes the guest kicks a ring between two messages.
        if (rng.chance(0.2)) for (const p of fake.pollers.slice(1)) if (!p.closed) p.cb(null, 1);
        device.flushNotify();
      }
      if (closes !== 1) throw new Violation(`onClose ran ${closes} times`);
      const v = fake.violations;
      const leaked = [...fake.fds].filter(([, open]) => open).map(([fd]) => fd);
      if (leaked.length > 0) v.push(`fds left open after the session ended: ${leaked.join(", ")}`);
      if (fake.mapped.size > 0) v.push(`${fake.mapped.size} guest memory mappings left after the session ended`);
      if (fake.pollers.some((p) => !p.closed)) v.push("pollers left running after the session ended");
      if (rec.errors.length > 0) v.push(`internal error logged: ${rec.errors[0]!.trim()}`);
      if (v.length > 0) throw new Violation(v.join("; "));
      const r = reason as Error | null;
      if (r === null) return;
      if (r instanceof ProtocolError || r instanceof RingError || r instanceof FakeNativeError) throw new Refused(r.message);
      throw r;
    };
    return { name: this.name, what: this.what, seeds, dict: [u32(Req.SET_MEM_TABLE), u32(Req.SET_VRING_ADDR), u32(Req.SET_VRING_KICK), u32(0x100), u64(0x7f0000000000n)], maxLen: 64 * 1024, refusal: () => false, run };
  },
};

export const fabricTargets: TargetFactory[] = [vsockPacket, virtqueue, vhostUser];
