// A hostile workload that exhausts what the sandbox gives it, in order, saying so on stdout first:
//   1. 20 MiB of pseudo-random bytes into output `big` (AES-256-CTR keystream keyed by SHA-256 of
//      the seed read from its input, so the test can recompute them);
//   2. more than 64 KiB into output `over` (its limit);
//   3. /tmp, then the rest of /data (through `over`), until ENOSPC;
//   4. memory, 16 MiB at a time and every page touched, until the OOM killer ends it.
// Every loop is bounded. Reaching the end means the kernel never stopped it: exit 3.
import { createCipheriv, createHash } from "node:crypto";
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";

const MiB = 1024 * 1024;
const BIG_BYTES = 20 * MiB;
const say = (line) => writeSync(1, `exhaustion: ${line}\n`);

/** The large output's bytes, piece by piece: AES-256-CTR over zeros, key SHA-256(seed), IV zero. */
function* seededPieces(seed, total, piece = MiB) {
  const cipher = createCipheriv("aes-256-ctr", createHash("sha256").update(seed).digest(), Buffer.alloc(16));
  const zeros = Buffer.alloc(piece);
  for (let done = 0; done < total; done += piece) yield cipher.update(zeros.subarray(0, Math.min(piece, total - done)));
}

function writeAll(fd, buf) {
  for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off);
}

/** Appends 1 MiB pieces to `file` until ENOSPC (at most `boundMiB` of them); returns bytes written. */
function fillUntilFull(file, boundMiB) {
  const fd = openSync(file, "w", 0o644);
  const piece = Buffer.alloc(MiB, 0x5a);
  let written = 0;
  try {
    for (let i = 0; i < boundMiB; i++) {
      for (let off = 0; off < piece.length; ) {
        const n = writeSync(fd, piece, off);
        off += n;
        written += n;
      }
    }
  } catch (err) {
    if (err.code === "ENOSPC") return written;
    throw err;
  } finally {
    closeSync(fd);
  }
  throw new Error(`${file}: no ENOSPC after ${boundMiB} MiB`);
}

say("start");
const seed = readFileSync("/data/in/seed.txt", "utf8").trim();

const big = openSync("/data/out/big/random.bin", "w", 0o644);
const hash = createHash("sha256");
for (const p of seededPieces(seed, BIG_BYTES)) {
  hash.update(p);
  writeAll(big, p);
}
closeSync(big);
say(`big written: ${BIG_BYTES} bytes, sha256 ${hash.digest("hex")}`);

const over = openSync("/data/out/over/over-limit.bin", "w", 0o644);
writeAll(over, Buffer.alloc(96 * 1024, 0x4f));
closeSync(over);
say(`over written: ${96 * 1024} bytes`);

say(`/tmp full: ${fillUntilFull("/tmp/fill.bin", 4096)} bytes then ENOSPC`);
say(`/data full: ${fillUntilFull("/data/out/over/fill.bin", 4096)} bytes then ENOSPC`);

say("allocating memory until the OOM killer ends this");
const held = [];
for (let i = 1; i <= 1024; i++) {
  held.push(Buffer.allocUnsafeSlow(16 * MiB).fill(i & 0xff));
  say(`holding ${i * 16} MiB`);
}
say("survived 16 GiB of allocations: the kernel never stopped it");
process.exit(3);
