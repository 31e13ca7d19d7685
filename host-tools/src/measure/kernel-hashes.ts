// The kernel-hashes table QEMU writes into OVMF's SNP_KERNEL_HASHES page when it launches with
// kernel-hashes=on (target/i386/sev.c, sev_add_kernel_loader_hashes): OVMF checks -kernel,
// -initrd and -append against it, and the page is measured, so the launch digest covers them.
import { createHash } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import { AirlockError } from "../../../proto/src/errors.ts";
import { guidToBytes, PAGE_SIZE } from "./ovmf.ts";

const TABLE_GUID = "9438d606-4f22-4cc9-b479-a793d411fd21";
const CMDLINE_GUID = "97d02dd8-bd20-4c94-aa78-e7714d36ab2a";
const INITRD_GUID = "44baf731-3a2f-4bd7-9af1-41e29169781d";
const KERNEL_GUID = "4de79437-abd2-427f-b835-d5b172d2045b";

const ENTRY_LEN = 16 + 2 + 32; // GUID, u16 length, SHA-256
const TABLE_LEN = 16 + 2 + 3 * ENTRY_LEN; // 168: what the header's length field says
/** QEMU pads the table to a 16-byte multiple (PaddedSevHashTable). */
export const KERNEL_HASHES_TABLE_SIZE = (TABLE_LEN + 15) & ~15;

/** SHA-256 digests of what QEMU loads with -kernel, -initrd and -append. */
export interface KernelHashes {
  kernel: Buffer;
  initrd: Buffer;
  cmdline: Buffer;
}

/** A file path (streamed) or contents already in memory. */
export type BlobSource = string | Buffer;

/**
 * Reads of a file, into one buffer reused from read to read: large enough that the per-read cost
 * vanishes, small enough to stay in the CPU's cache between the read's copy and the hash. Measured
 * on the 2-core bench host (10 MB kernel + 100 MB initrd, page cache warm): 1 MiB blocks beat
 * 4 MiB and 8 MiB ones, and synchronous reads beat double-buffered reads on libuv's pool (medians
 * of 9 in one process, both files: ~90 ms against ~110 ms). Measured again in a fresh process, as
 * `airlock measure` runs (medians of 11, alternated): 128 KiB, 256 KiB and 1 MiB blocks tie at
 * ~141 ms for the whole process (node's start included), and reads on the pool lose 5-10 ms
 * whether 2 x 1 MiB or 4 x 256 KiB are in flight: every completed read costs the main thread an
 * event-loop wake-up, and the hash then reads bytes that another core copied.
 */
const BLOCK = 1 << 20;
/** A long file is hashed in runs of this many bytes, the event loop served between them. */
const YIELD_EVERY = 16 << 20;

let block: Buffer | undefined;

/**
 * SHA-256 of a file, read once from start to end and hashed as it is read. The reads are
 * synchronous (the hashing is synchronous OpenSSL work anyway, and a read from the page cache is a
 * copy); a long file yields to the event loop every 16 MiB so that a server measuring an image
 * (the emulated PSP) stays responsive. Hashing the kernel beside the initrd (the kernel read whole
 * and digested on libuv's pool, as before) measured slower on 2 cores than one after the other:
 * the kernel is a tenth of the bytes, and its extra copy and thread hand-offs cost more than that.
 * So did a worker_threads Worker, measured through the CLI (3 rounds, medians of 15, alternated):
 * the kernel on a worker 154-200 ms against 155-168 ms one after the other, the initrd on it
 * 174-201 ms. A worker costs the main thread ~2 ms to start and ~3 ms to hear back from, starts
 * hashing ~25 ms after it is asked, and when other work holds the second core (the bench host is
 * shared) it waits; the kernel alone takes ~8 ms.
 */
export async function sha256Of(source: BlobSource, what: string): Promise<Buffer> {
  if (Buffer.isBuffer(source)) return createHash("sha256").update(source).digest();
  let fd: number | undefined;
  try {
    fd = openSync(source, "r");
    const hash = createHash("sha256");
    // One buffer for every call: it is filled and hashed with no await between, so calls that
    // interleave never see each other's bytes.
    const buf = (block ??= Buffer.allocUnsafe(BLOCK));
    for (let sinceYield = 0; ; ) {
      // From the file's own offset (not a given position), so that a pipe (--initrd <(…)) reads too.
      const n = readSync(fd, buf, 0, BLOCK, null);
      if (n === 0) break;
      hash.update(n === BLOCK ? buf : buf.subarray(0, n));
      sinceYield += n;
      if (sinceYield >= YIELD_EVERY) {
        sinceYield = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    return hash.digest();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    throw new AirlockError("MEASURE", `cannot read the ${what} ${source}${code ? ` (${code})` : ""}`, { cause: err, hint: `check the --${what} path` });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The command line is hashed with its trailing NUL; no command line hashes as a lone NUL. */
export function cmdlineHash(append: string | undefined): Buffer {
  return createHash("sha256").update(Buffer.concat([Buffer.from(append ?? "", "utf8"), Buffer.alloc(1)])).digest();
}

/** Hashes the kernel, initrd (empty input when there is none) and command line. */
export async function hashKernelInputs(inputs: { kernel: BlobSource; initrd?: BlobSource | undefined; append?: string | undefined }): Promise<KernelHashes> {
  // One after the other: see sha256Of for why not side by side.
  const kernel = await sha256Of(inputs.kernel, "kernel");
  const initrd = inputs.initrd === undefined || inputs.initrd === "" ? createHash("sha256").digest() : await sha256Of(inputs.initrd, "initrd");
  return { kernel, initrd, cmdline: cmdlineHash(inputs.append) };
}

/** The padded 176-byte table: header {GUID, u16 168}, then cmdline, initrd, kernel entries. */
export function kernelHashesTable(h: KernelHashes): Buffer {
  const table = Buffer.alloc(KERNEL_HASHES_TABLE_SIZE);
  guidToBytes(TABLE_GUID).copy(table, 0);
  table.writeUInt16LE(TABLE_LEN, 16);
  let at = 18;
  for (const [guid, digest] of [[CMDLINE_GUID, h.cmdline], [INITRD_GUID, h.initrd], [KERNEL_GUID, h.kernel]] as const) {
    if (digest.length !== 32) throw new AirlockError("INTERNAL", "kernel hashes must be SHA-256 digests");
    guidToBytes(guid).copy(table, at);
    table.writeUInt16LE(ENTRY_LEN, at + 16);
    digest.copy(table, at + 18);
    at += ENTRY_LEN;
  }
  return table;
}

/** The 4 KiB page OVMF's SNP_KERNEL_HASHES section holds: zeros with the table at `offset`. */
export function kernelHashesPage(h: KernelHashes, offset: number): Buffer {
  if (!Number.isInteger(offset) || offset < 0 || offset + KERNEL_HASHES_TABLE_SIZE > PAGE_SIZE) {
    throw new AirlockError("MEASURE", `the firmware puts the kernel-hashes table at page offset 0x${offset.toString(16)}, where ${KERNEL_HASHES_TABLE_SIZE} bytes do not fit`);
  }
  const page = Buffer.alloc(PAGE_SIZE);
  kernelHashesTable(h).copy(page, offset);
  return page;
}
