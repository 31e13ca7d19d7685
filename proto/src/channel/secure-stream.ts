// The open channel as a Duplex: writes become DATA records (split at MAX_PAYLOAD), end() becomes
// an authenticated CLOSE record, and records read from the wire are opened in order and pushed
// only as fast as our reader takes them (the wire is paused otherwise). The underlying stream
// ending before the peer's CLOSE is truncation and an error, never a normal end.
import { Duplex } from "node:stream";
import { AirlockError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Link } from "./link.ts";
import { MAX_PAYLOAD, RecordCipher, RecordType } from "./protocol.ts";

/**
 * Bytes of records queued in the underlying stream before a write waits for it to drain. The
 * underlying stream's own high-water mark (16 KiB for a socket) is about one record, so waiting
 * on every refusal would stop after each record; this keeps several in flight, still bounded.
 */
const SEND_WINDOW = 256 * 1024;
/** Plaintext buffered on each side of the Duplex (its high-water marks). */
const STREAM_BUFFER = 128 * 1024;

export class SecureStream extends Duplex {
  private readonly sender: RecordCipher;
  private readonly receiver: RecordCipher;
  private wantMore = false;
  private sentClose = false;
  private receivedClose = false;

  constructor(
    private readonly link: Link,
    keys: { send: Buffer; receive: Buffer },
    private readonly log: Logger,
  ) {
    // Half-open: either side may close its direction and keep reading the other.
    // Room for a few records each way, so one record does not stop the flow at once.
    super({ allowHalfOpen: true, readableHighWaterMark: STREAM_BUFFER, writableHighWaterMark: STREAM_BUFFER });
    this.sender = new RecordCipher(keys.send);
    this.receiver = new RecordCipher(keys.receive);
    link.attach({ wake: () => this.pump() });
    // Frames that arrived with the handshake's last record are already buffered.
    queueMicrotask(() => this.pump());
  }

  /** Opens and delivers buffered records while our reader wants more. */
  private pump(): void {
    if (this.destroyed) return;
    try {
      // A failed connection (reset, destroyed) ends the channel now, even if nobody is reading.
      if (this.link.failure && !this.receivedClose && this.link.source.buffered === 0) throw this.truncated();
      while (this.wantMore) {
        const frame = this.link.source.next();
        if (!frame) {
          if (this.link.failure || this.link.ended) throw this.truncated();
          this.link.resume();
          return;
        }
        if (this.receivedClose) throw new AirlockError("GUEST_PROTOCOL", "secure channel: the peer sent records after its close");
        const { type, payload } = this.receiver.open(frame.head, frame.body);
        if (type === RecordType.DATA) {
          this.wantMore = this.push(payload);
        } else if (type === RecordType.CLOSE) {
          if (payload.length !== 0) throw new AirlockError("GUEST_PROTOCOL", "secure channel: a close record with a payload");
          this.receivedClose = true;
          this.log.debug({ records: this.receiver.count }, "peer closed its direction");
          this.push(null);
          this.wantMore = false;
          if (this.sentClose) this.link.end();
          return;
        } else {
          throw new AirlockError("GUEST_PROTOCOL", `secure channel: unexpected record type ${type} on an open channel`);
        }
      }
      // Our reader is full: leave the rest on the wire.
      if (!this.receivedClose) this.link.pause();
    } catch (err) {
      this.destroy(AirlockError.from(err, "GUEST_PROTOCOL"));
    }
  }

  private truncated(): AirlockError {
    const left = this.link.source.buffered;
    const why = this.link.failure ? `failed (${this.link.failure.message})` : "ended";
    return new AirlockError("CRYPTO", `secure channel: the connection ${why} without the peer's authenticated close${left > 0 ? ` (${left} bytes of a partial record left)` : ""}: the stream was truncated`);
  }

  override _read(): void {
    this.wantMore = true;
    this.pump();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.send(chunk, cb);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.send(chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb);
  }

  /** Seals data into records; a record the wire cannot take yet holds the next one back. */
  private send(data: Buffer, cb: (err?: Error | null) => void): void {
    let off = 0;
    const next = (err?: Error): void => {
      if (err) return cb(err);
      try {
        while (off < data.length) {
          const piece = data.subarray(off, off + MAX_PAYLOAD);
          off += piece.length;
          // Backpressure: our caller's write callback waits for the wire to drain.
          if (!this.link.write(this.sender.seal(RecordType.DATA, piece)) && this.link.stream.writableLength >= SEND_WINDOW) return this.link.afterDrain(next);
        }
      } catch (e) {
        return cb(AirlockError.from(e));
      }
      cb();
    };
    next();
  }

  override _final(cb: (err?: Error | null) => void): void {
    let ok: boolean;
    try {
      ok = this.link.write(this.sender.seal(RecordType.CLOSE, Buffer.alloc(0)));
    } catch (err) {
      return cb(AirlockError.from(err));
    }
    this.sentClose = true;
    const finish = (err?: Error): void => {
      if (!err && this.receivedClose) this.link.end();
      cb(err);
    };
    if (ok) finish();
    else this.link.afterDrain(finish);
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    // After both closes every record has been exchanged: flush ours and hang up. Otherwise abort.
    if (!err && this.sentClose && this.receivedClose) this.link.closeAfterFlush();
    else this.link.destroy();
    this.link.attach(undefined);
    if (err) this.log.debug({ code: (err as AirlockError).code }, "secure channel failed");
    cb(err);
  }
}
