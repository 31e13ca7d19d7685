// AF_VSOCK streams for the guests, on airlock's own native shim (host-tools/native, built into both
// guest images as `airlock-native`): non-blocking sockets polled on Node's loop. Reads happen only
// while the stream's reader wants more, so a peer that sends faster than we consume fills the
// kernel's receive buffer (virtio-vsock credit, 256 KiB), the kernel stops granting it credit, and
// the sender waits: nothing a peer does makes us buffer more than READ_BUFFER + READ_PIECE. The
// fabric on the host holds every guest to that credit (host-tools/src/fabric/router.ts resets a
// connection that overruns it), so the bound holds end to end without a protocol of our own.
// Writes never block the loop: what the kernel cannot take yet waits for the socket to be writable.
// (node-vsock's binary, used before, read on a thread of its own with no way to pause it, and sent
// blocking on the calling thread: a fast sender grew our heap until the guest ran out of memory.)
// Protocols on top must not rely on half-close (framing says where a message ends).
import { writeSync, writevSync } from "node:fs";
import { Duplex } from "node:stream";
import { AirlockError } from "./errors.ts";
import { nativeAddon } from "./native.ts";

interface Poller {
  start(readable: boolean, writable?: boolean): void;
  stop(): void;
  close(): void;
}
interface Shim {
  listenVsock(port: number, backlog: number): number;
  /** A non-blocking accepted socket, -1 when none is pending. */
  accept(fd: number): number;
  /** A non-blocking connect under way: poll for writable, then socketError. */
  connectVsock(cid: number, port: number): number;
  socketError(fd: number): number;
  /** null when the read would block; bytes 0 at end of stream. */
  recvMsg(fd: number, buf: Uint8Array): { bytes: number } | null;
  close(fd: number): void;
  Poller: new (fd: number, callback: (err: string | null, events: number) => void) => Poller;
}

const shim = (): Shim => nativeAddon<Shim>();

/** Most bytes taken from the kernel in one read. */
const READ_PIECE = 256 * 1024;
/** Bytes read but not yet taken by our reader before we stop reading (the Readable's high-water mark). */
export const READ_BUFFER = 1024 * 1024;

/** A Duplex over a connected non-blocking stream socket: AF_VSOCK in the guests, a Unix socket in tests. */
export class VsockStream extends Duplex {
  private readonly poller: Poller;
  private wantRead = false;
  private eof = false;
  private fdClosed = false;
  /** A write the kernel could not take whole yet, continued when the socket is writable. */
  private pending: { chunks: Buffer[]; cb: (err?: Error | null) => void } | undefined;
  private scratch = Buffer.allocUnsafe(READ_PIECE);

  constructor(private readonly fd: number) {
    // Writes keep a socket's high-water mark (16 KiB): write() refuses, and 'drain' follows, as soon
    // as anything waits for the kernel — the secure channel's send window relies on it (secure-stream.ts).
    super({ readableHighWaterMark: READ_BUFFER });
    this.poller = new (shim().Poller)(fd, (err, _events) => this.onPoll(err));
  }

  private onPoll(err: string | null): void {
    if (this.fdClosed) return;
    if (err) return void this.destroy(new AirlockError("FABRIC", `vsock: poll failed: ${err}`));
    if (this.pending) this.flush();
    if (this.wantRead) this.readSome();
    this.repoll();
  }

  /** Polls for what we are waiting for: readable while our reader wants more, writable while a write waits. */
  private repoll(): void {
    if (this.fdClosed) return;
    const readable = this.wantRead && !this.eof;
    const writable = this.pending !== undefined;
    if (readable || writable) this.poller.start(readable, writable);
    else this.poller.stop();
  }

