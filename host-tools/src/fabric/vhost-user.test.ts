// The vhost-user front door with a real fabric on real Unix sockets: negotiation and config as
// QEMU 7.2 does it, then hostile frontends that must be cut off alone.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric, type VmDisconnected } from "./fabric.ts";
import { DEVICE_FEATURES, PROTOCOL_FEATURES, Req } from "./vhost-user.ts";

let dir: string;
let fabric: Fabric;
const disconnected: VmDisconnected[] = [];
const errors: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "airlock-vhost-"));
  fabric = startFabric({
    vms: [
      { cid: 3, socket: `${dir}/3.vhost`, udsPath: `${dir}/3.vsock`, groups: ["g"] },
      { cid: 4, socket: `${dir}/4.vhost`, udsPath: `${dir}/4.vsock`, groups: ["g"] },
    ],
  });
  fabric.on("vm-disconnected", (ev) => disconnected.push(ev));
  fabric.on("error", (e) => errors.push(e.message));
  await fabric.ready;
});

afterAll(async () => {
  await fabric.stop();
  expect(existsSync(`${dir}/3.vhost`)).toBe(false);
  rmSync(dir, { recursive: true, force: true });
});

function msg(request: number, flags: number, body: Buffer = Buffer.alloc(0), size = body.length): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt32LE(request, 0);
  h.writeUInt32LE(flags, 4);
  h.writeUInt32LE(size, 8);
  return Buffer.concat([h, body]);
}

const u64 = (v: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
};

/** A frontend that sends messages and reads replies; `closed` resolves when the fabric hangs up. */
class Frontend {
  readonly sock: net.Socket;
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  readonly closed: Promise<void>;

  constructor(p: string) {
    this.sock = net.connect(p);
    this.sock.on("data", (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiters.splice(0).forEach((w) => w());
    });
    this.sock.on("error", () => undefined);
    this.closed = new Promise((r) => this.sock.on("close", () => r()));
  }

  async reply(): Promise<{ request: number; flags: number; body: Buffer }> {
    const deadline = Date.now() + 5000;
    while (this.buf.length < 12 || this.buf.length < 12 + this.buf.readUInt32LE(8)) {
      if (Date.now() > deadline) throw new Error("no reply");
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
    const size = this.buf.readUInt32LE(8);
    const out = { request: this.buf.readUInt32LE(0), flags: this.buf.readUInt32LE(4), body: this.buf.subarray(12, 12 + size) };
    this.buf = this.buf.subarray(12 + size);
    return out;
  }
}

describe("vhost-user backend", () => {
  it("negotiates like QEMU 7.2's vhost-user-vsock and serves the guest CID from config space", async () => {
    const fe = new Frontend(`${dir}/3.vhost`);
    fe.sock.write(msg(Req.GET_FEATURES, 1));
    const f = await fe.reply();
    expect(f).toMatchObject({ request: Req.GET_FEATURES, flags: 0x5 });
    expect(f.body.readBigUInt64LE()).toBe(DEVICE_FEATURES);
    fe.sock.write(msg(Req.GET_PROTOCOL_FEATURES, 1));
    expect((await fe.reply()).body.readBigUInt64LE()).toBe(PROTOCOL_FEATURES);
    fe.sock.write(msg(Req.SET_PROTOCOL_FEATURES, 1, u64(PROTOCOL_FEATURES)));
    fe.sock.write(msg(Req.SET_FEATURES, 1 | 0x8, u64(DEVICE_FEATURES)));
    expect((await fe.reply()).body.readBigUInt64LE()).toBe(0n); // REPLY_ACK: success
    const cfg = Buffer.alloc(12 + 8);
    cfg.writeUInt32LE(0, 0);
    cfg.writeUInt32LE(8, 4);
    fe.sock.write(msg(Req.GET_CONFIG, 1, cfg));
    const c = await fe.reply();
    expect(c.request).toBe(Req.GET_CONFIG);
    expect(c.body.readBigUInt64LE(12)).toBe(3n);
    // Setting features we never offered (bit 34, VIRTIO_F_RING_PACKED) is refused: the session ends.
    fe.sock.write(msg(Req.SET_FEATURES, 1, u64(1n << 34n)));
    await fe.closed;
  });

  for (const [name, bytes] of [
    ["an oversized message", msg(Req.GET_FEATURES, 1, Buffer.alloc(0), 1 << 20)],
    ["an unknown request", msg(99, 1)],
    ["a bad version", msg(Req.GET_FEATURES, 2)],
    ["SET_MEM_TABLE without fds", msg(Req.SET_MEM_TABLE, 1, Buffer.concat([u64(1n), Buffer.alloc(32)]))],
    ["a vring index out of range", msg(Req.SET_VRING_NUM, 1, Buffer.from([7, 0, 0, 0, 0, 1, 0, 0]))],
    ["a vring size that is not a power of two", msg(Req.SET_VRING_NUM, 1, Buffer.from([0, 0, 0, 0, 3, 0, 0, 0]))],
    ["a short payload", msg(Req.SET_FEATURES, 1, Buffer.alloc(3))],
    ["a kick without its fd", msg(Req.SET_VRING_KICK, 1, u64(0n))],
  ] as const) {
    it(`cuts off a frontend that sends ${name}, and only it`, async () => {
      const before = disconnected.length;
      const bad = new Frontend(`${dir}/3.vhost`);
      const good = new Frontend(`${dir}/4.vhost`);
      bad.sock.write(bytes);
      await bad.closed;
      good.sock.write(msg(Req.GET_FEATURES, 1));
      expect((await good.reply()).body.readBigUInt64LE()).toBe(DEVICE_FEATURES);
      const deadline = Date.now() + 2000;
      while (disconnected.length === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(disconnected.at(-1)).toMatchObject({ cid: 3 });
      expect(disconnected.at(-1)!.reason).toBeInstanceOf(Error);
      good.sock.destroy();
      await good.closed;
    });
  }

  it("reported each cut-off as a coded error naming the VM", () => {
    expect(errors.length).toBeGreaterThanOrEqual(8);
    expect(errors.every((e) => e.startsWith("VM 3:"))).toBe(true);
  });
});
