// The channel's cipher in the native addon (host-tools/native/src/aead.cc) against node:crypto's
// ChaCha20-Poly1305: the same bytes on random inputs, however the input is cut; every bad argument
// refused; and a record that does not authenticate never yields plaintext — the addon zeroes what
// it decrypted, and RecordCipher throws before anything of it is used. Over a stream that is not a
// socket, neither the link's reused frame buffers nor in-place opening may touch bytes in flight.
import { createCipheriv, createDecipheriv, createHash, randomBytes, randomInt } from "node:crypto";
import { Duplex } from "node:stream";
import { describe, expect, it } from "vitest";
import { nativeAddon } from "../native.ts";
import { secureClient, secureServer } from "./index.ts";
import { frameSize, MAX_PAYLOAD, RecordCipher, RecordType, TAG_SIZE } from "./protocol.ts";
import { testAttest, testIdentity, testVerifyPeer } from "./test-evidence.ts";

interface Aead {
  aeadSeal(...args: unknown[]): number;
  aeadOpen(...args: unknown[]): boolean;
}
const { aeadSeal, aeadOpen } = nativeAddon<Aead>();

/** node:crypto's ChaCha20-Poly1305: ciphertext ‖ tag. */
function reference(key: Buffer, nonce: Buffer, aad: Buffer, plain: Buffer): Buffer {
  const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG_SIZE });
  c.setAAD(aad, { plaintextLength: plain.length });
  return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
}

/** `b` cut at random places into views (some empty). */
function cut(b: Buffer): Buffer[] {
  const pieces: Buffer[] = [];
  for (let off = 0; off < b.length; ) {
    const n = randomInt(0, Math.min(b.length - off, 70_000) + 1);
    pieces.push(b.subarray(off, off + n));
    off += n;
  }
  if (randomInt(2) === 0) pieces.splice(randomInt(pieces.length + 1), 0, Buffer.alloc(0));
  return pieces;
}

/** A fresh copy of each piece (so opening in place does not touch the original). */
const copies = (pieces: Buffer[]): Buffer[] => pieces.map((p) => Buffer.from(p));

const sizes = [0, 1, 15, 16, 17, 63, 64, 65, 1000, 4095, 4096, 65_536, 200_003, MAX_PAYLOAD + 1];

