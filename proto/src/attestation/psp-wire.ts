// Wire format between a guest and the host's emulated PSP, over any byte stream (a Unix socket
// now, vsock later). Every message is a frame of proto/src/framing.ts (u32 big-endian length, then
// the payload).
//
//   request  = "SNPQ" ‖ u32le vmpl ‖ report_data[64]                                  (72 bytes)
//   response = u8 status 0 ‖ u32le len ‖ report ‖ u32le len ‖ VCEK DER ‖ u32le len ‖ chain PEM
//            | u8 status 1 ‖ UTF-8 error message
//
// Several requests may follow each other on one connection. Lengths are bounded before anything
// is allocated: either side may be hostile.
import { AirlockError } from "../errors.ts";
import { REPORT_SIZE } from "./report.ts";

/** Firewall/sandbox → host: a guest reaches the host's emulated PSP on this vsock port (CID 2). */
export const PSP_VSOCK_PORT = 1025;

export const PSP_REQUEST_MAGIC = Buffer.from("SNPQ");
export const PSP_REQUEST_SIZE = 72;
export const PSP_MAX_FRAME = 64 * 1024;

export interface PspRequest {
  vmpl: number;
  reportData: Buffer;
}

export interface ReportEvidence {
  report: Buffer;
  /** VCEK certificate, DER. */
  vcek: Buffer;
  /** ASK then ARK, PEM (may be empty when the provider has none). */
  chain?: string;
}

function protocolError(message: string): AirlockError {
  return new AirlockError("GUEST_PROTOCOL", `PSP stream: ${message}`);
}

export function encodePspRequest(req: PspRequest): Buffer {
  if (req.reportData.length !== 64) throw new AirlockError("INTERNAL", "report_data must be 64 bytes");
  const b = Buffer.alloc(PSP_REQUEST_SIZE);
  PSP_REQUEST_MAGIC.copy(b, 0);
  b.writeUInt32LE(req.vmpl, 4);
  req.reportData.copy(b, 8);
  return b;
}

export function decodePspRequest(b: Buffer): PspRequest {
  if (b.length !== PSP_REQUEST_SIZE || !b.subarray(0, 4).equals(PSP_REQUEST_MAGIC)) throw protocolError(`malformed request (${b.length} bytes)`);
  const vmpl = b.readUInt32LE(4);
  if (vmpl > 3) throw protocolError(`vmpl ${vmpl} out of range 0..3`);
  return { vmpl, reportData: Buffer.from(b.subarray(8)) };
}

export function encodePspResponse(res: ReportEvidence | { error: string }): Buffer {
  if ("error" in res) return Buffer.concat([Buffer.from([1]), Buffer.from(res.error, "utf8")]);
  const parts = [res.report, res.vcek, Buffer.from(res.chain ?? "", "latin1")];
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };
  return Buffer.concat([Buffer.from([0]), ...parts.flatMap((p) => [u32(p.length), p])]);
}

export function decodePspResponse(b: Buffer): ReportEvidence {
  if (b.length < 1) throw protocolError("empty response");
  if (b[0] === 1) throw new AirlockError("REPORT_INVALID", `emulated PSP refused: ${b.subarray(1).toString("utf8").slice(0, 500)}`);
  if (b[0] !== 0) throw protocolError(`unknown status ${b[0]}`);
  let off = 1;
  const take = (): Buffer => {
    if (off + 4 > b.length) throw protocolError("truncated response");
    const len = b.readUInt32LE(off);
    off += 4;
    if (off + len > b.length) throw protocolError("response length runs past the frame");
    const out = Buffer.from(b.subarray(off, off + len));
    off += len;
    return out;
  };
  const report = take();
  const vcek = take();
  const chain = take().toString("latin1");
  if (off !== b.length) throw protocolError("trailing bytes in response");
  if (report.length !== REPORT_SIZE) throw protocolError(`report is ${report.length} bytes`);
  return { report, vcek, ...(chain ? { chain } : {}) };
}

/** The next frame from readFrames(), or null at a clean end; TIMEOUT if none arrives in time. */
export async function nextFrame(frames: AsyncIterator<Buffer>, timeoutMs: number): Promise<Buffer | null> {
  const next = frames.next();
  next.catch(() => undefined); // if the timeout wins, a later failure of this read is not unhandled
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AirlockError("TIMEOUT", `PSP stream: no complete frame within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const r = await Promise.race([next, timeout]);
    return r.done ? null : Buffer.from(r.value);
  } finally {
    clearTimeout(timer);
  }
}
