// Dataset encryption throughput: airlock's age implementation (proto/src/age) streaming 256 MiB
// both ways, against raw ChaCha20-Poly1305 of node:crypto in the same run (the ratio is the
// figure; aim ≥ 0.7), and against the `age-encryption` npm package (typage) on a smaller size.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { Decrypter, Encrypter, generateIdentity, identityToRecipient } from "age-encryption";
import { decrypt, encrypt, X25519Identity } from "../../proto/src/age/index.ts";
import type { Reporter } from "./harness.ts";
import { medianMs, throughput } from "./harness.ts";

const MiB = 1024 * 1024;
const SIZE = 256 * MiB;
const TYPAGE_SIZE = 64 * MiB;

function* source(block: Buffer, total: number): Generator<Buffer> {
  for (let sent = 0; sent < total; sent += block.length) yield block.subarray(0, Math.min(block.length, total - sent));
}

async function drain(it: AsyncIterable<Buffer>, keep?: Buffer[]): Promise<number> {
  let n = 0;
  for await (const c of it) {
    n += c.length;
    keep?.push(c);
  }
  return n;
}

function rawSeal(block: Buffer, total: number, chunk: number): void {
  const key = randomBytes(32);
  const nonce = Buffer.alloc(12);
  for (let off = 0, i = 0; off < total; off += chunk, i++) {
    nonce.writeUInt32BE(i, 0);
    const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
    c.update(block.subarray(0, chunk));
    c.final();
    c.getAuthTag();
  }
}

function webStream(block: Buffer, total: number): ReadableStream<Uint8Array> {
  const it = source(block, total);
  return new ReadableStream<Uint8Array>({
    pull(ctrl) {
      const r = it.next();
      if (r.done) ctrl.close();
      else ctrl.enqueue(new Uint8Array(r.value));
    },
  });
}

async function drainWeb(s: ReadableStream<Uint8Array>, keep?: Uint8Array[]): Promise<number> {
  let n = 0;
  const reader = s.getReader();
  for (;;) {
    const r = await reader.read();
    if (r.done) return n;
    n += r.value.length;
    keep?.push(r.value);
  }
}

function rawOpen(sealed: Buffer[], key: Buffer): void {
  const nonce = Buffer.alloc(12);
  for (let i = 0; i < sealed.length; i++) {
    nonce.writeUInt32BE(i, 0);
    const s = sealed[i]!;
    const d = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
    d.setAuthTag(s.subarray(s.length - 16));
    d.update(s.subarray(0, s.length - 16));
    d.final();
  }
}

function sealAll(block: Buffer, total: number, key: Buffer): Buffer[] {
  const out: Buffer[] = [];
  const nonce = Buffer.alloc(12);
  for (let off = 0, i = 0; off < total; off += 64 * 1024, i++) {
    nonce.writeUInt32BE(i, 0);
    const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
    const ct = c.update(block.subarray(off % block.length, (off % block.length) + 64 * 1024));
    c.final();
    out.push(Buffer.concat([ct, c.getAuthTag()]));
  }
  return out;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export default async function bench(report: Reporter): Promise<void> {
  const block = randomBytes(MiB);
  const id = X25519Identity.generate();
  const ct: Buffer[] = [];
  await drain(encrypt(source(block, SIZE), [id.recipient]), ct);
  const ctBuf = Buffer.concat(ct);
  ct.length = 0;
  const rawKey = randomBytes(32);
  const sealed = sealAll(block, SIZE, rawKey);

  // The machine is shared: raw and airlock runs alternate, and each round gives its own ratio,
  // so that load from elsewhere hits both sides of a ratio alike.
  const ROUNDS = 5;
  const t = { rawSeal: [] as number[], enc: [] as number[], rawOpen: [] as number[], dec: [] as number[] };
  const encRatio: number[] = [];
  const decRatio: number[] = [];
  const time = async (fn: () => unknown): Promise<number> => medianMs(fn, 1, 0);
  await drain(encrypt(source(block, 8 * MiB), [id.recipient])); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    const rs = await time(() => rawSeal(block, SIZE, 64 * 1024));
    const e = await time(() => drain(encrypt(source(block, SIZE), [id.recipient])));
    const ro = await time(() => rawOpen(sealed, rawKey));
    const d = await time(async () => {
      const n = await drain(decrypt(source(ctBuf, ctBuf.length), [id]));
      if (n !== SIZE) throw new Error(`decrypted ${n} bytes, expected ${SIZE}`);
    });
    t.rawSeal.push(rs);
    t.enc.push(e);
    t.rawOpen.push(ro);
    t.dec.push(d);
    encRatio.push(rs / e);
    decRatio.push(ro / d);
  }
  const note = `median of ${ROUNDS} interleaved rounds`;
  report.figure("raw chacha20-poly1305 seal, 64 KiB calls", throughput(SIZE, median(t.rawSeal)) / MiB, "MiB/s", `node:crypto, ${note}`);
  report.figure("raw chacha20-poly1305 open, 64 KiB calls", throughput(SIZE, median(t.rawOpen)) / MiB, "MiB/s", `node:crypto, ${note}`);
  report.figure("airlock age encrypt (256 MiB streamed)", throughput(SIZE, median(t.enc)) / MiB, "MiB/s", note);
  report.figure("airlock age decrypt (256 MiB streamed)", throughput(SIZE, median(t.dec)) / MiB, "MiB/s", note);
  report.ratio("age encrypt / raw seal", median(encRatio), "≥ 0.7");
  report.ratio("age decrypt / raw open", median(decRatio), "≥ 0.7");

  // typage (age-encryption 0.3.1, pure-JS noble ciphers) on web streams, 64 MiB.
  const tid = await generateIdentity();
  const trec = await identityToRecipient(tid);
  const tEncMs = await medianMs(async () => {
    const e = new Encrypter();
    e.addRecipient(trec);
    await drainWeb(await e.encrypt(webStream(block, TYPAGE_SIZE)));
  }, 3);
  const e = new Encrypter();
  e.addRecipient(trec);
  const tct: Uint8Array[] = [];
  await drainWeb(await e.encrypt(webStream(block, TYPAGE_SIZE)), tct);
  const tctBuf = Buffer.concat(tct);
  const tDecMs = await medianMs(async () => {
    const d = new Decrypter();
    d.addIdentity(tid);
    const n = await drainWeb(await d.decrypt(webStream(tctBuf, tctBuf.length)));
    if (n !== TYPAGE_SIZE) throw new Error("typage decrypted the wrong size");
  }, 3);
  report.figure("age-encryption npm encrypt (64 MiB streamed)", throughput(TYPAGE_SIZE, tEncMs) / MiB, "MiB/s", "median of 3");
  report.figure("age-encryption npm decrypt (64 MiB streamed)", throughput(TYPAGE_SIZE, tDecMs) / MiB, "MiB/s", "median of 3");
  report.ratio("airlock / age-encryption npm, encrypt", throughput(SIZE, median(t.enc)) / throughput(TYPAGE_SIZE, tEncMs));
  report.ratio("airlock / age-encryption npm, decrypt", throughput(SIZE, median(t.dec)) / throughput(TYPAGE_SIZE, tDecMs));
}