describe("native ChaCha20-Poly1305 (aead.cc)", () => {
  it("seals exactly as node:crypto does and opens what node:crypto sealed, into a buffer or in place", () => {
    for (const size of sizes) {
      for (let round = 0; round < 3; round++) {
        const key = randomBytes(32);
        const nonce = randomBytes(12);
        const aad = randomBytes(randomInt(0, 40));
        const plain = randomBytes(size);
        const expected = reference(key, nonce, aad, plain);
        const offset = randomInt(0, 20);
        const out = randomBytes(offset + size + TAG_SIZE + randomInt(0, 20));
        const before = Buffer.from(out);
        expect(aeadSeal(key, nonce, aad, cut(plain), out, offset)).toBe(offset + size + TAG_SIZE);
        expect(out.subarray(offset, offset + size + TAG_SIZE).equals(expected)).toBe(true);
        // Nothing outside the record is written.
        expect(out.subarray(0, offset).equals(before.subarray(0, offset))).toBe(true);
        expect(out.subarray(offset + size + TAG_SIZE).equals(before.subarray(offset + size + TAG_SIZE))).toBe(true);

        const ciphertext = expected.subarray(0, size);
        const tag = expected.subarray(size);
        const into = Buffer.alloc(size);
        expect(aeadOpen(key, nonce, aad, cut(ciphertext), tag, into)).toBe(true);
        expect(into.equals(plain)).toBe(true);
        const parts = copies(cut(ciphertext));
        expect(aeadOpen(key, nonce, aad, parts, tag, undefined)).toBe(true);
        expect(Buffer.concat(parts).equals(plain)).toBe(true);
      }
    }
  });

  it("makes records byte for byte as the wire format says (checked with node:crypto)", () => {
    const key = randomBytes(32);
    const tx = new RecordCipher(key);
    for (let counter = 0; counter < 20; counter++) {
      const payload = randomBytes(randomInt(0, counter % 5 === 0 ? MAX_PAYLOAD + 1 : 3000));
      const type = counter % 2 === 0 ? RecordType.DATA : RecordType.CLOSE;
      const frame = Buffer.alloc(frameSize(payload.length) + 7, 0xee);
      const n = tx.sealInto(type, cut(payload), frame);
      // frame = u32be length ‖ ChaCha20-Poly1305(nonce = 0[4] ‖ u64be counter, aad = that header, type ‖ payload)
      const head = Buffer.alloc(4);
      head.writeUInt32BE(1 + payload.length + TAG_SIZE);
      const nonce = Buffer.alloc(12);
      nonce.writeUInt32BE(counter, 8);
      const expected = Buffer.concat([head, reference(key, nonce, head, Buffer.concat([Buffer.from([type]), payload]))]);
      expect(n).toBe(expected.length);
      expect(frame.subarray(0, n).equals(expected)).toBe(true);
      expect(frame.subarray(n).every((b) => b === 0xee)).toBe(true);
    }
  });

  it("takes a record of more pieces than one call of the addon does (many tiny writes)", () => {
    const key = randomBytes(32);
    const pieces = Array.from({ length: 10_000 }, () => randomBytes(randomInt(0, 20)));
    const frame = new RecordCipher(key).sealParts(RecordType.DATA, pieces)[0]!;
    expect(frame.equals(new RecordCipher(key).seal(RecordType.DATA, Buffer.concat(pieces)))).toBe(true);
    const body = Buffer.from(frame.subarray(4));
    const parts = Array.from({ length: body.length }, (_, i) => body.subarray(i, i + 1));
    expect(Buffer.concat(new RecordCipher(key).openInPlace(frame.subarray(0, 4), parts).payload).equals(Buffer.concat(pieces))).toBe(true);
  });

  it("opens records in place however the wire cut them, the tag split across reads too", () => {
    const key = randomBytes(32);
    const tx = new RecordCipher(key);
    const rx = new RecordCipher(key);
    for (let i = 0; i < 60; i++) {
      const payload = randomBytes([0, 1, 2, 100, 70_000, MAX_PAYLOAD][i % 6]!);
      const frame = tx.seal(RecordType.DATA, payload);
      const body = Buffer.from(frame.subarray(4));
      // Cut so the tag (the last 16 bytes) is split in every way once, then at random.
      const parts = i < 17 ? [body.subarray(0, body.length - i), body.subarray(body.length - i)] : cut(body);
      const { type, payload: pieces } = rx.openInPlace(frame.subarray(0, 4), parts);
      expect(type).toBe(RecordType.DATA);
      expect(pieces.every((p) => p.length > 0)).toBe(true);
      expect(Buffer.concat(pieces).equals(payload)).toBe(true);
      // The payload is the bytes where they lay: views of the body, not copies.
      for (const p of pieces) expect(p.buffer).toBe(body.buffer);
    }
  });

  it("refuses bad types and lengths", () => {
    const key = randomBytes(32);
    const nonce = randomBytes(12);
    const aad = randomBytes(4);
    const tag = randomBytes(16);
    const out = Buffer.alloc(100);
    const plain = [randomBytes(10)];
    expect(aeadSeal(key, nonce, aad, plain, out, 0)).toBe(26);
    const badBytes: unknown[] = [undefined, null, "x".repeat(32), 32, [1, 2], new Uint16Array(16), new DataView(new ArrayBuffer(32)), new ArrayBuffer(32), {}];
    const seal = (over: Record<number, unknown>): unknown[] => [key, nonce, aad, plain, out, 0].map((v, i) => (i in over ? over[i] : v));
    const open = (over: Record<number, unknown>): unknown[] => [key, nonce, aad, [randomBytes(10)], tag, undefined].map((v, i) => (i in over ? over[i] : v));
    const sealCases: [unknown[], RegExp][] = [
      ...[0, 31, 33, 64].map((n): [unknown[], RegExp] => [seal({ 0: Buffer.alloc(n) }), /key must be exactly 32 bytes/]),
      ...[0, 11, 13, 24].map((n): [unknown[], RegExp] => [seal({ 1: Buffer.alloc(n) }), /nonce must be exactly 12 bytes/]),
      ...badBytes.map((v): [unknown[], RegExp] => [seal({ 0: v }), /key must be a Buffer/]),
      ...badBytes.map((v): [unknown[], RegExp] => [seal({ 2: v }), /aad must be a Buffer/]),
      ...badBytes.filter((v) => !Array.isArray(v)).map((v): [unknown[], RegExp] => [seal({ 3: v }), /pieces must be an array/]),
      [seal({ 3: [Buffer.alloc(1), "x"] }), /pieces must be a Buffer/],
      [seal({ 3: new Array(4097).fill(Buffer.alloc(0)) }), /more than 4096 pieces/],
      ...badBytes.map((v): [unknown[], RegExp] => [seal({ 4: v }), /out must be a Buffer/]),
      ...[-1, 0.5, NaN, Infinity, 101].map((v): [unknown[], RegExp] => [seal({ 5: v }), /offset out of range/]),
      [seal({ 5: "0" }), /offset must be a number/],
      [seal({ 5: 75 }), /no room/], // 100 - 75 < 10 + 16
      [seal({ 4: Buffer.alloc(25) }), /no room/],
      [seal({ 3: [out.subarray(20, 30)] }), /out overlaps a piece/], // the record goes to out[0, 26)
      [seal({ 2: out.subarray(25, 30) }), /out overlaps the aad/],
      [[key, nonce, aad, plain, out], /aeadSeal\(/],
    ];
    const openCases: [unknown[], RegExp][] = [
      ...[0, 15, 17].map((n): [unknown[], RegExp] => [open({ 4: Buffer.alloc(n) }), /tag must be exactly 16 bytes/]),
      ...[0, 31, 33].map((n): [unknown[], RegExp] => [open({ 0: Buffer.alloc(n) }), /key must be exactly 32 bytes/]),
      [open({ 1: Buffer.alloc(8) }), /nonce must be exactly 12 bytes/],
      [open({ 5: Buffer.alloc(9) }), /out must be exactly as long/],
      [open({ 5: Buffer.alloc(11) }), /out must be exactly as long/],
      [open({ 5: null }), /out must be a Buffer/],
      [open({ 5: "out" }), /out must be a Buffer/],
    ];
    for (const [args, message] of sealCases) expect(() => aeadSeal(...args), String(message)).toThrow(message);
    for (const [args, message] of openCases) expect(() => aeadOpen(...args), String(message)).toThrow(message);
    // Right next to the record is not overlapping.
    expect(aeadSeal(key, nonce, out.subarray(26, 30), [out.subarray(30, 40)], out, 0)).toBe(26);
    // Parts that overlap one another, the tag, or the output.
    const b = randomBytes(64);
    expect(() => aeadOpen(key, nonce, aad, [b.subarray(0, 20), b.subarray(10, 30)], tag, undefined)).toThrow(/overlap/);
    expect(() => aeadOpen(key, nonce, aad, [b.subarray(0, 20)], b.subarray(19, 35), undefined)).toThrow(/overlap/);
    expect(() => aeadOpen(key, nonce, aad, [b.subarray(0, 20)], tag, b.subarray(10, 30))).toThrow(/overlap/);
    expect(() => aeadOpen(key, nonce, aad, [b.subarray(0, 20)], tag, b.subarray(0, 20))).toThrow(/overlap/);
    expect(() => aeadOpen(key, nonce, aad, [b.subarray(0, 20)], tag)).toThrow(/aeadOpen\(/);
  });

  it("refuses a piece longer than one OpenSSL call takes (INT_MAX) rather than truncating its length", () => {
    let huge: Uint8Array;
    try {
      huge = new Uint8Array(2 ** 31); // untouched pages: reserved, not resident
    } catch {
      return; // this machine will not reserve 2 GiB: nothing to check
    }
    const key = randomBytes(32);
    const nonce = randomBytes(12);
    expect(() => aeadSeal(key, nonce, Buffer.alloc(0), [huge], Buffer.alloc(64), 0)).toThrow(/longer than one cipher call takes/);
    expect(() => aeadSeal(key, nonce, huge, [], Buffer.alloc(64), 0)).toThrow(/aad is longer than one cipher call takes/);
    expect(() => aeadOpen(key, nonce, Buffer.alloc(0), [huge], Buffer.alloc(16), undefined)).toThrow(/longer than one cipher call takes/);
  });

  it("answers false for a bit flipped anywhere (ciphertext, tag, aad, nonce, key) and leaves no plaintext", () => {
    const key = randomBytes(32);
    const nonce = randomBytes(12);
    const aad = randomBytes(4);
    const plain = randomBytes(3000);
    const sealed = reference(key, nonce, aad, plain);
    const fields = { ciphertext: sealed.subarray(0, plain.length), tag: sealed.subarray(plain.length), aad, nonce, key };
    for (const name of Object.keys(fields) as (keyof typeof fields)[]) {
      for (let i = 0; i < 24; i++) {
        const f = { ...fields, [name]: Buffer.from(fields[name]) };
        const bit = i < 8 ? i : randomInt(f[name].length * 8);
        f[name][bit >> 3]! ^= 1 << (bit & 7);
        const into = Buffer.alloc(plain.length, 0xaa);
        expect(aeadOpen(f.key, f.nonce, f.aad, cut(f.ciphertext), f.tag, into), `${name} bit ${bit}`).toBe(false);
        expect(into.every((b) => b === 0)).toBe(true);
        const parts = copies(cut(f.ciphertext));
        expect(aeadOpen(f.key, f.nonce, f.aad, parts, f.tag, undefined)).toBe(false);
        expect(parts.every((p) => p.every((b) => b === 0))).toBe(true);
      }
    }
  });

  it("throws for a record that does not authenticate: in place, its bytes zeroed; open(), its input untouched", () => {
    const key = randomBytes(32);
    const frame = new RecordCipher(key).seal(RecordType.DATA, randomBytes(100_000));
    for (let i = 0; i < 40; i++) {
      const bad = Buffer.from(frame);
      const bit = 32 + randomInt((bad.length - 4) * 8); // anywhere in the body
      bad[bit >> 3]! ^= 1 << (bit & 7);
      const body = Buffer.from(bad.subarray(4));
      const parts = [body.subarray(0, 70_000), body.subarray(70_000, body.length - 5), body.subarray(body.length - 5)];
      expect(() => new RecordCipher(key).openInPlace(bad.subarray(0, 4), parts)).toThrow(expect.objectContaining({ code: "CRYPTO" }));
      expect(body.subarray(0, body.length - TAG_SIZE).every((b) => b === 0)).toBe(true);
      const untouched = Buffer.from(bad);
      expect(() => new RecordCipher(key).open(bad.subarray(0, 4), bad.subarray(4))).toThrow(expect.objectContaining({ code: "CRYPTO" }));
      expect(bad.equals(untouched)).toBe(true);
    }
    // The record's length header is its aad.
    const head = Buffer.from(frame.subarray(0, 4));
    head[3]! ^= 1;
    expect(() => new RecordCipher(key).openInPlace(head, [Buffer.from(frame.subarray(4))])).toThrow(/does not authenticate/);
  });

  it("opens what node:crypto sealed as a record of the channel (a peer on another implementation)", () => {
    const key = randomBytes(32);
    const payload = randomBytes(5000);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(1 + payload.length + TAG_SIZE);
    const sealed = reference(key, Buffer.alloc(12), head, Buffer.concat([Buffer.from([RecordType.DATA]), payload]));
    const { type, payload: got } = new RecordCipher(key).open(head, sealed);
    expect(type).toBe(RecordType.DATA);
    expect(got.equals(payload)).toBe(true);
    // And node:crypto opens ours.
    const ours = new RecordCipher(key).seal(RecordType.DATA, payload);
    const d = createDecipheriv("chacha20-poly1305", key, Buffer.alloc(12), { authTagLength: TAG_SIZE });
    d.setAAD(ours.subarray(0, 4), { plaintextLength: ours.length - 4 - TAG_SIZE });
    d.setAuthTag(ours.subarray(ours.length - TAG_SIZE));
    const plain = Buffer.concat([d.update(ours.subarray(4, ours.length - TAG_SIZE)), d.final()]);
    expect(plain.subarray(1).equals(payload)).toBe(true);
  });
});

/** One end of an in-memory pair that hands each written buffer to the other end as it is, and calls back at once (a PassThrough's way). */
class MemoryEnd extends Duplex {
  peer!: MemoryEnd;
  /** Each buffer written here, and a copy made as it was written. */
  readonly written: [Buffer, Buffer][] = [];
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.written.push([chunk, Buffer.from(chunk)]);
    this.peer.push(chunk);
    cb();
  }
  override _final(cb: () => void): void {
    this.peer.push(null);
    cb();
  }
}

describe("the channel over a stream that is not a socket", () => {
  it("carries records intact without reusing a written frame or decrypting the writer's buffers in place", async () => {
    const a = new MemoryEnd();
    const b = new MemoryEnd();
    a.peer = b;
    b.peer = a;
    const agent = testIdentity("agent");
    const enforcer = testIdentity("enforcer");
    const [c, s] = await Promise.all([
      secureClient(a, { attest: testAttest(agent), verifyPeer: testVerifyPeer(enforcer), timeoutMs: 5000 }),
      secureServer(b, { attest: testAttest(enforcer), verifyPeer: testVerifyPeer(agent), timeoutMs: 5000 }),
    ]);
    const data = randomBytes(3 * MAX_PAYLOAD + 12_345);
    const received: Buffer[] = [];
    const done = new Promise<void>((resolve, reject) => s.stream.on("data", (d: Buffer) => received.push(d)).once("end", resolve).once("error", reject));
    // Writes in pieces that fill records, without waiting: frames pile up unread on the other side.
    for (let off = 0; off < data.length; off += 100_000) c.stream.write(data.subarray(off, off + 100_000));
    c.stream.end();
    await done;
    s.stream.end();
    const sha = (x: Buffer): string => createHash("sha256").update(x).digest("hex");
    expect(sha(Buffer.concat(received))).toBe(sha(data));
    // Every frame the client wrote is still what it was when written.
    expect(a.written.length).toBeGreaterThan(4);
    for (const [buffer, copy] of a.written) expect(buffer.equals(copy)).toBe(true);
  });
});
