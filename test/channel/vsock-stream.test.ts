// The guests' socket stream against the real kernel, over Unix sockets from the same native shim
// (the stream is the same code on any non-blocking stream socket; AF_VSOCK needs a guest, where
// test/room and the datapath bench exercise it): a sender far ahead of its reader is held back by
// the kernel with the receiver's buffering bounded, and a reader that stops reading holds our
// writes back without blocking the loop.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadNative } from "../../host-tools/src/fabric/native.ts";
import { READ_BUFFER, VsockStream } from "../../proto/src/vsock-stream.ts";

const native = loadNative();
const dir = mkdtempSync(path.join(os.tmpdir(), "airlock-vsock-stream-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A connected pair: our stream on the shim's accepted socket, and a plain Node socket as the peer. */
async function pair(name: string): Promise<{ ours: VsockStream; peer: net.Socket }> {
  const p = path.join(dir, name);
  const lfd = native.listenUnix(p, 4);
  const peer = net.connect(p);
  await new Promise((r) => peer.once("connect", r));
  let fd = -1;
  for (let i = 0; i < 100 && fd < 0; i++) {
    fd = native.accept(lfd);
    if (fd < 0) await new Promise((r) => setTimeout(r, 10));
  }
  native.close(lfd);
  expect(fd).toBeGreaterThanOrEqual(0);
  return { ours: new VsockStream(fd), peer };
}

const sha = (b: Buffer | Buffer[]): string => {
  const h = createHash("sha256");
  for (const x of Array.isArray(b) ? b : [b]) h.update(x);
  return h.digest("hex");
};

describe("VsockStream", () => {
  it("reads only as fast as its reader takes: a sender far ahead waits, and everything arrives whole", async () => {
    const { ours, peer } = await pair("recv.sock");
    const data = randomBytes(64 * 1024 * 1024);
    // The peer writes all of it as fast as the socket lets it.
    let written = false;
    peer.write(data, () => (written = true));
    // Our side reads one chunk, then its reader stops taking (paused), for a while.
    const first = await new Promise<Buffer>((r) => ours.once("data", r));
    ours.pause();
    await new Promise((r) => setTimeout(r, 500));
    // What we hold is bounded, whatever the peer wants to send; the rest waits in the peer.
    expect(ours.readableLength).toBeLessThanOrEqual(READ_BUFFER + 256 * 1024);
    expect(written).toBe(false);
    expect(peer.writableLength).toBeGreaterThan(32 * 1024 * 1024);
    const chunks = [first];
    let got = first.length;
    await new Promise<void>((resolve, reject) => {
      ours.on("data", (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (got >= data.length) resolve();
      });
      ours.on("error", reject);
      ours.resume();
    });
    expect(got).toBe(data.length);
    expect(sha(chunks)).toBe(sha(data));
    ours.destroy();
    peer.destroy();
  });

  it("holds writes back while the peer does not read, without blocking the loop, then delivers them", async () => {
    const { ours, peer } = await pair("send.sock");
    peer.pause();
    const data = randomBytes(32 * 1024 * 1024);
    let done = false;
    ours.write(data, () => (done = true));
    // The loop keeps turning: timers fire while the write waits for room.
    const ticks = await new Promise<number>((resolve) => {
      let n = 0;
      const t = setInterval(() => n++, 10);
      setTimeout(() => (clearInterval(t), resolve(n)), 300);
    });
    expect(ticks).toBeGreaterThan(5);
    expect(done).toBe(false);
    const chunks: Buffer[] = [];
    let got = 0;
    await new Promise<void>((resolve) => {
      peer.on("data", (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (got >= data.length) resolve();
      });
      peer.resume();
    });
    expect(sha(chunks)).toBe(sha(data));
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(true);
    ours.destroy();
    peer.destroy();
  });

  it("ends when the peer closes, and fails a write to a closed peer", async () => {
    const { ours, peer } = await pair("end.sock");
    peer.end("bye");
    const got: Buffer[] = [];
    ours.on("data", (c: Buffer) => got.push(c));
    await new Promise((r) => ours.once("end", r));
    expect(Buffer.concat(got).toString()).toBe("bye");
    peer.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const err = await new Promise<Error>((resolve) => {
      ours.once("error", resolve);
      ours.write(Buffer.alloc(1024 * 1024));
    });
    expect((err as { code?: string }).code).toBe("FABRIC");
  });
});
