// Record boundaries, the record size bound and hostile length fields: the channel's records as the
// sender cuts them and as the reader puts them back together (protocol.ts, link.ts, secure-stream.ts).
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Duplex } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { secureClient, secureServer } from "./index.ts";
import type { ChannelOptions } from "./index.ts";
import { FrameSource } from "./link.ts";
import { MAX_PAYLOAD, MAX_RECORD, RecordCipher, RecordType, TAG_SIZE } from "./protocol.ts";
import { testAttest, testIdentity, testVerifyPeer } from "./test-evidence.ts";
import { connect, listen, startRelay } from "./test-sockets.ts";

const agent = testIdentity("sandbox agent");
const enforcer = testIdentity("enforcer");
const clientOptions: ChannelOptions = { attest: testAttest(agent), verifyPeer: testVerifyPeer(enforcer), timeoutMs: 5000 };
const serverOptions: ChannelOptions = { attest: testAttest(enforcer), verifyPeer: testVerifyPeer(agent), timeoutMs: 5000 };

let dir: string;
const cleanups: (() => unknown)[] = [];
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), "airlock-records-"));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function readAll(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on("data", (c: Buffer) => parts.push(c));
    s.once("end", () => resolve(Buffer.concat(parts)));
    s.once("error", reject);
  });
}

const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

/** A channel through a relay that records the client's frames; the server reads to the end. */
async function recorded(): Promise<{ client: Duplex; received: Promise<Buffer>; frames: () => Buffer[] }> {
  let received!: Promise<Buffer>;
  let accepted!: () => void;
  const ready = new Promise<void>((resolve) => (accepted = resolve));
  const l = await listen(dir, (sock) => {
    received = secureServer(sock, serverOptions).then(({ stream }) => {
      // Cleanup cuts the connection under an open channel: expected then, not a failure.
      stream.on("error", () => undefined);
      const all = readAll(stream);
      stream.end();
      return all;
    });
    received.catch(() => undefined); // a test that does not await it ends by cutting the connection
    accepted();
  });
  cleanups.push(l.close);
  const relay = await startRelay(dir, l.path);
  cleanups.push(relay.close);
  const { stream } = await secureClient(await connect(relay.path), clientOptions);
  cleanups.push(() => stream.destroy());
  stream.on("error", () => undefined);
  stream.resume();
  await ready;
  // The client's frames: hello, evidence, then the application records.
  return { client: stream, received: received!, frames: () => relay.wire.c2s.slice(2) };
}

