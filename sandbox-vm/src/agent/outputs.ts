// Collecting an output folder once the workload is over. Every process of the workload user is
// dead by then (workload.ts, killAllOf), so nothing in the folder can change: the checks below
// are for what the workload left there, not for races. Still, nothing is trusted: names are read
// as bytes (a name is data), nothing is followed, each file is opened without following a
// symlink and without blocking (a FIFO would), its descriptor must be a regular file, and it is
// read in pieces up to the size its descriptor reported, never more. What is refused is counted,
// never dropped silently. Sizes are summed before a byte leaves, so an output over its bound
// sends nothing at all.
import { archiveEntryCost } from "../../../proto/src/archive.ts";
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readSync } from "node:fs";
import type { Writable } from "node:stream";
import { sendData } from "../../../proto/src/control.ts";
import { toFirewall } from "./link.ts";

export const MAX_ENTRIES = 10_000;
export const MAX_DEPTH = 16;
export const MAX_PATH_BYTES = 4096;
/** Reads and data frames carry at most this much. */
export const PIECE_BYTES = 1024 * 1024;

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const SLASH = Buffer.from("/");
const utf8 = new TextDecoder("utf-8", { fatal: true });

export interface Refused {
  /** FIFOs, sockets, devices (and whatever else is neither a file, a folder nor a symlink). */
  special: number;
  symlinks: number;
  /** Names that are not UTF-8, and entries past the depth or path-length bound. */
  badNames: number;
  /** Folders that cannot be listed, files that cannot be opened or that shrank. */
  unreadable: number;
}

export interface OutputEntry {
  abs: Buffer;
  /** Path inside the output, '/'-separated, as bytes (valid UTF-8). */
  rel: Buffer;
  size: number;
  mode: 0o644 | 0o755;
  dev: number;
  ino: number;
}

export interface OutputScan {
  files: OutputEntry[];
  bytes: number;
  overLimit: boolean;
  refused: Refused;
}

export type Opened = { kind: "file"; fd: number; size: number; mode: 0o644 | 0o755; dev: number; ino: number } | { kind: "special" | "symlink" | "unreadable" };

/** Opens a path as a regular file or says what it is instead; never blocks, never follows. */
export function openRegular(p: Buffer | string): Opened {
  let fd: number;
  try {
    fd = openSync(p, OPEN_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ELOOP: the last component is a symlink. ENXIO: a socket. EACCES on a nodev mount: a device.
    return { kind: code === "ELOOP" ? "symlink" : code === "ENXIO" ? "special" : "unreadable" };
  }
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    return { kind: "special" };
  }
  return { kind: "file", fd, size: st.size, mode: st.mode & 0o100 ? 0o755 : 0o644, dev: st.dev, ino: st.ino };
}

export class ShrunkError extends Error {}

/**
 * A file's first `size` bytes in pieces of at most `piece` bytes; never asks for more than `size`.
 * Each piece is a view on one buffer reused for the next: use it before asking for the next.
 */
export function* readPieces(fd: number, size: number, piece = PIECE_BYTES): Generator<Buffer> {
  const buf = Buffer.allocUnsafe(Math.max(1, Math.min(piece, size)));
  for (let pos = 0; pos < size; ) {
    const n = readSync(fd, buf, 0, Math.min(buf.length, size - pos), pos);
    if (n === 0) throw new ShrunkError(`the file ended ${size - pos} bytes before its size`);
    pos += n;
    yield buf.subarray(0, n);
  }
}

