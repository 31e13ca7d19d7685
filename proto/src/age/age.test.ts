// The age format against the real `age` CLI (Debian's age 1.1.x) in both directions, against
// typage (the age-encryption npm package) for scrypt, and hostile files: each fault is named.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { inspect } from "node:util";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Decrypter, Encrypter } from "age-encryption";
import { afterAll, describe, expect, it } from "vitest";
import { AirlockError } from "../errors.ts";
import { bech32Decode, bech32Encode } from "./bech32.ts";
import { CHUNK_SIZE, createDecryptStream, createEncryptStream, decrypt, encrypt, formatIdentityFile, parseIdentityFile, parseRecipientsFile, ScryptIdentity, ScryptRecipient, X25519Identity } from "./index.ts";
import type { AgeIdentity } from "./index.ts";

const dir = mkdtempSync(path.join(tmpdir(), "airlock-age-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cliIdentity(): { id: X25519Identity; file: string; recipient: string } {
  const file = path.join(dir, `id-${Math.random().toString(36).slice(2)}.txt`);
  execFileSync("age-keygen", ["-o", file], { stdio: "ignore" });
  const text = readFileSync(file, "utf8");
  const recipient = /# public key: (age1\w+)/.exec(text)![1]!;
  return { id: parseIdentityFile(text, file)[0]!, file, recipient };
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of it) out.push(c);
  return Buffer.concat(out);
}

async function ageEncrypt(data: Buffer, ids: X25519Identity[], armor = false): Promise<Buffer> {
  return collect(encrypt([data], ids.map((i) => i.recipient), { armor }));
}

async function failure(p: Promise<unknown>): Promise<AirlockError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(AirlockError);
    expect((err as AirlockError).code).toBe("CRYPTO");
    return err as AirlockError;
  }
  throw new Error("expected a failure");
}

function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 8)) & 0xff;
  return b;
}

const SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 200_000];

describe("keys", () => {
  it("reads age-keygen identities and derives the same recipient as age-keygen", () => {
    const { id, recipient } = cliIdentity();
    expect(id.recipient.toString()).toBe(recipient);
    expect(parseRecipientsFile(`# analyst\n${recipient}\n`, "r.txt")[0]!.toString()).toBe(recipient);
  });

  it("writes identities that age-keygen -y reads back", () => {
    const id = X25519Identity.generate();
    const file = path.join(dir, "ours.txt");
    writeFileSync(file, formatIdentityFile(id));
    expect(execFileSync("age-keygen", ["-y", file], { encoding: "utf8" }).trim()).toBe(id.recipient.toString());
  });

  it("never shows the secret key when printed or logged", () => {
    const id = X25519Identity.generate();
    const secret = id.encode();
    for (const s of [String(id), JSON.stringify({ id }), inspect(id), inspect({ id })]) {
      expect(s).not.toContain(secret);
      expect(s).not.toContain(secret.slice(16, 40));
    }
  });

  it("rejects bad bech32 with the file and line, without echoing a secret", () => {
    const id = X25519Identity.generate().encode();
    const typo = id.slice(0, 20) + (id[20] === "Q" ? "P" : "Q") + id.slice(21);
    const err = (() => {
      try {
        parseIdentityFile(`# c\n${typo}\n`, "keys.txt");
      } catch (e) {
        return e as AirlockError;
      }
      throw new Error("accepted a bad checksum");
    })();
    expect(err.message).toContain("keys.txt:2");
    expect(err.message).not.toContain(typo.slice(16));
    expect(() => parseRecipientsFile("age1qqqq\n", "r")).toThrow(/r:1/);
    expect(bech32Decode(bech32Encode("age", Buffer.alloc(32, 1)))!.data).toEqual(Buffer.alloc(32, 1));
  });
});

