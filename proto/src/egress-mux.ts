// Egress streams over the agent link (agent.proto: EgressOpen, EgressData, EgressClose,
// EgressAck): each TCP connection the workload opens to the agent's loopback listeners is one
// stream, carried inside the attested channel to the firewall's HTTP proxy. Both ends use this
// class: a stream is a Duplex on each side, its bytes chunked into EgressData messages of at most
// EGRESS_CHUNK, with at most EGRESS_WINDOW of them unacknowledged, so neither side buffers more
// than a window per stream whatever the other does. A peer that breaks the window, names a stream
// that does not exist or opens one twice breaks the protocol (GUEST_PROTOCOL).
import { Duplex } from "node:stream";
import { AirlockError } from "./errors.ts";

export const EGRESS_WINDOW = 256 * 1024;
export const EGRESS_CHUNK = 64 * 1024;
/** Streams open at once; the agent refuses connections past it. */
export const MAX_EGRESS_STREAMS = 16;

/** What the mux sends on the link (the side's envelope wraps it). */
export type EgressMessage =
  | { case: "egressData"; value: { stream: number; data: Uint8Array } }
  | { case: "egressClose"; value: { stream: number } }
  | { case: "egressAck"; value: { stream: number; bytes: number } };

class EgressStream extends Duplex {
  /** Bytes we sent that the peer has not acknowledged. */
  private inFlight = 0;
  /** Bytes we received and passed on but not acknowledged yet. */
  private toAck = 0;
  /** Bytes received beyond what the consumer has asked for (bounded by the window). */
  private held = 0;
  private waiting: (() => void) | undefined;
  ended = { local: false, remote: false };

  constructor(
    readonly id: number,
    readonly port: number,
    private readonly mux: EgressMux,
  ) {
    super({ allowHalfOpen: true, readableHighWaterMark: EGRESS_CHUNK });
  }

  /** Data from the peer. */
  receive(data: Buffer): void {
    if (this.ended.remote) throw new AirlockError("GUEST_PROTOCOL", "egress data after the stream's close");
    this.held += data.length;
    if (this.held > EGRESS_WINDOW) throw new AirlockError("GUEST_PROTOCOL", "egress data beyond the window");
    this.toAck += data.length;
    if (this.push(data)) this.ack();
  }

  /** The peer acknowledged `bytes` of ours. */
  acked(bytes: number): void {
    if (bytes > this.inFlight) throw new AirlockError("GUEST_PROTOCOL", "an egress acknowledgement of more than was sent");
    this.inFlight -= bytes;
    const w = this.waiting;
    this.waiting = undefined;
    w?.();
  }

  remoteEnd(): void {
    if (this.ended.remote) return;
    this.ended.remote = true;
    this.push(null);
    this.mux.settle(this);
  }

  private ack(): void {
    if (this.toAck === 0) return;
    const bytes = this.toAck;
    this.toAck = 0;
    this.held = 0;
    this.mux.post({ case: "egressAck", value: { stream: this.id, bytes } });
  }

  override _read(): void {
    this.ack();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.sendChunks(chunk).then(() => callback(), callback);
  }

  private async sendChunks(chunk: Buffer): Promise<void> {
    for (let off = 0; off < chunk.length; ) {
      while (this.inFlight >= EGRESS_WINDOW) {
        if (this.destroyed) throw new Error("egress stream destroyed");
        await new Promise<void>((resolve) => (this.waiting = resolve));
      }
      const n = Math.min(EGRESS_CHUNK, EGRESS_WINDOW - this.inFlight, chunk.length - off);
      this.inFlight += n;
      await this.mux.send({ case: "egressData", value: { stream: this.id, data: chunk.subarray(off, off + n) } });
      off += n;
    }
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.ended.local = true;
    this.mux.send({ case: "egressClose", value: { stream: this.id } }).then(() => {
      this.mux.settle(this);
      callback();
    }, callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.();
    if (!this.ended.local) {
      this.ended.local = true;
      this.mux.post({ case: "egressClose", value: { stream: this.id } });
    }
    this.ended.remote = true;
    this.mux.settle(this);
    callback(err);
  }
}

/** One side's egress streams. `send` writes one message on the link (in order). */
export class EgressMux {
  private readonly streams = new Map<number, EgressStream>();
  /** Ids of streams this side has finished: the peer's data still in flight to them is dropped. */
  private readonly finished = new Set<number>();
  private closed = false;

  constructor(readonly send: (m: EgressMessage) => Promise<void>) {}

  /** Sends without waiting (acks and closes); a failed link is reported by its reader. */
  post(m: EgressMessage): void {
    if (!this.closed) this.send(m).catch(() => undefined);
  }

  get size(): number {
    return this.streams.size;
  }

  has(id: number): boolean {
    return this.streams.has(id);
  }

  /** A new stream with this id (the agent chooses ids; the firewall takes them from EgressOpen). */
  open(id: number, port: number): EgressStream {
    if (this.closed) throw new AirlockError("GUEST_PROTOCOL", "an egress stream opened after egress closed");
    if (this.streams.has(id)) throw new AirlockError("GUEST_PROTOCOL", "an egress stream opened twice");
    this.finished.delete(id);
    if (this.streams.size >= MAX_EGRESS_STREAMS) throw new AirlockError("GUEST_PROTOCOL", `more than ${MAX_EGRESS_STREAMS} egress streams at once`);
    const s = new EgressStream(id, port, this);
    this.streams.set(id, s);
    return s;
  }

  /** A message from the peer for one of our streams. */
  receive(m: EgressMessage): void {
    const s = this.streams.get(m.value.stream);
    // A stream we already finished (its connection closed here) may still see the peer's data,
    // acks and close that crossed ours: they are dropped. Data for a stream never opened is not.
    if (!s) {
      if (m.case === "egressData" && !this.finished.has(m.value.stream)) throw new AirlockError("GUEST_PROTOCOL", "egress data for a stream that is not open");
      return;
    }
    if (m.case === "egressData") s.receive(Buffer.from(m.value.data));
    else if (m.case === "egressAck") s.acked(m.value.bytes);
    else s.remoteEnd();
  }

  /** Forgets a stream once both directions are over. */
  settle(s: EgressStream): void {
    if (s.ended.local && s.ended.remote && this.streams.get(s.id) === s) {
      this.streams.delete(s.id);
      this.finished.add(s.id);
    }
  }

  /** Ends every stream at once (the workload is over): no more opens. */
  closeAll(): void {
    for (const s of this.streams.values()) s.destroy();
    this.streams.clear();
    this.closed = true;
  }
}
