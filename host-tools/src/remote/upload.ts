// Content-addressed uploads into the remote cache: `<cache>/blobs/sha256/<hex>`. A blob already
// there is skipped; a cut transfer leaves `<hex>.part`, which the next upload continues from its
// size; the remote host hashes the whole file (sha256sum) before it is renamed into place, so a
// blob under its final name is always whole and right. Writes are pipelined (many SFTP requests
// in flight), as scp and sftp do, so the link's latency does not bound the throughput.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, stat } from "node:fs/promises";
import path from "node:path";
import type { SFTPWrapper } from "ssh2";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { SshConnection } from "./connection.ts";
import { shellQuote } from "./remote-airlock.ts";

/** Bytes per SFTP write (OpenSSH takes up to 256 KiB; ssh2 splits to the server's limit) and writes in flight. */
const CHUNK = 64 * 1024;
const IN_FLIGHT = 32;
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
    const r = await conn.exec(`mkdir -p -m 700 ${shellQuote(dir)}`, { timeoutMs: 30_000 });
    if (r.code !== 0) throw new AirlockError("REMOTE", `${conn.label}: cannot create ${dir}: ${r.stderr.trim().slice(0, 200)}`);
    return new BlobUploader(conn, await conn.sftp(), dir);
  }

  path(sha256: string): string {
    return path.posix.join(this.dir, sha256);
  }

  /** Uploads one blob (or finds it there); onBytes sees the bytes sent so far. */
  async upload(blob: Blob, onBytes?: (sent: number) => void): Promise<UploadReport> {
    if (!HEX64.test(blob.sha256)) throw new AirlockError("INTERNAL", `not a sha256: ${blob.sha256}`);
    const final = this.path(blob.sha256);
    if ((await remoteSize(this.sftp, final)) === blob.size) return { sha256: blob.sha256, size: blob.size, sent: 0, status: "present" };
    const part = `${final}.part`;
    const have = await remoteSize(this.sftp, part);
    // Writes complete out of order, so a cut may leave holes in the last IN_FLIGHT chunks below the
    // partial file's size; those are written again (the rest was complete when they were issued).
    const offset = have !== undefined && have <= blob.size ? Math.max(0, have - IN_FLIGHT * CHUNK) : 0;
    const sent = await this.send(blob, part, offset, onBytes);
    // The remote host hashes what it has: the whole file, resumed or not.
    const r = await this.conn.exec(`sha256sum -b -- ${shellQuote(part)}`, { timeoutMs: 300_000, maxStdout: 4096 });
    const got = /^([0-9a-f]{64}) /.exec(r.stdout.toString("latin1"))?.[1];
    if (r.code !== 0 || got !== blob.sha256) {
      await p((cb) => this.sftp.unlink(part, (e) => cb(e, undefined))).catch(() => {});
      throw new AirlockError("REMOTE", `${this.conn.label}: ${path.basename(blob.file)} arrived as sha256 ${got ?? "?"} (${r.stderr.trim().slice(0, 100) || "no hash"}), not ${blob.sha256}; the partial upload was removed`, { hint: "run the command again (the upload starts over)" });
    }
    await p((cb) => this.sftp.ext_openssh_rename(part, final, (e) => cb(e, undefined)));
    return { sha256: blob.sha256, size: blob.size, sent, status: offset > 0 ? "resumed" : "uploaded" };
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
        const pump = (): void => {
          while (!failed && active < IN_FLIGHT && next < blob.size) {
            const pos = next;
            const len = Math.min(CHUNK, blob.size - pos);
            next += len;
            active++;
            const buf = Buffer.allocUnsafe(len);
            local.read(buf, 0, len, pos).then(
              ({ bytesRead }) => {
                if (bytesRead !== len) throw new AirlockError("FILE_UNREADABLE", `${blob.file} changed while it was uploaded`);
                this.sftp.write(handle, buf, 0, len, pos, (err) => {
                  active--;
                  if (err) return fail(err);
                  sent += len;
                  progressed();
                  onBytes?.(sent);
                  if (next >= blob.size && active === 0) finish();
                  else pump();
                });
              },
              (err: Error) => {
                active--;
                fail(err);
              },
            );
          }
          if (next >= blob.size && active === 0) finish();
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

/** Local file size and hash, or a clear error. */
export async function localBlob(file: string): Promise<Blob> {
  try {
    await stat(file);
  } catch {
    throw new AirlockError("FILE_UNREADABLE", `${file} is missing`);
  }
  return hashFile(file);
}
