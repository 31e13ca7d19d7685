// Content-addressed uploads into the remote cache: `<cache>/blobs/sha256/<hex>`. A blob already
// there is skipped; a cut transfer leaves `<hex>.part`, which the next upload continues from its
// size; the remote host hashes the whole file before it is renamed into place, so a blob under its
// final name is always whole and right. Writes are pipelined (many SFTP requests in flight), as
// scp and sftp do, so the link's latency does not bound the throughput.
//
// Everything goes through one SFTP session (folders made, sizes asked, files written, renamed)
// and one command per batch of blobs (the hashes): opening an SSH session (sshd forks, execs a
// shell) costs about as much as sending 30 MiB here, so a session per file would dominate
// (README.md § Figures). The hash is OpenSSL's where the host has it (SHA extensions: ~5× faster
// than coreutils' sha256sum, which is the fallback).
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, stat } from "node:fs/promises";
import path from "node:path";
import type { ClientChannel, SFTPWrapper } from "ssh2";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { SshConnection } from "./connection.ts";

/** Bytes per SFTP write (OpenSSH takes up to 256 KiB; ssh2 splits to the server's limit) and writes in flight. */
const CHUNK = 64 * 1024;
const IN_FLIGHT = 32;
/** Bytes per local read. */
const READ_BLOCK = 1 << 20;
/** Hashes each remote file named on a line of stdin as it comes, `<hex> *<path>` per line (both tools print that form). */
const HASH_LOOP = `while IFS= read -r f; do if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r -- "$f"; else sha256sum -b -- "$f"; fi; done`;

/**
 * One remote command hashing the files handed to it while the next ones are sent: its session
 * opens during the first transfer and each hash overlaps the next file's, so only the last file's
 * hash adds to the upload's time.
 */
class RemoteHasher {
  private readonly channel: Promise<ClientChannel>;
  private readonly closed: Promise<{ stdout: string; stderr: string }>;

  constructor(conn: SshConnection) {
    this.channel = conn.execStream(HASH_LOOP);
    this.closed = this.channel.then(
      (ch) =>
        new Promise((resolve) => {
          let stdout = "";
          let stderr = "";
          ch.on("data", (d: Buffer) => stdout.length < 1 << 20 && (stdout += d.toString("utf8")));
          ch.stderr.on("data", (d: Buffer) => stderr.length < 64 * 1024 && (stderr += d.toString("utf8")));
          ch.on("close", () => resolve({ stdout, stderr }));
        }),
    );
    this.channel.catch(() => {}); // surfaces in done()
  }

  add(file: string): void {
    if (file.includes("\n")) throw new AirlockError("REMOTE", `the remote cache path ${JSON.stringify(file)} holds a line break`);
    void this.channel.then((ch) => ch.write(`${file}\n`), () => {});
  }

  /** Ends the command without waiting for it (a transfer failed). */
  abort(): void {
    void this.channel.then((ch) => ch.close(), () => {});
  }