  private readSome(): void {
    try {
      while (this.wantRead && !this.eof && !this.fdClosed) {
        const r = shim().recvMsg(this.fd, this.scratch);
        if (r === null) return; // nothing more until the socket is readable again
        if (r.bytes === 0) {
          this.eof = true;
          this.push(null);
          return;
        }
        // A mostly full read is handed on as it is (a fresh buffer replaces it); a short one is copied.
        let chunk: Buffer;
        if (r.bytes >= READ_PIECE / 2) {
          chunk = this.scratch.subarray(0, r.bytes);
          this.scratch = Buffer.allocUnsafe(READ_PIECE);
        } else {
          chunk = Buffer.from(this.scratch.subarray(0, r.bytes));
        }
        this.wantRead = this.push(chunk);
      }
    } catch (err) {
      this.destroy(err as Error);
    }
  }

  override _read(): void {
    this.wantRead = true;
    // Level-triggered: if bytes are waiting, the poll fires on the loop's next turn.
    this.repoll();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.pending = { chunks: [chunk], cb };
    this.flush();
    this.repoll();
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.pending = { chunks: chunks.map((c) => c.chunk), cb };
    this.flush();
    this.repoll();
  }

  /** Writes as much of the pending write as the kernel takes now; calls back once all of it went. */
  private flush(): void {
    const p = this.pending;
    if (!p) return;
    try {
      while (p.chunks.length > 0) {
        const n = p.chunks.length === 1 ? writeSync(this.fd, p.chunks[0]!) : writevSync(this.fd, p.chunks.slice(0, 64));
        let left = n;
        while (left > 0 && p.chunks.length > 0) {
          const c = p.chunks[0]!;
          if (c.length <= left) {
            left -= c.length;
            p.chunks.shift();
          } else {
            p.chunks[0] = c.subarray(left);
            left = 0;
          }
        }
        while (p.chunks.length > 0 && p.chunks[0]!.length === 0) p.chunks.shift();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EAGAIN") return; // the rest waits for writable
      this.pending = undefined;
      return p.cb(new AirlockError("FABRIC", `vsock: write failed: ${(err as Error).message}`));
    }
    this.pending = undefined;
    p.cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.closeFd();
    const p = this.pending;
    this.pending = undefined;
    p?.cb(err ?? new AirlockError("FABRIC", "vsock: the stream was destroyed before its write went out"));
    cb(err);
  }

  private closeFd(): void {
    if (this.fdClosed) return;
    this.fdClosed = true;
    this.poller.close();
    shim().close(this.fd);
  }
}

/** Connects to cid:port; rejects within `timeoutMs`. */
export function connectVsock(cid: number, port: number, timeoutMs = 10_000): Promise<VsockStream> {
  return new Promise((resolve, reject) => {
    const s = shim();
    let fd: number;
    try {
      fd = s.connectVsock(cid, port);
    } catch (err) {
      return reject(new AirlockError("FABRIC", `vsock connect to ${cid}:${port} failed: ${(err as Error).message}`));
    }
    let settled = false;
    const settle = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      poller.close();
      if (err) {
        s.close(fd);
        reject(err);
      } else {
        resolve(new VsockStream(fd));
      }
    };
    const timer = setTimeout(() => settle(new AirlockError("TIMEOUT", `vsock connect to ${cid}:${port} did not complete within ${timeoutMs} ms`)), timeoutMs);
    // Writable once the connect finished, one way or the other: SO_ERROR says which.
    const poller = new s.Poller(fd, (err) => {
      const code = err ? -1 : s.socketError(fd);
      if (code === 0) settle();
      else settle(new AirlockError("FABRIC", `vsock connect to ${cid}:${port} failed: ${err ?? `errno ${code}`}`));
    });
    poller.start(false, true);
  });
}

/**
 * Listens on `port` (any CID); each accepted connection is handed over as a stream. close()
 * closes the listening socket: later connections are refused by the guest's kernel.
 */
export function listenVsock(port: number, onConnection: (s: VsockStream) => void): { close(): void } {
  const s = shim();
  const fd = s.listenVsock(port, 16);
  let open = true;
  const poller = new s.Poller(fd, () => {
    while (open) {
      const c = s.accept(fd);
      if (c < 0) return;
      onConnection(new VsockStream(c));
    }
  });
  poller.start(true);
  return {
    close: () => {
      if (!open) return;
      open = false;
      poller.close();
      s.close(fd);
    },
  };
}
