// The kernel-hashes table QEMU writes into OVMF's SNP_KERNEL_HASHES page when it launches with
// kernel-hashes=on (target/i386/sev.c, sev_add_kernel_loader_hashes): OVMF checks -kernel,
// -initrd and -append against it, and the page is measured, so the launch digest covers them.
import { createHash, webcrypto } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
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

/** Reads of a streamed file: large enough that the per-read cost vanishes, small enough to stay in cache. */
const BLOCK = 1 << 20;
/**
 * A regular file up to this size (a kernel) is read whole and hashed on libuv's thread pool
 * (WebCrypto's digest), beside the main thread, which streams the larger file (an initrd).
 */
const POOL_HASH_MAX = 64 << 20;

/**
 * SHA-256 of a file, read once: small regular files whole and hashed off the main thread, others
 * streamed in 1 MiB blocks (the next block is read while this one is hashed), so a 100+ MB initrd
 * never sits in memory whole.
 */
export async function sha256Of(source: BlobSource, what: string): Promise<Buffer> {
  if (Buffer.isBuffer(source)) return createHash("sha256").update(source).digest();
  try {
    const file = await open(source, "r");
    try {
      const st = await file.stat();
      return st.isFile() && st.size <= POOL_HASH_MAX ? await hashWhole(file, st.size) : await hashStreamed(file);
    } finally {
      await file.close();
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    throw new AirlockError("MEASURE", `cannot read the ${what} ${source}${code ? ` (${code})` : ""}`, { cause: err, hint: `check the --${what} path` });
  }
}

/** Reads to the end (the file may have grown since its size was taken), then digests on the thread pool. */
async function hashWhole(file: FileHandle, size: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let want = size; ; want = BLOCK) {
    const buf = Buffer.allocUnsafe(Math.max(want, 1));
    const { bytesRead } = await file.read(buf, 0, buf.length, null);
    if (bytesRead === 0) break;
    parts.push(buf.subarray(0, bytesRead));
  }
  const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  return Buffer.from(await webcrypto.subtle.digest("SHA-256", data));
}

/** Two buffers in turn: the next block is read (on the thread pool) while this one is hashed. */
async function hashStreamed(file: FileHandle): Promise<Buffer> {
  const hash = createHash("sha256");
  const buffers = [Buffer.allocUnsafe(BLOCK), Buffer.allocUnsafe(BLOCK)] as const;
  let which = 0;
  let pending = file.read(buffers[which], 0, BLOCK, null);
  for (;;) {
    const { bytesRead, buffer } = await pending;
    if (bytesRead === 0) break;
    which ^= 1;
    pending = file.read(buffers[which], 0, BLOCK, null);
    hash.update(buffer.subarray(0, bytesRead));
  }
  return hash.digest();
}

/** The command line is hashed with its trailing NUL; no command line hashes as a lone NUL. */
export function cmdlineHash(append: string | undefined): Buffer {
  return createHash("sha256").update(Buffer.concat([Buffer.from(append ?? "", "utf8"), Buffer.alloc(1)])).digest();
}

/** Hashes the kernel, initrd (empty input when there is none) and command line. */
export async function hashKernelInputs(inputs: { kernel: BlobSource; initrd?: BlobSource | undefined; append?: string | undefined }): Promise<KernelHashes> {
  const [kernel, initrd] = await Promise.all([
    sha256Of(inputs.kernel, "kernel"),
    inputs.initrd === undefined || inputs.initrd === "" ? Promise.resolve(createHash("sha256").digest()) : sha256Of(inputs.initrd, "initrd"),
  ]);
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
