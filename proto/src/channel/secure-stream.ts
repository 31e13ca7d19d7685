// The open channel as a Duplex: writes become DATA records of up to MAX_PAYLOAD, end() becomes
// an authenticated CLOSE record, and records read from the wire are opened in order and pushed
// only as fast as our reader takes them (the wire is paused otherwise). The underlying stream
// ending before the peer's CLOSE is truncation and an error, never a normal end.
//
// Copies: a write's bytes go through the cipher once, into a frame buffer the link reuses once the
// socket has sent it, and the records of one write leave in one writev. A record is opened where
// it lies in what the socket delivered, across reads if it spans them (link.ts nextParts; one
// spread over more than 16 is copied once): it is decrypted in place, and its payload is views of
// those bytes, pushed as they are.
// Records are filled: a write's short tail (under HOLD_LIMIT) is copied and waits for the next
// write to fill its record, at most until the event loop turns (or end()), so a message followed
// by nothing still leaves at once.
//
// Clear bodies (issue 12): a write of a buffer marked with clearBody() leaves unsealed, in a frame
// of its own announced by a sealed CLEAR_NEXT record that fixes its place and length. It is for
// bytes something else authenticates (an input's age payload: the agent opens it with a key sent
// sealed), so they cross without a second cipher pass at each end. A receiver takes them only if
// it asked (acceptClearBodies), and then only in the announced place, at the announced length.
import { Duplex } from "node:stream";
import { AirlockError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Link } from "./link.ts";
import { MAX_CLEAR, MAX_PAYLOAD, RecordCipher, RecordType } from "./protocol.ts";

/** Buffers written to leave unsealed (clearBody): only ever views made here, never a caller's own object. */
const CLEAR_BODIES = new WeakSet<Buffer>();

/**
 * A view of `bytes` that a SecureStream sends unsealed, in clear-body frames (CLEAR_NEXT). Only for
 * bytes the reader authenticates by other means and treats as hostile until then; over any other
 * stream it is an ordinary buffer.
 */
export function clearBody(bytes: Buffer): Buffer {
  const view = bytes.subarray(0);
  CLEAR_BODIES.add(view);
  return view;
}

/**
 * Bytes of records queued in the underlying stream before a write waits for it to drain. The
 * underlying stream's own high-water mark (16 KiB for a socket) is less than one record, so
 * waiting on every refusal would stop after each record; this keeps two in flight, still bounded.
 */
const SEND_WINDOW = 2 * MAX_PAYLOAD;
/** Plaintext buffered on each side of the Duplex (its high-water marks). */
const STREAM_BUFFER = 128 * 1024;
/** A write's tail shorter than this is held for the next write (then sealed with it) instead of making a short record. */
const HOLD_LIMIT = 16 * 1024;

export class SecureStream extends Duplex {
  private readonly sender: RecordCipher;
  private readonly receiver: RecordCipher;
  private wantMore = false;
  private sentClose = false;
  private receivedClose = false;
  /** A short tail of earlier writes (our own copies), sealed with the next write or when the loop turns. */
  private held: Buffer[] = [];
  private heldLength = 0;
  private flushTimer: NodeJS.Immediate | undefined;
  /** Set by a CLEAR_NEXT record: the next frame is a clear body of exactly this many bytes. */
  private clearNext: number | undefined;

