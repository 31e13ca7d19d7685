// The channel's byte-level pieces on their own: hellos, key schedule, records.
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { decodeHello, deriveKeys, encodeHello, HELLO_SIZE, MAX_PAYLOAD, newEphemeral, RecordCipher, RecordType, reportDataFor, transcriptHash } from "./protocol.ts";

describe("channel protocol", () => {
  it("derives the same four distinct keys on both sides, bound to the transcript", () => {
    const c = newEphemeral();
    const s = newEphemeral();
    const t = transcriptHash(encodeHello({ publicRaw: c.publicRaw, nonce: randomBytes(32) }), encodeHello({ publicRaw: s.publicRaw, nonce: randomBytes(32) }));
    const kc = deriveKeys(c, s.publicRaw, t);
    const ks = deriveKeys(s, c.publicRaw, t);
    expect(kc).toEqual(ks);
    const all = [kc.handshake.clientToServer, kc.handshake.serverToClient, kc.application.clientToServer, kc.application.serverToClient].map((k) => k.toString("hex"));
    expect(new Set(all).size).toBe(4);
    const other = deriveKeys(c, s.publicRaw, randomBytes(32));
    expect(other.application.clientToServer.equals(kc.application.clientToServer)).toBe(false);
  });

  it("binds the role into the report data", () => {
    const t = randomBytes(32);
    expect(reportDataFor("client", t)).toHaveLength(64);
    expect(reportDataFor("client", t).equals(reportDataFor("server", t))).toBe(false);
  });

  it("refuses a low-order (all-zero) X25519 key", () => {
    expect(() => deriveKeys(newEphemeral(), Buffer.alloc(32), randomBytes(32))).toThrow(expect.objectContaining({ code: "GUEST_PROTOCOL" }));
  });

  it("checks a hello's size and version", () => {
    const h = encodeHello({ publicRaw: randomBytes(32), nonce: randomBytes(32) });
    expect(h).toHaveLength(HELLO_SIZE);
    expect(decodeHello(h, "client").publicRaw.equals(h.subarray(1, 33))).toBe(true);
    expect(() => decodeHello(h.subarray(1), "client")).toThrow(/64 bytes, expected 65/);
    const v2 = Buffer.from(h);
    v2[0] = 2;
    expect(() => decodeHello(v2, "server")).toThrow(/version 2/);
  });

  it("seals records under a moving counter: equal payloads never give equal bytes, and order matters", () => {
    const key = randomBytes(32);
    const tx = new RecordCipher(key);
    const a = tx.seal(RecordType.DATA, Buffer.from("same"));
    const b = tx.seal(RecordType.DATA, Buffer.from("same"));
    expect(a.equals(b)).toBe(false);
    const rx = new RecordCipher(key);
    expect(() => rx.open(b.subarray(0, 4), b.subarray(4))).toThrow(expect.objectContaining({ code: "CRYPTO" }));
    const rx2 = new RecordCipher(key);
    expect(rx2.open(a.subarray(0, 4), a.subarray(4))).toEqual({ type: RecordType.DATA, payload: Buffer.from("same") });
    expect(rx2.open(b.subarray(0, 4), b.subarray(4)).payload.toString()).toBe("same");
  });

  it("authenticates the length header", () => {
    const key = randomBytes(32);
    const rec = new RecordCipher(key).seal(RecordType.DATA, Buffer.from("x"));
    const head = Buffer.from(rec.subarray(0, 4));
    head[0] = 1;
    expect(() => new RecordCipher(key).open(head, rec.subarray(4))).toThrow(/does not authenticate/);
  });

  it("refuses payloads over the record bound", () => {
    expect(() => new RecordCipher(randomBytes(32)).seal(RecordType.DATA, Buffer.alloc(MAX_PAYLOAD + 1))).toThrow(/exceeds/);
  });
});
