// The age payload handed on sealed: openHeader() + PayloadOpener give exactly what decrypt() gives,
// whatever the pieces the ciphertext arrives in, and payloadPlaintextLength() predicts its size.
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { CHUNK_SIZE, encrypt, X25519Identity } from "./index.ts";
import { openHeader, PayloadOpener, payloadPlaintextLength, SEALED_CHUNK_SIZE } from "./stream.ts";

async function sealed(plaintext: Buffer, id: X25519Identity): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of encrypt([plaintext], [id.recipient])) out.push(c);
  return Buffer.concat(out);
}

/** The payload (after header and nonce) of `file`, and its key. */
async function split(file: Buffer, id: X25519Identity): Promise<{ key: Buffer; payload: Buffer }> {
  const { key, payload } = await openHeader([file], [id]);
  const rest: Buffer[] = [];
  for await (const c of payload.rest()) rest.push(c);
  return { key, payload: Buffer.concat(rest) };
}

function openInPieces(key: Buffer, payload: Buffer, sizes: () => number): Buffer {
  const opener = new PayloadOpener(key);
  const out: Buffer[] = [];
  for (let off = 0; off < payload.length; ) {
    const n = Math.min(payload.length - off, Math.max(1, sizes()));
    out.push(...opener.push(payload.subarray(off, off + n)));
    off += n;
  }
  out.push(...opener.end());
  expect(opener.bytes).toBe(Buffer.concat(out).length);
  return Buffer.concat(out);
}

describe("an age payload opened apart from its header", () => {
  const id = X25519Identity.generate();
  for (const size of [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 17]) {
    it(`${size} bytes, in pieces of any size`, async () => {
      const plaintext = randomBytes(size);
      const { key, payload } = await split(await sealed(plaintext, id), id);
      expect(payloadPlaintextLength(payload.length)).toBe(size);
      expect(openInPieces(key, payload, () => payload.length).equals(plaintext)).toBe(true);
      expect(openInPieces(key, payload, () => SEALED_CHUNK_SIZE).equals(plaintext)).toBe(true);
      expect(openInPieces(key, payload, () => 1 + Math.floor(Math.random() * 100_000)).equals(plaintext)).toBe(true);
    });
  }

  it("names truncation, tampering and a wrong key", async () => {
    const { key, payload } = await split(await sealed(randomBytes(3 * CHUNK_SIZE + 5), id), id);
    const whole = (): number => payload.length;
    expect(() => openInPieces(key, payload.subarray(0, 2 * SEALED_CHUNK_SIZE), whole)).toThrow(/^truncated: chunk 1 .*final chunk is missing/);
    expect(() => openInPieces(key, Buffer.alloc(0), whole)).toThrow(/truncated: the payload has no final chunk/);
    const bad = Buffer.from(payload);
    bad[SEALED_CHUNK_SIZE + 7]! ^= 1;
    expect(() => openInPieces(key, bad, whole)).toThrow(/^tampered: chunk 1 /);
    expect(() => openInPieces(randomBytes(32), payload, whole)).toThrow(/^tampered: chunk 0 /);
    expect(() => new PayloadOpener(randomBytes(16))).toThrow(/32 bytes/);
  });

  it("no plaintext length for a payload no age file can have", () => {
    expect(payloadPlaintextLength(15)).toBe(-1);
    expect(payloadPlaintextLength(SEALED_CHUNK_SIZE + 15)).toBe(-1);
    expect(payloadPlaintextLength(16)).toBe(0);
    expect(payloadPlaintextLength(SEALED_CHUNK_SIZE)).toBe(CHUNK_SIZE);
    expect(payloadPlaintextLength(SEALED_CHUNK_SIZE + 16)).toBe(CHUNK_SIZE);
  });
});

describe("a payload fault, named in a few bits", () => {
  it("says truncated, tampered or malformed, and the chunk", async () => {
    const id = X25519Identity.generate();
    const { key, payload } = await split(await sealed(randomBytes(3 * CHUNK_SIZE + 5), id), id);
    const faultOf = (bytes: Buffer): PayloadOpener["fault"] => {
      const opener = new PayloadOpener(key);
      try {
        for (const _ of opener.push(bytes));
        for (const _ of opener.end());
      } catch {
        return opener.fault;
      }
      return undefined;
    };
    expect(faultOf(payload)).toBeUndefined();
    expect(faultOf(payload.subarray(0, 2 * SEALED_CHUNK_SIZE))).toEqual({ kind: "truncated", chunk: 1 });
    const bad = Buffer.from(payload);
    bad[2 * SEALED_CHUNK_SIZE + 1]! ^= 1;
    expect(faultOf(bad)).toEqual({ kind: "tampered", chunk: 2 });
    const swapped = Buffer.concat([payload.subarray(SEALED_CHUNK_SIZE, 2 * SEALED_CHUNK_SIZE), payload.subarray(0, SEALED_CHUNK_SIZE), payload.subarray(2 * SEALED_CHUNK_SIZE)]);
    expect(faultOf(swapped)).toEqual({ kind: "tampered", chunk: 0 });
    const short = await split(await sealed(randomBytes(CHUNK_SIZE), id), id);
    const appended = new PayloadOpener(short.key);
    expect(() => {
      for (const _ of appended.push(Buffer.concat([short.payload, randomBytes(100)])));
    }).toThrow(/appended data/);
    expect(appended.fault).toEqual({ kind: "malformed", chunk: 0 });
  });
});