/** Lists an output folder (bounded) and checks each file can be read to its size. */
export function scanOutput(mount: string, maxBytes: number, maxEntries = MAX_ENTRIES): OutputScan {
  const refused: Refused = { special: 0, symlinks: 0, badNames: 0, unreadable: 0 };
  const files: OutputEntry[] = [];
  let entries = 0;
  let overLimit = false;
  let bytes = 0;
  const root = lstatSync(mount, { throwIfNoEntry: false });
  if (!root) return { files, bytes, overLimit, refused }; // never created, or removed: empty
  if (!root.isDirectory()) {
    if (root.isSymbolicLink()) refused.symlinks++;
    else refused.special++;
    return { files, bytes, overLimit, refused };
  }
  // Returns false once the entry bound is passed (the walk stops there).
  const walk = (dir: Buffer, rel: Buffer | null, depth: number): boolean => {
    let names: Buffer[];
    try {
      names = readdirSync(dir, { encoding: "buffer" });
    } catch {
      refused.unreadable++;
      return true;
    }
    names.sort(Buffer.compare);
    for (const name of names) {
      if (++entries > maxEntries) return false;
      try {
        utf8.decode(name);
      } catch {
        refused.badNames++; // a folder with such a name counts once; its contents are not listed
        continue;
      }
      const r = rel ? Buffer.concat([rel, SLASH, name]) : name;
      const abs = Buffer.concat([dir, SLASH, name]);
      if (r.length > MAX_PATH_BYTES) {
        refused.badNames++;
        continue;
      }
      const st = lstatSync(abs, { throwIfNoEntry: false });
      if (!st) refused.unreadable++;
      else if (st.isDirectory()) {
        if (depth + 1 > MAX_DEPTH) refused.badNames++;
        else if (!walk(abs, r, depth + 1)) return false;
      } else if (st.isSymbolicLink()) refused.symlinks++;
      else if (!st.isFile()) refused.special++; // never opened: opening a device can act on it
      else {
        const o = openRegular(abs);
        if (o.kind !== "file") refused[o.kind === "symlink" ? "symlinks" : o.kind]++;
        else {
          closeSync(o.fd);
          files.push({ abs, rel: r, size: o.size, mode: o.mode, dev: o.dev, ino: o.ino });
          bytes += archiveEntryCost(r, o.size); // sized as the firewall sizes it: in a tar archive
        }
      }
    }
    return true;
  };
  if (!walk(Buffer.from(mount.replace(/\/+$/, "")), null, 0)) overLimit = true;
  if (bytes > maxBytes) overLimit = true;
  if (overLimit) return { files, bytes, overLimit, refused };
  // Read each file through once, so one that cannot be read to its size is counted here, before
  // the output's totals are sent, not found out halfway through sending it.
  const readable = files.filter((f) => {
    const o = openRegular(f.abs);
    if (o.kind !== "file") {
      refused[o.kind === "symlink" ? "symlinks" : o.kind]++;
      return false;
    }
    try {
      if (o.dev !== f.dev || o.ino !== f.ino || o.size < f.size) throw new ShrunkError("changed since it was listed");
      for (const piece of readPieces(o.fd, f.size)) void piece;
      return true;
    } catch {
      refused.unreadable++;
      return false;
    } finally {
      closeSync(o.fd);
    }
  });
  return { files: readable, bytes: readable.reduce((n, f) => n + archiveEntryCost(f.rel, f.size), 0), overLimit, refused };
}

/**
 * Sends one output: {type:"output"} with its totals and what was refused, then, unless it is over
 * its bound, each file as {type:"file"} followed by data frames totalling exactly its size. An
 * output over its bound is announced with no files and no bytes (what the enforcer requires: it is
 * withheld, and nothing of it crosses). A file that no longer matches what was listed cannot be
 * sent as announced: that ends the run (throws).
 */
export async function sendOutput(link: Writable, name: string, scan: OutputScan): Promise<void> {
  const files = scan.overLimit ? 0 : scan.files.length;
  const bytes = scan.overLimit ? 0 : scan.bytes;
  await toFirewall(link, { case: "output", value: { output: name, files, bytes: BigInt(bytes), overLimit: scan.overLimit, refused: scan.refused } });
  if (scan.overLimit) return;
  for (const f of scan.files) {
    await toFirewall(link, { case: "file", value: { output: name, name: f.rel, mode: f.mode, size: BigInt(f.size) } });
    const o = openRegular(f.abs);
    if (o.kind !== "file") throw new Error(`output ${name}: a listed file is no longer a regular file`);
    try {
      if (o.dev !== f.dev || o.ino !== f.ino || o.size < f.size) throw new Error(`output ${name}: a listed file changed`);
      for (const piece of readPieces(o.fd, f.size)) await sendData(link, piece);
    } finally {
      closeSync(o.fd);
    }
  }
}