describe("interoperability with the age CLI", () => {
  it.each(SIZES)("age CLI encrypts %i bytes, we decrypt", async (n) => {
    const { id, recipient } = cliIdentity();
    const pt = pattern(n);
    const ptFile = path.join(dir, `pt-${n}`);
    writeFileSync(ptFile, pt);
    const ct = execFileSync("age", ["-r", recipient, ptFile]);
    expect((await collect(decrypt([ct], [id]))).equals(pt)).toBe(true);
    const armored = execFileSync("age", ["-a", "-r", recipient, ptFile]);
    expect((await collect(decrypt([armored], [id]))).equals(pt)).toBe(true);
  });

  it.each(SIZES)("we encrypt %i bytes, the age CLI decrypts", async (n) => {
    const { id, file } = cliIdentity();
    const pt = pattern(n);
    for (const armor of [false, true]) {
      const ctFile = path.join(dir, `ct-${n}-${armor}`);
      writeFileSync(ctFile, await ageEncrypt(pt, [id], armor));
      expect(execFileSync("age", ["-d", "-i", file, ctFile]).equals(pt)).toBe(true);
    }
  });

  it("decrypts a file for several recipients with any one identity, in chunks of odd sizes", async () => {
    const a = cliIdentity();
    const b = cliIdentity();
    const pt = pattern(150_000);
    const ct = execFileSync("age", ["-r", a.recipient, "-r", b.recipient], { input: pt });
    const pieces = [];
    for (let i = 0; i < ct.length; i += 777) pieces.push(ct.subarray(i, i + 777));
    expect((await collect(decrypt(pieces, [b.id]))).equals(pt)).toBe(true);
  });

  it("skips stanzas of unknown types (grease), as the age CLI does, with a 64-column body", async () => {
    const { id, file } = cliIdentity();
    const grease = { wrap: () => [{ args: ["grease-test", "x"], body: Buffer.alloc(48, 7) }] }; // 48 bytes = one full line + an empty one
    const pt = pattern(1000);
    const ct = await collect(encrypt([pt], [grease, id.recipient]));
    expect(ct.toString("latin1")).toContain("-> grease-test x\n");
    expect(execFileSync("age", ["-d", "-i", file], { input: ct }).equals(pt)).toBe(true);
    expect((await collect(decrypt([ct], [id]))).equals(pt)).toBe(true);
  });

  it("works as Node streams through stream.pipeline", async () => {
    const id = X25519Identity.generate();
    const pt = pattern(300_000);
    const out: Buffer[] = [];
    await pipeline(Readable.from([pt.subarray(0, 1000), pt.subarray(1000)]), createEncryptStream([id.recipient]), createDecryptStream([id]), async (src: AsyncIterable<Buffer>) => {
      for await (const c of src) out.push(c);
    });
    expect(Buffer.concat(out).equals(pt)).toBe(true);
    const bad = (await ageEncrypt(pt, [id])).subarray(0, 100_000);
    await expect(pipeline(Readable.from([bad]), createDecryptStream([id]), async (src: AsyncIterable<Buffer>) => {
      for await (const _ of src);
    })).rejects.toThrow(/truncated/);
  });

  it("interoperates with typage for X25519 both ways, streamed", async () => {
    const id = X25519Identity.generate();
    const pt = pattern(3 * CHUNK_SIZE + 5);
    const d = new Decrypter();
    d.addIdentity(id.encode());
    expect(Buffer.from(await d.decrypt(await collect(encrypt([pt], [id.recipient])))).equals(pt)).toBe(true);
    const e = new Encrypter();
    e.addRecipient(id.recipient.toString());
    const theirs = Buffer.from(await e.encrypt(pt));
    expect((await collect(decrypt([theirs], [id]))).equals(pt)).toBe(true);
  });

  it("reads and writes scrypt (passphrase) files compatible with typage", async () => {
    const pt = pattern(70_000);
    const ours = await collect(encrypt([pt], [new ScryptRecipient("correct horse", 10)]));
    const d = new Decrypter();
    d.addPassphrase("correct horse");
    expect(Buffer.from(await d.decrypt(ours)).equals(pt)).toBe(true);

    const e = new Encrypter();
    e.setPassphrase("battery staple");
    e.setScryptWorkFactor(10);
    const theirs = Buffer.from(await e.encrypt(pt));
    expect((await collect(decrypt([theirs], [new ScryptIdentity("battery staple")]))).equals(pt)).toBe(true);
    expect((await failure(collect(decrypt([theirs], [new ScryptIdentity("wrong")]))))).toBeDefined();
    expect((await failure(collect(decrypt([theirs], [new ScryptIdentity("battery staple", 8)])))).message).toMatch(/work factor/);
  });
});

