// A deterministic writer for the cpio "newc" format the Linux kernel unpacks as an initramfs.
// Reproducibility: entries sorted by path, inode numbers assigned in that order, every timestamp
// fixed (SOURCE_DATE_EPOCH style), owner root unless told otherwise, no device numbers from the
// build host. The same entries always give the same bytes.
import { createReadStream } from "node:fs";
import type { Writable } from "node:stream";

export type CpioEntry =
  | { path: string; type: "dir"; mode?: number }
  | { path: string; type: "file"; mode?: number; data: Buffer }
  /** A file streamed from the host at write time; size must be its size (checked). */
  | { path: string; type: "hostfile"; mode?: number; source: string; size: number }
  | { path: string; type: "symlink"; target: string }
  | { path: string; type: "chardev"; mode?: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

export interface CpioOptions {
  /** Seconds since the epoch stamped on every entry. */
  mtime?: number;
}

function header(fields: { ino: number; mode: number; nlink: number; mtime: number; size: number; rdevMajor: number; rdevMinor: number; nameSize: number }): Buffer {
  const hex = (n: number): string => {
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio field out of range: ${n}`);
    return n.toString(16).padStart(8, "0");
  };
  const parts = ["070701", hex(fields.ino), hex(fields.mode), hex(0), hex(0), hex(fields.nlink), hex(fields.mtime), hex(fields.size), hex(0), hex(0), hex(fields.rdevMajor), hex(fields.rdevMinor), hex(fields.nameSize), hex(0)];
  return Buffer.from(parts.join(""), "ascii");
}

const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);

/** Checks entries and returns them in the canonical order; refuses duplicates and unsafe paths. */
export function canonicalEntries(entries: CpioEntry[]): CpioEntry[] {
  const seen = new Set<string>();
  for (const e of entries) {
    if (e.path.startsWith("/") || e.path.split("/").some((p) => p === "" || p === "." || p === "..")) {
      throw new Error(`cpio: unsafe or non-normalized path ${JSON.stringify(e.path)}`);
    }
    if (seen.has(e.path)) throw new Error(`cpio: duplicate path ${e.path}`);
    seen.add(e.path);
  }
  for (const e of entries) {
    const parent = e.path.split("/").slice(0, -1).join("/");
    if (parent && !seen.has(parent)) throw new Error(`cpio: ${e.path} has no parent directory entry ${parent}`);
  }
  return [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Writes the archive to `out` (not ended), returning the number of bytes written. */
export async function writeCpio(out: Writable, entries: CpioEntry[], options: CpioOptions = {}): Promise<number> {
  const mtime = options.mtime ?? 0;
  let written = 0;
  const write = (buf: Buffer): Promise<void> | void => {
    written += buf.length;
    if (!out.write(buf)) return new Promise((resolve) => out.once("drain", resolve));
  };
  let ino = 1;
  const emit = async (name: string, mode: number, nlink: number, size: number, rdevMajor = 0, rdevMinor = 0): Promise<void> => {
    const nameBuf = Buffer.from(`${name}\0`, "utf8");
    const h = header({ ino: ino++, mode, nlink, mtime, size, rdevMajor, rdevMinor, nameSize: nameBuf.length });
    await write(Buffer.concat([h, nameBuf, pad4(h.length + nameBuf.length)]));
  };
  for (const e of canonicalEntries(entries)) {
    switch (e.type) {
      case "dir":
        await emit(e.path, S_IFDIR | (e.mode ?? 0o755), 2, 0);
        break;
      case "file":
        await emit(e.path, S_IFREG | (e.mode ?? 0o644), 1, e.data.length);
        await write(e.data);
        await write(pad4(e.data.length));
        break;
      case "hostfile": {
        await emit(e.path, S_IFREG | (e.mode ?? 0o644), 1, e.size);
        let n = 0;
        for await (const chunk of createReadStream(e.source, { highWaterMark: 1 << 20 })) {
          n += (chunk as Buffer).length;
          await write(chunk as Buffer);
        }
        if (n !== e.size) throw new Error(`cpio: ${e.source} changed size while archiving (${e.size} → ${n})`);
        await write(pad4(e.size));
        break;
      }
      case "symlink": {
        const target = Buffer.from(e.target, "utf8");
        await emit(e.path, S_IFLNK | 0o777, 1, target.length);
        await write(target);
        await write(pad4(target.length));
        break;
      }
      case "chardev":
        await emit(e.path, S_IFCHR | (e.mode ?? 0o600), 1, 0, e.major, e.minor);
        break;
    }
  }
  await emit("TRAILER!!!", 0, 1, 0);
  return written;
}
