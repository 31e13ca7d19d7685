// Dataset encryption throughput: airlock's age implementation (proto/src/age) streaming 256 MiB
// both ways, against raw ChaCha20-Poly1305 of node:crypto in the same run (the ratio is the
// figure; aim ≥ 0.7), and against the `age-encryption` npm package (typage) on a smaller size.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { Decrypter, Encrypter, generateIdentity, identityToRecipient } from "age-encryption";
import { decrypt, encrypt, formatIdentityFile, X25519Identity } from "../../proto/src/age/index.ts";
import type { Reporter } from "./harness.ts";
import { throughput } from "./harness.ts";

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

// The raw figure is ChaCha20-Poly1305 alone in the same shape as a streamed pipeline: 64 KiB
// calls, fresh nonce buffers, outputs yielded from a generator and drained. A synchronous loop
// that drops its outputs measured 30-50% slower here (V8 collects the 64 KiB outputs late), so it
// would flatter the ratio; this baseline is the best node:crypto does, not a handicapped one.
async function* rawSealStream(block: Buffer, total: number, key: Buffer): AsyncGenerator<Buffer> {
  for (let off = 0, i = 0; off < total; off += 64 * 1024, i++) {
    const nonce = Buffer.alloc(12);
    nonce.writeUInt32BE(i, 0);
    const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
    const o = off % block.length;
    yield c.update(block.subarray(o, o + 64 * 1024));
    c.final();
    yield c.getAuthTag();
  }
}