describe("hostile files", () => {
  const id = X25519Identity.generate();
  const pt = pattern(4 * CHUNK_SIZE + 1000); // 5 chunks, the last one short
  let ct: Buffer;
  let payloadStart: number;
  const chunk = CHUNK_SIZE + 16;
  const setup = async (): Promise<void> => {
    ct ??= await ageEncrypt(pt, [id]);
    payloadStart = ct.indexOf("\n", ct.indexOf("--- ")) + 1 + 16;
  };
  const chunkAt = (i: number): [number, number] => [payloadStart + i * chunk, Math.min(payloadStart + (i + 1) * chunk, ct.length)];
  const open = (b: Buffer, ids: AgeIdentity[] = [id]): Promise<Buffer> => collect(decrypt([b], ids));

  it("names the wrong identity", async () => {
    await setup();
    expect((await failure(open(ct, [X25519Identity.generate()]))).message).toMatch(/wrong identity/);
  });

  it("names truncation at a chunk boundary and inside a chunk", async () => {
    await setup();
    expect((await failure(open(ct.subarray(0, chunkAt(4)[0])))).message).toMatch(/^truncated: chunk 3 .*final chunk is missing/);
    expect((await failure(open(ct.subarray(0, chunkAt(2)[0] + 100)))).message).toMatch(/truncated/);
    expect((await failure(open(ct.subarray(0, payloadStart)))).message).toMatch(/truncated: the payload has no final chunk/);
    expect((await failure(open(ct.subarray(0, payloadStart - 5)))).message).toMatch(/truncated/);
    expect((await failure(open(ct.subarray(0, 40)))).message).toMatch(/truncated/);
  });

  it("names reordered chunks", async () => {
    await setup();
    const [a0, a1] = chunkAt(1);
    const [b0, b1] = chunkAt(2);
    const swapped = Buffer.concat([ct.subarray(0, a0), ct.subarray(b0, b1), ct.subarray(a0, a1), ct.subarray(b1)]);
    expect((await failure(open(swapped))).message).toMatch(/^reordered: chunk 1 .* holds chunk 2/);
  });

  it("names tampering, and releases no plaintext of a chunk that fails", async () => {
    await setup();
    const bad = Buffer.from(ct);
    bad[chunkAt(1)[0] + 10]! ^= 1;
    const got: Buffer[] = [];
    const err = await failure(
      (async () => {
        for await (const c of decrypt([bad], [id])) got.push(c);
      })(),
    );
    expect(err.message).toMatch(/^tampered: chunk 1 /);
    expect(Buffer.concat(got).equals(pt.subarray(0, CHUNK_SIZE))).toBe(true); // chunk 0 only

    const tag = Buffer.from(ct);
    tag[chunkAt(0)[1] - 1]! ^= 0x80; // the tag of chunk 0
    got.length = 0;
    await failure(
      (async () => {
        for await (const c of decrypt([tag], [id])) got.push(c);
      })(),
    );
    expect(got).toHaveLength(0);
  });

  it("names appended data and a tampered header", async () => {
    await setup();
    expect((await failure(open(Buffer.concat([ct, Buffer.from("more")])))).message).toMatch(/the last one, fails authentication: .*appended/);
    const whole = await ageEncrypt(pattern(2 * CHUNK_SIZE), [id]); // the final chunk is a full one
    expect((await failure(open(Buffer.concat([whole, Buffer.alloc(100)])))).message).toMatch(/chunk 1 .* is the final chunk, but data follows/);
    const hdr = Buffer.from(ct);
    const macAt = hdr.indexOf("--- ") + 6;
    hdr[macAt] = hdr[macAt] === 0x41 ? 0x42 : 0x41;
    expect((await failure(open(hdr))).message).toMatch(/header MAC does not verify/);
    const extra = Buffer.from(ct.toString("latin1").replace("\n---", "\n-> grease x\n\n---"), "latin1");
    expect((await failure(open(extra))).message).toMatch(/header MAC does not verify/);
    expect((await failure(open(Buffer.from("age-encryption.org/v2\n")))).message).toMatch(/first line/);
    const zero = `age-encryption.org/v1\n-> X25519 ${"A".repeat(43)}\n${"A".repeat(43)}\n--- ${"A".repeat(43)}\n`;
    expect((await failure(open(Buffer.from(zero)))).message).toMatch(/low-order/);
    expect((await failure(open(Buffer.from("-> X25519 abc\n")))).message).toMatch(/not a valid age file/);
  });
});
