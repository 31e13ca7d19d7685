// The raw side of a secure channel: owns the underlying Duplex, cuts its bytes into frames
// (u32be length ‖ body) with every length checked before anything is buffered, and lets one
// consumer at a time take them — the handshake (awaiting frames) and then the secure stream
// (pulling frames as its reader asks). The underlying stream is paused whenever the frames
// buffered here reach a bound, so a peer that floods cannot make us buffer without limit.
//
// Fewer copies (issue 12): over a socket the frames' bodies are handed on as views of the bytes it
// delivered, for the secure stream to decrypt where they lie, and records are sealed into frame
// buffers the link reuses once the socket is done with them (writeRecord).
import net from "node:net";
import type { Duplex } from "node:stream";
import { AirlockError } from "../errors.ts";
import { VsockStream } from "../vsock-stream.ts";
import { frameSize, payloadLength } from "./protocol.ts";
import type { RecordCipher } from "./protocol.ts";

export interface Frame {
  /** The 4-byte length header (the record's associated data). */
  head: Buffer;
  body: Buffer;
}

/** Most chunks a body is handed on in as views (nextParts); one spread over more is copied into one buffer. */
const MAX_PARTS = 16;
/** Frames this long or longer are sealed into the link's reused buffers; shorter ones into a buffer of their size. */
const POOLED_FRAME = 64 * 1024;
/** Frame buffers kept for reuse: the secure stream's send window's worth, and one being filled. */
const SPARE_FRAMES = 4;

/**
 * A socket's Duplex (node's, or our vsock one) hands each read over in a buffer of its own, and
 * calls a write back only once the kernel has the bytes. Another Duplex may pass buffers by
 * reference (a PassThrough gives the reader the writer's own buffer, and calls the writer back
 * before it is read): its chunks are copied as they come, and its frames never reused.
 */
function isSocket(stream: Duplex): boolean {
  return stream instanceof net.Socket || stream instanceof VsockStream;
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

  /**
   * The next whole frame with its body as the views of the chunks it lies in, in order, nothing
   * copied (a body spread over more than MAX_PARTS chunks is copied into one new buffer). The
   * source never looks at those bytes again: the caller may decrypt them in place.
   */
  nextParts(): { head: Buffer; parts: Buffer[]; length: number } | undefined {
    const head = this.nextHead();
    if (!head) return undefined;
    const length = head.readUInt32BE(0);
    return { head, parts: this.takeParts(length), length };
  }

  private nextFrame(scratch: Buffer | undefined): Frame | undefined {
    const head = this.nextHead();
    return head && { head, body: this.take(head.readUInt32BE(0), scratch) };
  }

  /** Takes the next frame's length header once its whole body is buffered. */
  private nextHead(): Buffer | undefined {
    if (this.length < 4) return undefined;
    const head = this.peekHead();
    const bodyLength = head.readUInt32BE(0);
    // Checked before the body is waited for: a hostile length never makes us buffer beyond the bound.
    if (bodyLength > this.maxBody) throw new AirlockError("GUEST_PROTOCOL", `secure channel: a frame of ${bodyLength} bytes exceeds the limit of ${this.maxBody}`);
    if (this.length < 4 + bodyLength) return undefined;
    this.take(4, undefined);
    return head;
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

  /** The next n bytes (all buffered) as views of their chunks; one new buffer if they span more than MAX_PARTS. */
  private takeParts(n: number): Buffer[] {
    let count = 0;
    for (let have = 0; have < n && count <= MAX_PARTS; count++) have += this.chunks[count]!.length;
    if (count > MAX_PARTS) return [this.take(n, undefined)];
    this.length -= n;
    const parts: Buffer[] = [];
    while (n > 0) {
      const c = this.chunks[0]!;
      if (c.length > n) {
        parts.push(c.subarray(0, n));
        this.chunks[0] = c.subarray(n);
        break;
      }
      parts.push(c);
      this.chunks.shift();
      n -= c.length;
    }
    return parts;
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
  /** The stream is a socket's (isSocket): its chunks are ours, its written buffers free once called back. */
  private readonly socket: boolean;
  /** Frame buffers of the largest frame's size, the socket done with them, for the next records. */
  private readonly spareFrames: Buffer[] = [];
  private readonly frameCapacity: number;

  constructor(
    readonly stream: Duplex,
    maxBody: number,
  ) {
    this.source = new FrameSource(maxBody);
    // Two full frames may sit here before we stop reading from the wire.
    this.highWater = 2 * (4 + maxBody);
    this.socket = isSocket(stream);
    this.frameCapacity = 4 + maxBody;
    stream.on("data", this.onData);
    stream.on("end", this.onEnd);
    stream.on("error", this.onError);
    stream.on("close", this.onClose);
  }

  private readonly onData = (chunk: Buffer | string): void => {
    this.source.push(typeof chunk === "string" || !this.socket ? Buffer.from(chunk) : chunk);
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

  /**
   * Seals a record of `pieces` into a frame buffer and writes it. A long frame goes into one of the
   * link's reused buffers, taken back only when the socket calls that write back (its bytes are in
   * the kernel then; a write that fails keeps its buffer out for good): nothing to allocate or
   * collect per record, and nothing overwritten that may still be sent.
   */
  writeRecord(cipher: RecordCipher, type: number, pieces: readonly Buffer[]): boolean {
    const size = frameSize(payloadLength(pieces));
    if (!this.socket || size < POOLED_FRAME) {
      const frame = Buffer.allocUnsafe(size);
      cipher.sealInto(type, pieces, frame);
      return this.stream.write(frame);
    }
    const buffer = this.spareFrames.pop() ?? Buffer.allocUnsafe(this.frameCapacity);
    const n = cipher.sealInto(type, pieces, buffer);
    return this.stream.write(buffer.subarray(0, n), (err?: Error | null) => {
      if (!err && this.spareFrames.length < SPARE_FRAMES) this.spareFrames.push(buffer);
    });
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