describe("channel records", () => {
  it("cuts writes around the record size into full records and carries them exactly", async () => {
    const { client, received, frames } = await recorded();
    const sizes = [1, MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, 2 * MAX_PAYLOAD + 17, 3, 16 * 1024, 16 * 1024 + 1, 5 * MAX_PAYLOAD - 5];
    const writes = sizes.map((n) => randomBytes(n));
    for (const w of writes) if (!client.write(w)) await new Promise((r) => client.once("drain", r));
    client.end();
    const all = Buffer.concat(writes);
    expect(sha(await received)).toBe(sha(all));
    const lengths = frames().map((f) => f.readUInt32BE(0));
    // Every frame within the bound, its header saying its length, the last one the CLOSE.
    for (const f of frames()) expect(f.length).toBe(4 + f.readUInt32BE(0));
    expect(Math.max(...lengths)).toBeLessThanOrEqual(MAX_RECORD);
    expect(lengths.at(-1)).toBe(1 + TAG_SIZE);
    // Mostly full records: no more records than the bytes need, plus the short tails.
    const data = lengths.slice(0, -1);
    expect(data.reduce((a, b) => a + b - 1 - TAG_SIZE, 0)).toBe(all.length);
    expect(data.filter((n) => n === MAX_RECORD).length).toBeGreaterThanOrEqual(Math.floor(all.length / MAX_PAYLOAD) - sizes.length);
  });

  it("coalesces small writes made in one turn of the event loop into one record, and sends them without end()", async () => {
    const { client, frames } = await recorded();
    const pieces = Array.from({ length: 50 }, (_, i) => Buffer.from(`message ${i};`));
    for (const p of pieces) client.write(p);
    // No end(): the held tail goes when the loop turns.
    for (let t0 = Date.now(); frames().length === 0; await new Promise((r) => setTimeout(r, 5))) {
      if (Date.now() - t0 > 3000) throw new Error("the small writes never left");
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(frames()).toHaveLength(1);
    expect(frames()[0]!.readUInt32BE(0)).toBe(1 + Buffer.concat(pieces).length + TAG_SIZE);
  });

  it("does not let a writer change bytes it wrote once called back (held tails are copies)", async () => {
    const { client, received } = await recorded();
    const buf = Buffer.from("first message");
    await new Promise<void>((resolve) => client.write(buf, () => resolve()));
    buf.fill(0x58); // reused by its writer after the callback
    client.end(Buffer.from(" then more"));
    expect((await received).toString()).toBe("first message then more");
  });
});

describe("record framing", () => {
  const key = randomBytes(32);

  it("seals pieces as one record: sealParts is seal over the concatenation", () => {
    const pieces = [randomBytes(10), Buffer.alloc(0), randomBytes(1000), randomBytes(3)];
    const a = Buffer.concat(new RecordCipher(key).sealParts(RecordType.DATA, pieces));
    const b = new RecordCipher(key).seal(RecordType.DATA, Buffer.concat(pieces));
    expect(a.equals(b)).toBe(true);
    expect(() => new RecordCipher(key).sealParts(RecordType.DATA, [Buffer.alloc(MAX_PAYLOAD), Buffer.alloc(1)])).toThrow(/exceeds/);
  });

  it("opens a record of the largest size, however the wire cuts it (views, or copied into the scratch)", () => {
    const payload = randomBytes(MAX_PAYLOAD);
    const wire = Buffer.concat([new RecordCipher(key).seal(RecordType.DATA, payload), new RecordCipher(key).seal(RecordType.DATA, Buffer.from("next"))]);
    expect(wire.readUInt32BE(0)).toBe(MAX_RECORD);
    // Where the wire is cut, and whether the body then lies in one chunk (a view of it) or spans chunks (copied into the scratch).
    const cases: [number[], "view" | "scratch"][] = [
      [[wire.length], "view"],
      [[1, 2, 3], "scratch"],
      [[4], "view"],
      [[5], "scratch"],
      [[70_000, 1], "scratch"],
      [[4 + MAX_RECORD - 1], "scratch"],
      [[4 + MAX_RECORD], "view"],
      [[4 + MAX_RECORD + 1], "view"],
    ];
    for (const [cuts, where] of cases) {
      const src = new FrameSource(MAX_RECORD);
      let off = 0;
      for (const n of cuts) {
        src.push(wire.subarray(off, off + n));
        off += n;
      }
      if (off < wire.length) src.push(wire.subarray(off));
      const scratch = Buffer.alloc(MAX_RECORD);
      const f = src.nextInto(scratch)!;
      expect(f.body).toHaveLength(MAX_RECORD);
      expect(f.body.buffer === scratch.buffer ? "scratch" : "view", `cut at ${cuts.join(",")}`).toBe(where);
      const rx = new RecordCipher(key);
      expect(rx.open(f.head, f.body).payload.equals(payload)).toBe(true);
      expect(src.buffered).toBe(wire.length - 4 - MAX_RECORD);
    }
  });

  it("refuses a hostile length as soon as its 4 bytes are in, before any body is buffered or copied", () => {
    for (const length of [MAX_RECORD + 1, 0x7fffffff, 0xffffffff]) {
      const src = new FrameSource(MAX_RECORD);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(length >>> 0);
      src.push(head.subarray(0, 3));
      expect(src.nextInto(Buffer.alloc(MAX_RECORD))).toBeUndefined();
      src.push(head.subarray(3));
      expect(() => src.nextInto(Buffer.alloc(MAX_RECORD))).toThrow(/exceeds the limit/);
      expect(() => src.next()).toThrow(/exceeds the limit/);
    }
  });

  it("refuses records too short to hold a type and a tag, and one whose length header was changed", () => {
    const rx = new RecordCipher(key);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(TAG_SIZE);
    expect(() => rx.open(head, Buffer.alloc(TAG_SIZE))).toThrow(/too short/);
    const rec = new RecordCipher(key).seal(RecordType.DATA, Buffer.from("payload"));
    const longer = Buffer.concat([rec, Buffer.alloc(1)]);
    longer.writeUInt32BE(rec.length - 4 + 1, 0);
    expect(() => new RecordCipher(key).open(longer.subarray(0, 4), longer.subarray(4))).toThrow(expect.objectContaining({ code: "CRYPTO" }));
  });
});
