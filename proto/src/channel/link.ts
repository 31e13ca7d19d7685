// The raw side of a secure channel: owns the underlying Duplex, cuts its bytes into frames
// (u32be length ‖ body) with every length checked before anything is buffered, and lets one
// consumer at a time take them — the handshake (awaiting frames) and then the secure stream
// (pulling frames as its reader asks). The underlying stream is paused whenever the frames
// buffered here reach a bound, so a peer that floods cannot make us buffer without limit.
import type { Duplex } from "node:stream";
import { AirlockError } from "../errors.ts";

export interface Frame {
  /** The 4-byte length header (the record's associated data). */
  head: Buffer;
  body: Buffer;
}

/** A byte queue that yields whole frames. */
export class FrameSource {
  private chunks: Buffer[] = [];
  private length = 0;

  constructor(private readonly maxBody: number) {}

  get buffered(): number {
    return this.length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The next whole frame, or undefined when more bytes are needed. Throws on an oversized length. */
  next(): Frame | undefined {
    return this.nextFrame(undefined);
  }

  /**
   * The same, without allocating: a body that lies in one chunk is a view of it, one that spans
   * chunks is copied into `scratch` (at least maxBody bytes) — either way valid only until the
   * next call, so the caller must be done with it by then.
   */
  nextInto(scratch: Buffer): Frame | undefined {
    return this.nextFrame(scratch);
  }

  private nextFrame(scratch: Buffer | undefined): Frame | undefined {
    if (this.length < 4) return undefined;
    const head = this.peekHead();
    const bodyLength = head.readUInt32BE(0);
    // Checked before the body is waited for: a hostile length never makes us buffer beyond the bound.
    if (bodyLength > this.maxBody) throw new AirlockError("GUEST_PROTOCOL", `secure channel: a frame of ${bodyLength} bytes exceeds the limit of ${this.maxBody}`);
    if (this.length < 4 + bodyLength) return undefined;
    this.take(4, undefined);
    return { head, body: this.take(bodyLength, scratch) };
  }

  /** A copy of the first 4 bytes (they may span chunks). */
  private peekHead(): Buffer {
    const head = Buffer.allocUnsafe(4);
    let off = 0;
    for (const c of this.chunks) {
      off += c.copy(head, off, 0, Math.min(c.length, 4 - off));
      if (off === 4) break;
    }
    return head;
  }

  /** The next n bytes: a view when they lie in one chunk, else copied (into `into` if given). */
  private take(n: number, into: Buffer | undefined): Buffer {
    this.length -= n;
    const first = this.chunks[0];
    if (n === 0 || !first) return Buffer.alloc(0);
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    const out = into ? into.subarray(0, n) : Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}

export interface LinkConsumer {
  /** New bytes arrived, or the underlying stream ended (`link.ended`) or failed (`link.failure`). */
  wake(): void;
}

export class Link {
  readonly source: FrameSource;
  /** The underlying stream delivered its end (no more bytes will come). */
  ended = false;
  /** The underlying stream failed or closed abruptly. */
  failure: Error | undefined;
  private consumer: LinkConsumer | undefined;
  private readonly highWater: number;

  constructor(
    readonly stream: Duplex,
    maxBody: number,
  ) {
    this.source = new FrameSource(maxBody);
    // Two full frames may sit here before we stop reading from the wire.
    this.highWater = 2 * (4 + maxBody);
    stream.on("data", this.onData);
    stream.on("end", this.onEnd);
    stream.on("error", this.onError);
    stream.on("close", this.onClose);
  }

  private readonly onData = (chunk: Buffer | string): void => {
    this.source.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    if (this.source.buffered >= this.highWater) this.stream.pause();
    this.consumer?.wake();
  };

  private readonly onEnd = (): void => {
    this.ended = true;
    this.consumer?.wake();
  };

  private readonly onError = (err: Error): void => {
    this.failure ??= err;
    this.consumer?.wake();
  };

  private readonly onClose = (): void => {
    if (!this.ended) this.failure ??= new Error("closed abruptly");
    this.consumer?.wake();
  };

  attach(consumer: LinkConsumer | undefined): void {
    this.consumer = consumer;
  }

  /** Reading from the wire again: the consumer has taken what was buffered. */
  resume(): void {
    if (this.source.buffered < this.highWater) this.stream.resume();
  }

  pause(): void {
    this.stream.pause();
  }

  write(frame: Buffer): boolean {
    return this.stream.write(frame);
  }

  /** Holds writes back until uncork(), which hands them to the stream at once (one writev for a socket). */
  cork(): void {
    this.stream.cork();
  }

  uncork(): void {
    this.stream.uncork();
  }

  /** Bytes written and not yet taken by the underlying stream. */
  get unsent(): number {
    return this.stream.writableLength;
  }

  /** Calls back once the underlying stream can take more (or is gone: then with an error). */
  afterDrain(cb: (err?: Error) => void): void {
    const s = this.stream;
    if (s.destroyed) return cb(new AirlockError("CRYPTO", "secure channel: the connection is closed"));
    const done = (err?: Error): void => {
      s.off("drain", onDrain);
      s.off("close", onClose);
      cb(err);
    };
    const onDrain = (): void => done();
    const onClose = (): void => done(new AirlockError("CRYPTO", "secure channel: the connection closed before buffered records were sent"));
    s.on("drain", onDrain);
    s.on("close", onClose);
  }

  /** Graceful close of our direction of the underlying stream. */
  end(): void {
    if (!this.stream.writableEnded) this.stream.end();
  }

  destroy(): void {
    this.stream.destroy();
  }

  /**
   * Closes the link: our bytes already written (an alert, a CLOSE record) are flushed first, then
   * the stream is destroyed — bounded, so a peer that never reads cannot hold it open.
   */
  closeAfterFlush(): void {
    const s = this.stream;
    if (s.destroyed) return;
    if (!s.writableEnded) s.end();
    if (s.writableFinished) return void s.destroy();
    const timer = setTimeout(() => s.destroy(), 1000).unref();
    s.once("finish", () => {
      clearTimeout(timer);
      s.destroy();
    });
  }
}
