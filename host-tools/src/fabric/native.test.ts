// The native shim against the real kernel: a listening socket polled on Node's own loop, accept,
// recvmsg and send, and MAP_SHARED mappings that are detached (not left dangling) on munmap.
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadNative } from "./native.ts";

const native = loadNative();
const dir = mkdtempSync(path.join(os.tmpdir(), "airlock-native-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("fabric native shim", () => {
  it("listens, polls, accepts, receives and sends on a Unix socket without blocking the loop", async () => {
    const p = path.join(dir, "s.sock");
    const lfd = native.listenUnix(p, 4);
    expect(native.accept(lfd)).toBe(-1); // nothing pending: does not block
    const accepted = new Promise<number>((resolve) => {
      const poller = new native.Poller(lfd, () => {
        const fd = native.accept(lfd);
        if (fd >= 0) {
          poller.close();
          resolve(fd);
        }
      });
      poller.start(true);
    });
    const client = net.connect(p);
    const fd = await accepted;
    const buf = new Uint8Array(64);
    expect(native.recvMsg(fd, buf)).toBeNull(); // would block
    const got = new Promise<{ bytes: number; fds: number[] }>((resolve) => {
      const poller = new native.Poller(fd, () => {
        const r = native.recvMsg(fd, buf);
        if (r) {
          poller.close();
          resolve(r);
        }
      });
      poller.start(true);
    });
    client.write("ping");
    const r = await got;
    expect(r.fds).toEqual([]);
    expect(Buffer.from(buf.subarray(0, r.bytes)).toString()).toBe("ping");
    const echoed = new Promise<string>((resolve) => client.once("data", (d) => resolve(d.toString())));
    expect(native.send(fd, Buffer.from("pong"))).toBe(4);
    expect(await echoed).toBe("pong");
    const closed = new Promise((res) => client.once("close", res));
    const eof = new Promise<number>((resolve) => {
      const poller = new native.Poller(fd, () => {
        const e = native.recvMsg(fd, buf);
        if (e) {
          poller.close();
          resolve(e.bytes);
        }
      });
      poller.start(true);
    });
    client.end();
    expect(await eof).toBe(0);
    native.close(fd);
    await closed;
    native.close(lfd);
  });

  it("maps a file shared, and munmap detaches every view", () => {
    const f = path.join(dir, "mem");
    const fd = openSync(f, "w+");
    writeSync(fd, Buffer.alloc(8192));
    const ab = native.mmap(fd, 8192);
    const view = new Uint8Array(ab);
    view.set([1, 2, 3], 4096);
    const back = Buffer.alloc(3);
    readSync(fd, back, 0, 3, 4096);
    expect([...back]).toEqual([1, 2, 3]);
    native.munmap(ab);
    expect(ab.byteLength).toBe(0);
    expect(view.length).toBe(0);
    expect(() => native.munmap(ab)).not.toThrow(); // twice is harmless
    expect(() => native.mmap(fd, 0)).toThrow(RangeError);
    expect(() => native.mmap(fd, 2 ** 50)).toThrow(RangeError);
    closeSync(fd);
  });
});