  constructor(
    private readonly link: Link,
    keys: { send: Buffer; receive: Buffer },
    private readonly log: Logger,
    /** The peer may send clear bodies (CLEAR_NEXT); refused as a protocol error otherwise. */
    private readonly acceptClearBodies = false,
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
        // The frame's body as the views of the reads it lies in: ours, to open in place.
        const frame = this.link.source.nextParts();
        if (!frame) {
          if (this.link.failure || this.link.ended) throw this.truncated();
          this.link.resume();
          return;
        }
        if (this.receivedClose) throw new AirlockError("GUEST_PROTOCOL", "secure channel: the peer sent records after its close");
        if (this.clearNext !== undefined) {
          // The frame a CLEAR_NEXT record announced: exactly that long, delivered as it came.
          if (frame.length !== this.clearNext) throw new AirlockError("CRYPTO", `secure channel: a clear body of ${frame.length} bytes where ${this.clearNext} were announced (tampered)`);
          this.clearNext = undefined;
          for (const part of frame.parts) this.wantMore = this.push(part);
          continue;
        }
        // Decrypted in place; nothing of it is used unless it authenticates (else this throws).
        const { type, payload: pieces } = this.receiver.openInPlace(frame.head, frame.parts);
        if (type === RecordType.DATA) {
          // Our reader's buffer may pass its high-water mark by less than one record.
          for (const piece of pieces) this.wantMore = this.push(piece);
          continue;
        }
        const payload = Buffer.concat(pieces); // the other records are short
        if (type === RecordType.CLEAR_NEXT) {
          if (!this.acceptClearBodies) throw new AirlockError("GUEST_PROTOCOL", "secure channel: the peer announced a clear body, which this end does not take");
          const n = payload.length === 4 ? payload.readUInt32BE(0) : 0;
          if (n === 0 || n > MAX_CLEAR) throw new AirlockError("GUEST_PROTOCOL", `secure channel: a clear body announced with a bad length`);
          this.clearNext = n;
          continue;
        }
        if (type === RecordType.CLOSE) {
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
    this.send([chunk], cb);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.send(chunks.map((c) => c.chunk), cb);
  }

  /**
   * Sends `data` in order: the pieces before a clear body sealed (none held back, so they leave
   * first), the clear body in clear-body frames, then the rest; each step waits for the wire.
   */
  private send(data: Buffer[], cb: (err?: Error | null) => void): void {
    const at = data.findIndex((d) => CLEAR_BODIES.has(d));
    if (at < 0) return this.sendSealed(data, cb);
    this.sendSealed(data.slice(0, at), (err) => {
      if (err) return cb(err);
      try {
        this.cancelFlush();
        this.sealHeld();
        this.writeClear(data[at]!);
      } catch (e) {
        return cb(AirlockError.from(e));
      }
      const rest = (e?: Error): void => (e ? cb(e) : this.send(data.slice(at + 1), cb));
      if (this.link.unsent >= SEND_WINDOW) this.link.afterDrain(rest);
      else rest();
    });
  }

  /** A clear body as CLEAR_NEXT records, each followed by its frame of up to MAX_CLEAR bytes, not copied. */
  private writeClear(body: Buffer): void {
    this.link.cork();
    try {
      for (let off = 0; off < body.length; off += MAX_CLEAR) {
        const piece = body.subarray(off, off + MAX_CLEAR);
        const length = Buffer.allocUnsafe(4);
        length.writeUInt32BE(piece.length);
        this.link.writeRecord(this.sender, RecordType.CLEAR_NEXT, [length]);
        this.link.write(length);
        this.link.write(piece);
      }
    } finally {
      this.link.uncork();
    }
  }

  /**
   * Seals the held tail and `data` into records of MAX_PAYLOAD (the last one shorter), all of
   * them corked into one write; a tail under HOLD_LIMIT is held instead. Records the wire cannot
   * take yet (SEND_WINDOW) hold the next ones back, and our caller's callback with them.
   */
  private sendSealed(data: Buffer[], cb: (err?: Error | null) => void): void {
    const owned = this.held.length;
    const queue = owned > 0 ? this.held.concat(data) : data;
    let queued = this.heldLength;
    for (const d of data) queued += d.length;
    this.held = [];
    this.heldLength = 0;
    let at = 0; // queue[at] is the next piece (already cut to what is left of it)
    const take = (n: number): Buffer[] => {
      queued -= n;
      const pieces: Buffer[] = [];
      while (n > 0) {
        const p = queue[at]!;
        if (p.length > n) {
          pieces.push(p.subarray(0, n));
          queue[at] = p.subarray(n);
          break;
        }
        if (p.length > 0) pieces.push(p);
        n -= p.length;
        at++;
      }
      return pieces;
    };
    const next = (err?: Error): void => {
      if (err) return cb(err);
      try {
        for (;;) {
          let full = false;
          this.link.cork();
          try {
            while (queued > HOLD_LIMIT && !full) {
              this.link.writeRecord(this.sender, RecordType.DATA, take(Math.min(queued, MAX_PAYLOAD)));
              full = this.link.unsent >= SEND_WINDOW;
            }
          } finally {
            this.link.uncork();
          }
          if (!full) break;
          // Backpressure: our caller's write callback waits for the wire to drain.
          if (this.link.unsent >= SEND_WINDOW) return this.link.afterDrain(next);
        }
        if (queued > 0) this.hold(queue.slice(at), owned - at);
      } catch (e) {
        return cb(AirlockError.from(e));
      }
      cb();
    };
    next();
  }

  /** Holds a short tail: the first `ownCount` pieces are our copies already, the rest are copied (the writer may reuse its buffers once called back). */
  private hold(pieces: Buffer[], ownCount: number): void {
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i]!;
      if (p.length === 0) continue;
      this.held.push(i < ownCount ? p : Buffer.from(p));
      this.heldLength += p.length;
    }
    // Many tiny writes: one piece, so sealing stays one cipher call.
    if (this.held.length > 16) this.held = [Buffer.concat(this.held, this.heldLength)];
    this.flushTimer ??= setImmediate(this.flushHeld);
  }

  /** Seals what is held; the event loop turned without another write. */
  private readonly flushHeld = (): void => {
    this.flushTimer = undefined;
    if (this.heldLength === 0 || this.destroyed) return;
    try {
      this.sealHeld();
    } catch (err) {
      this.destroy(AirlockError.from(err));
    }
  };

  private sealHeld(): void {
    if (this.heldLength === 0) return;
    const held = this.held;
    this.held = [];
    this.heldLength = 0;
    this.link.writeRecord(this.sender, RecordType.DATA, held);
  }

  override _final(cb: (err?: Error | null) => void): void {
    let ok: boolean;
    try {
      this.cancelFlush();
      this.sealHeld();
      ok = this.link.writeRecord(this.sender, RecordType.CLOSE, []);
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

  private cancelFlush(): void {
    if (this.flushTimer) clearImmediate(this.flushTimer);
    this.flushTimer = undefined;
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.cancelFlush();
    this.held = [];
    this.heldLength = 0;
    // After both closes every record has been exchanged: flush ours and hang up. Otherwise abort.
    if (!err && this.sentClose && this.receivedClose) this.link.closeAfterFlush();
    else this.link.destroy();
    this.link.attach(undefined);
    if (err) this.log.debug({ code: (err as AirlockError).code }, "secure channel failed");
    cb(err);
  }
}
