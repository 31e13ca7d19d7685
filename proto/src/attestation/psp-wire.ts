// Wire format between a guest and the host's emulated PSP, over any byte stream (vsock), and the
// evidence each VM shows the other in the agent channel's handshake: the messages of
// proto/airlock/v1/psp.proto, each in one frame of proto/src/framing.ts (u32 big-endian length,
// then the message). Several requests may follow each other on one connection. Frames are bounded
// (PSP_MAX_FRAME) before anything is allocated and every field is checked against its declared
// bounds (wire.ts): either side may be hostile.
import { AirlockError, type ErrorCode } from "../errors.ts";
import { decodeMessage, encodeMessage } from "../wire.ts";
import { PspRequestSchema, PspResponseSchema } from "../../gen/airlock/v1/psp_pb.ts";
import { REPORT_SIZE } from "./report.ts";

/** Firewall/sandbox → host: a guest reaches the host's emulated PSP on this vsock port (CID 2). */
export const PSP_VSOCK_PORT = 1025;

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

export function encodePspRequest(req: PspRequest): Buffer {
  if (req.reportData.length !== 64) throw new AirlockError("INTERNAL", "report_data must be 64 bytes");
  return Buffer.from(encodeMessage(PspRequestSchema, { vmpl: req.vmpl, reportData: req.reportData }));
}

export function decodePspRequest(b: Uint8Array): PspRequest {
  const m = decodeMessage(PspRequestSchema, b, "PSP request");
  return { vmpl: m.vmpl, reportData: Buffer.from(m.reportData) };
}

export function encodePspResponse(res: ReportEvidence | { error: string }): Buffer {
  if ("error" in res) return Buffer.from(encodeMessage(PspResponseSchema, { result: { case: "error", value: res.error.slice(0, 1000) } }));
  return Buffer.from(encodeMessage(PspResponseSchema, { result: { case: "evidence", value: { report: res.report, vcek: res.vcek, chain: res.chain ?? "" } } }));
}

/** A PSP's answer: its evidence, or REPORT_INVALID with the PSP's refusal. `code` for a malformed one. */
export function decodePspResponse(b: Uint8Array, code: ErrorCode = "GUEST_PROTOCOL"): ReportEvidence {
  const m = decodeMessage(PspResponseSchema, b, "PSP response", code);
  if (m.result.case === "error") throw new AirlockError("REPORT_INVALID", `emulated PSP refused: ${m.result.value.slice(0, 500)}`);
  const ev = m.result.value!;
  if (ev.report.length !== REPORT_SIZE) throw new AirlockError(code, `PSP response: the report is ${ev.report.length} bytes`);
  return { report: Buffer.from(ev.report), vcek: Buffer.from(ev.vcek), ...(ev.chain ? { chain: ev.chain } : {}) };
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
