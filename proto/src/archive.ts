// A sealed output is one archive: POSIX tar (ustar, with a pax "path" record for names that do not
// fit), so a recipient opens it with `age -d … | tar -x`. Everything the host could count — file
// names, sizes, modes, how many files — is inside; outside, the host sees one file whose size is
// padded to a bucket (zero blocks after the end-of-archive marker, which tar ignores).
//
// The agent and the enforcer both size an output with archiveEntryCost(), so "over its limit" is
// decided the same way on both sides before any byte leaves the sandbox.

const BLOCK = 512;
/** The end-of-archive marker: two zero blocks. */
export const ARCHIVE_TRAILER = 2 * BLOCK;
/** The smallest bucket: tiny outputs all look alike. */
export const MIN_BUCKET = 16 * 1024;

const roundUp = (n: number): number => Math.ceil(n / BLOCK) * BLOCK;

/** A pax record "LEN path=NAME\n", whose LEN counts its own digits. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** Bytes one file takes in the archive: headers plus its content rounded up to whole blocks. */
export function archiveEntryCost(name: Buffer, size: number): number {
  const pax = name.length > 100 ? BLOCK + roundUp(paxRecord("path", name).length) : 0;
  return pax + BLOCK + roundUp(size);
}

/**
 * The padded size of an archive of `size` bytes (trailer included) whose content limit is
 * `maxBytes`: the next power of two, at least MIN_BUCKET, never above the largest archive the limit
 * allows. The host learns only which bucket — about log2(log2(maxBytes / MIN_BUCKET) + 2) bits.
 */
export function archiveBucket(size: number, maxBytes: number): number {
  const cap = roundUp(maxBytes) + ARCHIVE_TRAILER;
  let bucket = MIN_BUCKET;
  while (bucket < size) bucket *= 2;
  return Math.max(size, Math.min(bucket, Math.max(cap, MIN_BUCKET)));
}

function octal(buf: Buffer, off: number, len: number, value: number): void {
  buf.write(value.toString(8).padStart(len - 1, "0"), off, len - 1, "ascii");
  buf[off + len - 1] = 0;
}

function header(name: Buffer, size: number, mode: number, type: "0" | "x"): Buffer {
  const h = Buffer.alloc(BLOCK);
  name.copy(h, 0, 0, Math.min(name.length, 100));
  octal(h, 100, 8, mode);
  octal(h, 108, 8, 0); // uid
  octal(h, 116, 8, 0); // gid
  octal(h, 124, 12, size);
  octal(h, 136, 12, 0); // mtime: nothing about when the workload wrote it
  h.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  h.write(type, 156, "ascii");
  h.write("ustar\0", 257, "ascii");
  h.write("00", 263, "ascii");
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0"), 148, "ascii");
  h[154] = 0;
  h[155] = 0x20;
  return h;
}

/** The header blocks that precede a file's content (a pax record first when its name is long). */
export function archiveEntryHeader(name: Buffer, size: number, mode: number): Buffer {
  if (name.length <= 100) return header(name, size, mode & 0o777, "0");
  const record = paxRecord("path", name);
  const pax = Buffer.alloc(roundUp(record.length));
  record.copy(pax);
  return Buffer.concat([header(Buffer.from("PaxHeader"), record.length, 0o644, "x"), pax, header(name.subarray(0, 100), size, mode & 0o777, "0")]);
}

/** Zero bytes that complete a file's content to whole blocks. */
export function archiveEntryPadding(size: number): Buffer {
  return Buffer.alloc(roundUp(size) - size);
}

/** A name that may go into an archive: a relative path, valid UTF-8, no NUL, no empty, '.' or '..' part. */
export function checkArchiveName(name: Buffer): boolean {
  if (name.length === 0 || name.length > 4096 || name.includes(0)) return false;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(name);
  } catch {
    return false;
  }
  return !text.startsWith("/") && text.split("/").every((p) => p !== "" && p !== "." && p !== "..");
}

/**
 * A released open-output file's path: each part from a set that may be printed and written on any
 * host as is (no control or bidi characters, no hidden files, no "." or ".."), at most
 * MAX_OPEN_DEPTH parts. The firewall withholds an output with any other name; the host writer
 * checks it again before it writes.
 */
export const MAX_OPEN_DEPTH = 8;
const SAFE_SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$/;

export function isSafeOpenName(name: string): boolean {
  const parts = name.split("/");
  return parts.length <= MAX_OPEN_DEPTH && parts.every((p) => SAFE_SEGMENT.test(p));
}
