// VhostUserSession over an in-memory native shim: what it does with its fds when a request ends
// the session while it is being handled.
import { describe, expect, it } from "vitest";
import { silentLogger } from "../../../proto/src/log.ts";
import type { FabricNative, Poller, RecvResult } from "./native.ts";
import { Router } from "./router.ts";
import { DEVICE_FEATURES, F_ACCESS_PLATFORM, PROTOCOL_FEATURES, Req, VhostUserSession } from "./vhost-user.ts";
import { VsockDevice } from "./vsock-device.ts";

function msg(request: number, body: Buffer, flags = 1): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt32LE(request, 0);
  h.writeUInt32LE(flags, 4);
  h.writeUInt32LE(body.length, 8);
  return Buffer.concat([h, body]);
}

const u32 = (...vs: number[]): Buffer => Buffer.concat(vs.map((v) => Buffer.from(new Uint32Array([v]).buffer)));
const u64 = (...vs: bigint[]): Buffer => Buffer.concat(vs.map((v) => Buffer.from(new BigUint64Array([v]).buffer)));

/** Delivers whole messages (with their fds) and records every call on a closed fd. */
class FakeNative {
  readonly misuse: string[] = [];
  readonly open = new Set<number>([10]);
  readonly pollers: ((err: string | null, events: number) => void)[] = [];
  private next = 100;
  constructor(private readonly messages: { bytes: Buffer; fds: number }[]) {}
  readonly Poller = ((pollers) =>
    class implements Poller {
      constructor(_fd: number, cb: (err: string | null, events: number) => void) {
        pollers.push(cb);
      }
      start(): void {}
      stop(): void {}
      close(): void {}
    })(this.pollers);
  recvMsg(_fd: number, buf: Uint8Array): RecvResult | null {
    const m = this.messages[0];
    if (!m) return { bytes: 0, fds: [], truncated: false };
    const n = Math.min(buf.length, m.bytes.length);
    buf.set(m.bytes.subarray(0, n));
    const fds = Array.from({ length: m.fds }, () => this.next++);
    fds.forEach((f) => this.open.add(f));
    m.fds = 0;
    m.bytes = m.bytes.subarray(n);
    if (m.bytes.length === 0) this.messages.shift();
    return { bytes: n, fds, truncated: false };
  }
  send(fd: number, buf: Uint8Array): number {
    if (!this.open.has(fd)) this.misuse.push(`send on closed fd ${fd}`);
    return buf.length;
  }
  close(fd: number): void {
    if (!this.open.delete(fd)) this.misuse.push(`close of fd ${fd} twice`);
  }
  mmap(_fd: number, length: number): ArrayBuffer {
    return new ArrayBuffer(length);
  }
  munmap(): void {}
  eventfdRead(): number {
    return 0;
  }
  eventfdWrite(fd: number): void {
    if (!this.open.has(fd)) this.misuse.push(`eventfd write on closed fd ${fd}`);
  }
  listenUnix(): number {
    throw new Error("unused");
  }
  accept(): number {
    throw new Error("unused");
  }
}

describe("vhost-user session", () => {
  it("sends no reply-ack on its fd after the request it answers ended the session (found by npm run fuzz)", () => {
    const UVA = 0x7f0000000000n;
    // The tx ring starts at avail index 100 while the guest's ring says 0: the device faults as
    // soon as SET_VRING_ENABLE starts it, which closes the session inside that request.
    const native = new FakeNative([
      { bytes: msg(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_FEATURES)), fds: 0 },
      { bytes: msg(Req.SET_FEATURES, u64(DEVICE_FEATURES)), fds: 0 },
      { bytes: msg(Req.SET_MEM_TABLE, Buffer.concat([u32(1, 0), u64(0n, 0x10000n, UVA, 0n)])), fds: 1 },
      { bytes: msg(Req.SET_VRING_NUM, u32(1, 8)), fds: 0 },
      { bytes: msg(Req.SET_VRING_BASE, u32(1, 100)), fds: 0 },
      { bytes: msg(Req.SET_VRING_ADDR, Buffer.concat([u32(1, 0), u64(UVA + 0x1000n, UVA + 0x1800n, UVA + 0x1200n, 0n)])), fds: 0 },
      { bytes: msg(Req.SET_VRING_KICK, u64(1n)), fds: 1 },
      { bytes: msg(Req.SET_VRING_ENABLE, u32(1, 1), 1 | 8), fds: 0 },
    ]);
    const router = new Router(silentLogger);
    const reasons: (Error | null)[] = [];
    let session: VhostUserSession | undefined = undefined;
    const device = new VsockDevice(3, router, () => undefined, (err) => session?.close(err), silentLogger);
    router.addVm({ cid: 3, groups: new Set(["g"]), udsPath: "/nonexistent", device });
    session = new VhostUserSession(native as unknown as FabricNative, 10, 3, device, silentLogger, (r) => reasons.push(r));
    for (let i = 0; i < 20 && reasons.length === 0; i++) native.pollers[0]!(null, 1);
    expect(reasons).toHaveLength(1);
    expect(reasons[0]?.message).toMatch(/avail index moved past the queue size/);
    expect(native.misuse).toEqual([]);
    expect([...native.open]).toEqual([]);
  });

  it("offers VIRTIO_F_ACCESS_PLATFORM with the backend channel QEMU then demands, and accepts a driver that negotiates it", () => {
    const replies: Buffer[] = [];
    const native = new FakeNative([
      { bytes: msg(Req.GET_FEATURES, Buffer.alloc(0)), fds: 0 },
      { bytes: msg(Req.GET_PROTOCOL_FEATURES, Buffer.alloc(0)), fds: 0 },
      { bytes: msg(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_FEATURES)), fds: 0 },
      { bytes: msg(Req.SET_BACKEND_REQ_FD, Buffer.alloc(0), 1 | 8), fds: 1 },
      { bytes: msg(Req.SET_FEATURES, u64(DEVICE_FEATURES), 1 | 8), fds: 0 },
    ]);
    native.send = (_fd: number, buf: Uint8Array): number => (replies.push(Buffer.from(buf)), buf.length);
    const router = new Router(silentLogger);
    const reasons: (Error | null)[] = [];
    const device = new VsockDevice(3, router, () => undefined, () => undefined, silentLogger);
    router.addVm({ cid: 3, groups: new Set(["g"]), udsPath: "/nonexistent", device });
    const session = new VhostUserSession(native as unknown as FabricNative, 10, 3, device, silentLogger, (r) => reasons.push(r));
    for (let i = 0; i < 10; i++) native.pollers[0]!(null, 1);
    expect(reasons).toEqual([null]); // ended by EOF after the last message, not by a fault
    const features = replies[0]!.readBigUInt64LE(12);
    expect(features & F_ACCESS_PLATFORM).toBe(1n << 33n);
    // QEMU refuses ACCESS_PLATFORM without REPLY_ACK (bit 3) and BACKEND_REQ (bit 5).
    expect(replies[1]!.readBigUInt64LE(12) & 0x28n).toBe(0x28n);
    // Both NEED_REPLY requests were acked with 0.
    expect(replies.slice(2).map((r) => [r.readUInt32LE(0), r.readBigUInt64LE(12)])).toEqual([
      [Req.SET_BACKEND_REQ_FD, 0n],
      [Req.SET_FEATURES, 0n],
    ]);
    expect(session.negotiatedFeatures & F_ACCESS_PLATFORM).toBe(F_ACCESS_PLATFORM);
    expect(native.misuse).toEqual([]);
    expect([...native.open]).toEqual([]); // the backend channel's fd was closed with the session
  });
});
