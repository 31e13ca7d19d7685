// Length-prefixed frames over a byte stream: u32 big-endian length, then the payload. Every
// length is checked against a bound before anything is buffered, so a hostile peer cannot make
// the reader allocate more than `maxFrame`.
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
  let buf: Buffer = Buffer.alloc(0);
  for await (const chunk of stream) {
    buf = buf.length === 0 ? (chunk as Buffer) : Buffer.concat([buf, chunk as Buffer]);
    while (buf.length >= 4) {
      const len = buf.readUInt32BE(0);
      if (len > maxFrame) throw new AirlockError("GUEST_PROTOCOL", `frame of ${len} bytes exceeds the limit of ${maxFrame}`);
      if (buf.length < 4 + len) break;
      yield buf.subarray(4, 4 + len);
      buf = buf.subarray(4 + len);
    }
  }
  if (buf.length > 0) throw new AirlockError("GUEST_PROTOCOL", `stream ended inside a frame (${buf.length} bytes left over)`);
}

/** Writes one frame, waiting for the stream to drain when it asks to. */
export async function writeFrame(stream: Writable, payload: Buffer): Promise<void> {
  if (!stream.write(encodeFrame(payload))) await new Promise<void>((resolve, reject) => {
    const onDrain = (): void => { stream.off("error", onError); resolve(); };
    const onError = (err: Error): void => { stream.off("drain", onDrain); reject(err); };
    stream.once("drain", onDrain);
    stream.once("error", onError);
  });
}