async function* rawOpenStream(sealed: Buffer[], key: Buffer): AsyncGenerator<Buffer> {
  for (let i = 0; i < sealed.length; i++) {
    const nonce = Buffer.alloc(12);
    nonce.writeUInt32BE(i, 0);
    const s = sealed[i]!;
    const d = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
    d.setAuthTag(s.subarray(s.length - 16));
    const pt = d.update(s.subarray(0, s.length - 16));
    d.final();
    yield pt;
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

// A full GC between timed runs (bench runs are not started with --expose-gc).
setFlagsFromString("--expose-gc");
const collectGarbage = runInNewContext("gc") as () => void;

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

  // The machine is shared: raw and airlock runs alternate, each round gives its own ratio, and
  // besides wall time each run's CPU time (process.cpuUsage) is taken: under contention from
  // other processes, wall time mostly measures waiting for a core, CPU time measures the work.
  const ROUNDS = 5;
  type Run = { wall: number; cpu: number };
  const t = { rawSeal: [] as Run[], enc: [] as Run[], rawOpen: [] as Run[], dec: [] as Run[] };
  const time = async (fn: () => unknown): Promise<Run> => {
    collectGarbage(); // the previous run's garbage must not be collected on this run's clock
    const c0 = process.cpuUsage();
    const w0 = process.hrtime.bigint();
    await fn();
    const wall = Number(process.hrtime.bigint() - w0) / 1e6;
    const c = process.cpuUsage(c0);
    return { wall, cpu: (c.user + c.system) / 1000 };
  };
  await drain(encrypt(source(block, 8 * MiB), [id.recipient])); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    t.rawSeal.push(await time(() => drain(rawSealStream(block, SIZE, rawKey))));
    t.enc.push(await time(() => drain(encrypt(source(block, SIZE), [id.recipient]))));
    t.rawOpen.push(await time(() => drain(rawOpenStream(sealed, rawKey))));
    t.dec.push(
      await time(async () => {
        const n = await drain(decrypt(source(ctBuf, ctBuf.length), [id]));
        if (n !== SIZE) throw new Error(`decrypted ${n} bytes, expected ${SIZE}`);
      }),
    );
  }
  const med = (runs: Run[], k: keyof Run): number => median(runs.map((x) => x[k]));
  const ratio = (raw: Run[], ours: Run[], k: keyof Run): number => median(raw.map((x, i) => x[k] / ours[i]![k]));
  const note = `median of ${ROUNDS} interleaved rounds`;
  report.figure("raw chacha20-poly1305 seal, 64 KiB calls", throughput(SIZE, med(t.rawSeal, "wall")) / MiB, "MiB/s", `node:crypto, ${note}`);
  report.figure("raw chacha20-poly1305 open, 64 KiB calls", throughput(SIZE, med(t.rawOpen, "wall")) / MiB, "MiB/s", `node:crypto, ${note}`);
  report.figure("airlock age encrypt (256 MiB streamed)", throughput(SIZE, med(t.enc, "wall")) / MiB, "MiB/s", note);
  report.figure("airlock age decrypt (256 MiB streamed)", throughput(SIZE, med(t.dec, "wall")) / MiB, "MiB/s", note);
  report.figure("airlock age encrypt, per CPU second", throughput(SIZE, med(t.enc, "cpu")) / MiB, "MiB/s", `${note}, CPU time`);
  report.figure("airlock age decrypt, per CPU second", throughput(SIZE, med(t.dec, "cpu")) / MiB, "MiB/s", `${note}, CPU time`);
  report.ratio("age encrypt / raw seal (wall)", ratio(t.rawSeal, t.enc, "wall"), "≥ 0.7");
  report.ratio("age decrypt / raw open (wall)", ratio(t.rawOpen, t.dec, "wall"), "≥ 0.7");
  report.ratio("age encrypt / raw seal (CPU time)", ratio(t.rawSeal, t.enc, "cpu"), "≥ 0.7");
  report.ratio("age decrypt / raw open (CPU time)", ratio(t.rawOpen, t.dec, "cpu"), "≥ 0.7");

  // Reference: the Go age CLI decrypting the same 256 MiB from a (page-cached) file.
  const tmp = mkdtempSync(path.join(tmpdir(), "airlock-bench-"));
  try {
    const idFile = path.join(tmp, "id.txt");
    writeFileSync(idFile, formatIdentityFile(id), { mode: 0o600 });
    writeFileSync(path.join(tmp, "ct.age"), ctBuf);
    const goDec: Run[] = [];
    for (let r = 0; r < 3; r++) {
      collectGarbage();
      const w0 = process.hrtime.bigint();
      const res = spawnSync("age", ["-d", "-i", idFile, "-o", "/dev/null", path.join(tmp, "ct.age")]);
      const wall = Number(process.hrtime.bigint() - w0) / 1e6;
      if (res.status !== 0) throw new Error(`age -d failed: ${res.stderr.toString()}`);
      goDec.push({ wall, cpu: wall });
    }
    report.figure("age CLI (Go) decrypt, 256 MiB file", throughput(SIZE, med(goDec, "wall")) / MiB, "MiB/s", "median of 3, wall, reference");
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  // typage (age-encryption 0.3.1, pure-JS noble ciphers) on web streams, 64 MiB.
  const tid = await generateIdentity();
  const trec = await identityToRecipient(tid);
  const tEnc: Run[] = [];
  for (let r = 0; r < 3; r++) {
    tEnc.push(
      await time(async () => {
        const e = new Encrypter();
        e.addRecipient(trec);
        await drainWeb(await e.encrypt(webStream(block, TYPAGE_SIZE)));
      }),
    );
  }
  const e = new Encrypter();
  e.addRecipient(trec);
  const tct: Uint8Array[] = [];
  await drainWeb(await e.encrypt(webStream(block, TYPAGE_SIZE)), tct);
  const tctBuf = Buffer.concat(tct);
  const tDec: Run[] = [];
  for (let r = 0; r < 3; r++) {
    tDec.push(
      await time(async () => {
        const d = new Decrypter();
        d.addIdentity(tid);
        const n = await drainWeb(await d.decrypt(webStream(tctBuf, tctBuf.length)));
        if (n !== TYPAGE_SIZE) throw new Error("typage decrypted the wrong size");
      }),
    );
  }
  report.figure("age-encryption npm encrypt (64 MiB streamed)", throughput(TYPAGE_SIZE, med(tEnc, "wall")) / MiB, "MiB/s", "median of 3");
  report.figure("age-encryption npm decrypt (64 MiB streamed)", throughput(TYPAGE_SIZE, med(tDec, "wall")) / MiB, "MiB/s", "median of 3");
  report.figure("age-encryption npm encrypt, per CPU second", throughput(TYPAGE_SIZE, med(tEnc, "cpu")) / MiB, "MiB/s", "median of 3, CPU time");
  report.figure("age-encryption npm decrypt, per CPU second", throughput(TYPAGE_SIZE, med(tDec, "cpu")) / MiB, "MiB/s", "median of 3, CPU time");
  report.ratio("airlock / age-encryption npm, encrypt (CPU time)", throughput(SIZE, med(t.enc, "cpu")) / throughput(TYPAGE_SIZE, med(tEnc, "cpu")));
  report.ratio("airlock / age-encryption npm, decrypt (CPU time)", throughput(SIZE, med(t.dec, "cpu")) / throughput(TYPAGE_SIZE, med(tDec, "cpu")));
}
