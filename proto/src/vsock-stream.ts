// AF_VSOCK streams for the guests, on node-vsock's native binary (node-vsock-linux-x64-gnu; the
// `node-vsock` wrapper package is not in the registry). The binary's socket is low level: blocking
// send on the calling thread, reads on a thread of its own, events through one callback, and
// end() shuts down both directions. This file turns it into a Node Duplex stream with bounded
// connects; protocols on top must not rely on half-close (framing says where a message ends).
import { createRequire } from "node:module";
import { Duplex } from "node:stream";
import { AirlockError } from "./errors.ts";

interface NativeVsockSocket {
  listen(port: number): void;
  connect(cid: number, port: number): void;
  setMaxConnectionAttempts(n: number): void;
  startRecv(): void;
  writeBuffer(buf: Buffer): void;
  end(): void;
  close(): void;
}
type EmitFn = (err: Error | null, name: string, ...args: unknown[]) => void;
type NativeCtor = new (emit: EmitFn, fd?: number) => NativeVsockSocket;

let ctor: NativeCtor | undefined;
function native(): NativeCtor {
  if (!ctor) {
    const require = createRequire(import.meta.url);
    ctor = (require("node-vsock-linux-x64-gnu") as { VsockSocket: NativeCtor }).VsockSocket;
  }
  return ctor;
}

/** Writes go to the kernel in pieces of this size, yielding between them. */
const WRITE_PIECE = 64 * 1024;

export class VsockStream extends Duplex {
  private sock: NativeVsockSocket | undefined;
  private closedNative = false;

  /** @internal */
  attach(sock: NativeVsockSocket): void {
    this.sock = sock;
  }

  /** @internal */
  startReceiving(): void {
    this.sock?.startRecv();
  }

  /** @internal called from the native event callback */
  onNative(name: string, args: unknown[]): void {
    if (name === "_data") this.push(args[0] as Buffer);
    else if (name === "end") this.push(null);
    else if (name === "_error") this.destroy(args[0] instanceof Error ? args[0] : new Error(String(args[0])));
  }

  override _read(): void {
    // Data is pushed as the native reader delivers it.
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (!this.sock) return cb(new Error("vsock: not connected"));
    let off = 0;
    const step = (): void => {
      try {
        const piece = chunk.subarray(off, off + WRITE_PIECE);
        this.sock!.writeBuffer(piece);
        off += piece.length;
      } catch (err) {
        return cb(err as Error);
      }
      if (off < chunk.length) setImmediate(step);
      else cb();
    };
    step();
  }

  override _final(cb: (err?: Error | null) => void): void {
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.closeNative();
    cb(err);
  }

  private closeNative(): void {
    if (this.closedNative || !this.sock) return;
    this.closedNative = true;
    try {
      this.sock.end();
    } catch {
      // already shut down by the peer
    }
    try {
      this.sock.close();
    } catch {
      // already closed
    }
  }
}

function wrap(fd?: number): VsockStream {
  const stream = new VsockStream();
  const Ctor = native();
  const sock = new Ctor((err, name, ...args) => {
    if (err) stream.destroy(err);
    else stream.onNative(name, args);
  }, fd);
  stream.attach(sock);
  return stream;
}

/** Connects to cid:port; rejects within `timeoutMs`. */
export function connectVsock(cid: number, port: number, timeoutMs = 10_000): Promise<VsockStream> {
  return new Promise((resolve, reject) => {
    const stream = new VsockStream();
    const Ctor = native();
    let settled = false;
    const timer = setTimeout(() => settle(new AirlockError("TIMEOUT", `vsock connect to ${cid}:${port} did not complete within ${timeoutMs} ms`)), timeoutMs);
    const settle = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        stream.destroy();
        reject(err);
      } else {
        resolve(stream);
      }
    };
    const sock = new Ctor((err, name, ...args) => {
      if (err) return settled ? stream.destroy(err) : settle(err);
      if (name === "_connect") {
        sock.startRecv();
        settle();
      } else if (name === "_error" && !settled) {
        settle(new AirlockError("FABRIC", `vsock connect to ${cid}:${port} failed: ${String((args[0] as Error)?.message ?? args[0])}`));
      } else {
        stream.onNative(name, args);
      }
    });
    stream.attach(sock);
    sock.setMaxConnectionAttempts(1);
    sock.connect(cid, port);
  });
}

interface ListenShim {
  listenVsock(port: number, backlog: number): number;
  acceptBlocking(fd: number): number;
  close(fd: number): void;
  Poller: new (fd: number, callback: (err: string | null, events: number) => void) => { start(readable: boolean): void; close(): void };
}

/**
 * Listens on `port` (any CID); each accepted connection is handed over as a stream. The listening
 * socket is airlock's own (the guest image's `airlock-native` shim, polled on Node's loop), not
 * node-vsock's: that one blocks a thread in accept(), so its close() did not stop the kernel from
 * accepting. close() here closes the socket: later connections are refused by the guest's kernel.
 */
export function listenVsock(port: number, onConnection: (s: VsockStream) => void): { close(): void } {
  const shim = createRequire(import.meta.url)("airlock-native") as ListenShim;
  const fd = shim.listenVsock(port, 16);
  let open = true;
  const poller = new shim.Poller(fd, () => {
    while (open) {
      const c = shim.acceptBlocking(fd);
      if (c < 0) return;
      const s = wrap(c);
      onConnection(s);
      s.startReceiving();
    }
  });
  poller.start(true);
  return {
    close: () => {
      if (!open) return;
      open = false;
      poller.close();
      shim.close(fd);
    },
  };
}
