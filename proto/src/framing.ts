// Length-prefixed frames over a byte stream: u32 big-endian length, then the payload. Every
// length is checked against a bound before anything is buffered, so a hostile peer cannot make
// the reader allocate more than `maxFrame`. A frame is put together once, when all of it is there
// (not re-copied with every chunk that arrives), and written without copying its payload.
import type { Readable, Writable } from "node:stream";
import { AirlockError } from "./errors.ts";

export const DEFAULT_MAX_FRAME = 4 * 1024 * 1024;

export function encodeFrame(payload: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length);
  return Buffer.concat([header, payload]);
}

/** Reads frames from a stream; ends when the stream ends on a frame boundary. */
export async function* readFrames(stream: Readable, maxFrame = DEFAULT_MAX_FRAME): AsyncGenerator<Buffer> {
  // Bytes received and not yet yielded, as the chunks they came in.
  let chunks: Buffer[] = [];
  let length = 0;
  /** The first n buffered bytes as one buffer (a view when they lie in the first chunk). */
  const take = (n: number): Buffer => {
    const first = chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) chunks.shift();
      else chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(chunks, length);
      out = all.subarray(0, n);
      chunks = all.length > n ? [all.subarray(n)] : [];
    }
    length -= n;
    return out;
  };
  let need = -1; // the length of the frame whose payload we wait for, or -1 for its header
  for await (const chunk of stream) {
    if ((chunk as Buffer).length === 0) continue;
    chunks.push(chunk as Buffer);
    length += (chunk as Buffer).length;
    for (;;) {
      if (need < 0) {
        if (length < 4) break;
        need = take(4).readUInt32BE(0);
        if (need > maxFrame) throw new AirlockError("GUEST_PROTOCOL", `frame of ${need} bytes exceeds the limit of ${maxFrame}`);
      }
      if (length < need) break;
      const frame = need === 0 ? Buffer.alloc(0) : take(need);
      need = -1;
      yield frame;
    }
  }
  if (length > 0 || need >= 0) throw new AirlockError("GUEST_PROTOCOL", `stream ended inside a frame (${length + (need >= 0 ? 4 : 0)} bytes left over)`);
}

/** Writes one frame, waiting for the stream to drain when it asks to. */
export function writeFrame(stream: Writable, payload: Buffer): Promise<void> {
  return writeFrameParts(stream, [payload]);
}

/** Writes one frame whose payload is the concatenation of `parts`, none of them copied. */
export async function writeFrameParts(stream: Writable, parts: readonly Buffer[]): Promise<void> {
  let size = 0;
  for (const p of parts) size += p.length;
  const header = Buffer.allocUnsafe(4);
  header.writeUInt32BE(size);
  // Corked: the header and the parts leave in one writev where the stream supports it.
  stream.cork();
  let ok = stream.write(header);
  for (const p of parts) if (p.length > 0) ok = stream.write(p);
  stream.uncork();
  if (!ok) await new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      stream.off("drain", onDrain);
      stream.off("error", onError);
      stream.off("close", onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => done();
    const onError = (err: Error): void => done(err);
    // A stream destroyed while we wait will never drain: the frame did not go.
    const onClose = (): void => done(new AirlockError("FABRIC", "the link closed before a frame was sent"));
    stream.once("drain", onDrain);
    stream.once("error", onError);
    stream.once("close", onClose);
  });
}