  /** Every hash, by path, once the command has hashed all it was given (bounded). */
  async done(timeoutMs: number): Promise<{ hashes: Map<string, string>; stderr: string }> {
    const ch = await this.channel;
    ch.end();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        ch.close();
        reject(new AirlockError("TIMEOUT", `hashing the uploaded files did not finish within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
    });
    try {
      const { stdout, stderr } = await Promise.race([this.closed, timeout]);
      const hashes = new Map<string, string>();
      for (const line of stdout.split("\n")) {
        const m = /^([0-9a-f]{64}) \*(.+)$/.exec(line);
        if (m) hashes.set(m[2]!, m[1]!);
      }
      return { hashes, stderr };
    } finally {
      clearTimeout(timer);
    }
  }
}
const HEX64 = /^[0-9a-f]{64}$/;
/** A transfer during which no write completes for this long is cut (the link is gone or stuck). */
const STALL_MS = 60_000;

export interface Blob {
  /** Local file. */
  file: string;
  sha256: string;
  size: number;
}

export interface UploadReport {
  sha256: string;
  size: number;
  /** Bytes actually sent this time (0 when the blob was present; less than size when resumed). */
  sent: number;
  status: "present" | "uploaded" | "resumed";
}

export async function hashFile(file: string): Promise<Blob> {
  const h = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { file, sha256: h.digest("hex"), size };
}

const p = <T>(fn: (cb: (err: Error | null | undefined, v: T) => void) => void): Promise<T> => new Promise((res, rej) => fn((err, v) => (err ? rej(err) : res(v))));

async function remoteSize(sftp: SFTPWrapper, file: string): Promise<number | undefined> {
  try {
    const st = await p<{ size: number; isFile(): boolean }>((cb) => sftp.stat(file, cb));
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

export class BlobUploader {
  private constructor(
    private readonly conn: SshConnection,
    private readonly sftp: SFTPWrapper,
    /** Absolute remote folder of the blobs. */
    readonly dir: string,
  ) {}

  static async open(conn: SshConnection, remoteCache: string): Promise<BlobUploader> {
    const dir = path.posix.join(remoteCache, "blobs", "sha256");
    const sftp = await conn.sftp();
    try {
      await mkdirs(sftp, dir);
    } catch (err) {
      sftp.end();
      throw new AirlockError("REMOTE", `${conn.label}: cannot create ${dir}: ${(err as Error).message.slice(0, 200)}`);
    }
    return new BlobUploader(conn, sftp, dir);
  }

  path(sha256: string): string {
    return path.posix.join(this.dir, sha256);
  }

  /** Uploads one blob (or finds it there); onBytes sees the bytes sent so far. */
  async upload(blob: Blob, onBytes?: (sent: number) => void): Promise<UploadReport> {
    return (await this.uploadAll([blob], onBytes && ((_b, sent) => onBytes(sent))))[0]!;
  }

  /**
   * Uploads blobs (or finds them there), one after the other (largest first), then hashes every one sent on the
   * remote host in one command and renames those that match into place. A mismatch removes that
   * partial file and fails (after the others are in place). onBytes sees each blob's bytes sent.
   */
  async uploadAll(blobs: Blob[], onBytes?: (blob: Blob, sent: number) => void): Promise<UploadReport[]> {
    const reports: UploadReport[] = new Array<UploadReport>(blobs.length);
    const sent: { blob: Blob; part: string; report: UploadReport }[] = [];
    let hasher: RemoteHasher | undefined;
    // Largest first: each hash overlaps the next transfer, so the one left to wait for is the smallest.
    const order = blobs.map((_, i) => i).sort((a, b) => blobs[b]!.size - blobs[a]!.size);
    for (const i of order) {
      const blob = blobs[i]!;
      if (!HEX64.test(blob.sha256)) throw new AirlockError("INTERNAL", `not a sha256: ${blob.sha256}`);
      const final = this.path(blob.sha256);
      const pending = sent.find((s) => s.blob.sha256 === blob.sha256);
      if (pending || (await remoteSize(this.sftp, final)) === blob.size) {
        reports[i] = pending?.report ?? { sha256: blob.sha256, size: blob.size, sent: 0, status: "present" };
        continue;
      }
      const part = `${final}.part`;
      const have = await remoteSize(this.sftp, part);
      // Writes complete out of order, so a cut may leave holes in the last IN_FLIGHT chunks below the
      // partial file's size; those are written again (the rest was complete when they were issued).
      const offset = have !== undefined && have <= blob.size ? Math.max(0, have - IN_FLIGHT * CHUNK) : 0;
      hasher ??= new RemoteHasher(this.conn);
      let n: number;
      try {
        n = await this.send(blob, part, offset, onBytes && ((k) => onBytes(blob, k)));
      } catch (err) {
        hasher.abort();
        throw err;
      }
      // The remote host hashes what it has: the whole file, resumed or not.
      hasher.add(part);
      const report: UploadReport = { sha256: blob.sha256, size: blob.size, sent: n, status: offset > 0 ? "resumed" : "uploaded" };
      reports[i] = report;
      sent.push({ blob, part, report });
    }
    if (!hasher) return reports;
    const bytes = sent.reduce((k, s) => k + s.blob.size, 0);
    const { hashes: got, stderr } = await hasher.done(300_000 + bytes / 10_000);
    let failure: AirlockError | undefined;
    for (const { blob, part } of sent) {
      const hash = got.get(part);
      if (hash !== blob.sha256) {
        await p((cb) => this.sftp.unlink(part, (e) => cb(e, undefined))).catch(() => {});
        failure ??= new AirlockError("REMOTE", `${this.conn.label}: ${path.basename(blob.file)} arrived as sha256 ${hash ?? "?"} (${stderr.trim().slice(0, 100) || "no hash"}), not ${blob.sha256}; the partial upload was removed`, { hint: "run the command again (the upload starts over)" });
        continue;
      }
      await p((cb) => this.sftp.ext_openssh_rename(part, this.path(blob.sha256), (e) => cb(e, undefined)));
    }
    if (failure) throw failure;
    return reports;
  }

  /** Writes [offset, size) of the local file into the remote one, IN_FLIGHT writes at a time. */
  private async send(blob: Blob, remote: string, offset: number, onBytes?: (sent: number) => void): Promise<number> {
    const local = await open(blob.file, "r");
    if ((await local.stat()).size !== blob.size) {
      await local.close();
      throw new AirlockError("FILE_UNREADABLE", `${blob.file} changed while it was uploaded`);
    }
    const handle = await p<Buffer>((cb) => this.sftp.open(remote, offset > 0 ? "r+" : "w", 0o600, cb));
    let next = offset;
    let sent = 0;
    try {
      await new Promise<void>((resolve, reject) => {
        let active = 0;
        let failed = false;
        let stall = setTimeout(() => fail(new Error(`no progress for ${STALL_MS / 1000} s`)), STALL_MS);
        const progressed = (): void => {
          clearTimeout(stall);
          stall = setTimeout(() => fail(new Error(`no progress for ${STALL_MS / 1000} s`)), STALL_MS);
        };
        // The file is read a block at a time (fewer reads, fewer buffers to collect than one per
        // write); each write takes a slice of the current block (ssh2 copies it into its packet).
        let block: Buffer | undefined;
        let blockPos = 0;
        let reading = false;
        const pump = (): void => {
          while (!failed && !reading && active < IN_FLIGHT && next < blob.size) {
            if (!block || next >= blockPos + block.length) {
              const pos = next;
              const len = Math.min(READ_BLOCK, blob.size - pos);
              const buf = Buffer.allocUnsafe(len);
              reading = true;
              local.read(buf, 0, len, pos).then(
                ({ bytesRead }) => {
                  reading = false;
                  if (bytesRead !== len) return fail(new AirlockError("FILE_UNREADABLE", `${blob.file} changed while it was uploaded`));
                  block = buf;
                  blockPos = pos;
                  pump();
                },
                (err: Error) => {
                  reading = false;
                  fail(err);
                },
              );
              return;
            }
            const pos = next;
            const len = Math.min(CHUNK, blockPos + block.length - pos);
            next += len;
            active++;
            this.sftp.write(handle, block, pos - blockPos, len, pos, (err) => {
              active--;
              if (err) return fail(err);
              sent += len;
              progressed();
              onBytes?.(sent);
              pump();
            });
          }
          if (!failed && next >= blob.size && active === 0) finish();
        };
        const finish = (): void => {
          clearTimeout(stall);
          resolve();
        };
        const fail = (err: Error): void => {
          if (failed) return;
          failed = true;
          clearTimeout(stall);
          reject(err instanceof AirlockError ? err : new AirlockError("REMOTE", `${this.conn.label}: the upload of ${path.basename(blob.file)} was cut after ${offset + sent} of ${blob.size} bytes (${err.message}); the next upload continues from there`));
        };
        pump();
      });
    } finally {
      await local.close();
      // Bounded: on a cut link the close is never answered.
      await Promise.race([p((cb) => this.sftp.close(handle, (e) => cb(e, undefined))).catch(() => {}), new Promise((r) => setTimeout(r, 5_000).unref())]);
    }
    return sent;
  }

  close(): void {
    this.sftp.end();
  }
}

/** `mkdir -p` over SFTP: the missing folders of an absolute path, the last one mode 0700. */
async function mkdirs(sftp: SFTPWrapper, dir: string): Promise<void> {
  const parts = dir.split("/").filter(Boolean);
  let i = parts.length;
  // Up from the leaf to the first folder that exists, then down making the rest.
  while (i > 0) {
    const st = await p<{ isDirectory(): boolean }>((cb) => sftp.stat(`/${parts.slice(0, i).join("/")}`, cb)).catch(() => undefined);
    if (st?.isDirectory()) break;
    if (st) throw new Error(`/${parts.slice(0, i).join("/")} is not a folder`);
    i--;
  }
  for (i++; i <= parts.length; i++) {
    const d = `/${parts.slice(0, i).join("/")}`;
    await p((cb) => sftp.mkdir(d, i === parts.length ? { mode: 0o700 } : {}, (e) => cb(e, undefined))).catch(async (err: Error) => {
      // Made meanwhile by someone else: fine if it is a folder now.
      const st = await p<{ isDirectory(): boolean }>((cb) => sftp.stat(d, cb)).catch(() => undefined);
      if (!st?.isDirectory()) throw err;
    });
  }
}

/** Local file size and hash, or a clear error. */
export async function localBlob(file: string): Promise<Blob> {
  try {
    await stat(file);
  } catch {
    throw new AirlockError("FILE_UNREADABLE", `${file} is missing`);
  }
  return hashFile(file);
}
