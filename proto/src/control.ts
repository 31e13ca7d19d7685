// The messages between the host, the firewall VM and the sandbox VM. Both links carry frames
// (framing.ts); a frame's first byte says whether it holds a JSON message or raw data that belongs
// to the message before it. Every message from a peer is parsed by the functions here, which
// check each field: a guest's message is hostile until it has passed them.
import type { Readable, Writable } from "node:stream";
import { AirlockError } from "./errors.ts";
import { readFrames, writeFrame } from "./framing.ts";

/** Firewall → host: the firewall connects to the host (CID 2) on this vsock port. */
export const HOST_CONTROL_PORT = 1024;
/** Firewall → host: the key broker (HTTP), relayed by the host to the embedded or a remote broker. */
export const KBS_VSOCK_PORT = 1026;
/** Firewall → host: the emulated PSP is PSP_VSOCK_PORT (1025, attestation/psp-wire.ts). */
/** Firewall → host: the emulated PSP that reports the SANDBOX's launch (relayed for the sandbox). */
export const HOST_SANDBOX_PSP_PORT = 1027;
/** Sandbox agent → firewall. */
export const AGENT_PORT = 5000;
/**
 * Sandbox agent → firewall: the sandbox's emulated PSP. The sandbox never reaches the host; the
 * firewall pipes each connection here byte for byte to the host's HOST_SANDBOX_PSP_PORT.
 */
export const SANDBOX_PSP_RELAY_PORT = 5001;
export const FIREWALL_CID = 3;

const JSON_FRAME = 1;
const DATA_FRAME = 2;

export type Incoming = { kind: "json"; value: Record<string, unknown> } | { kind: "data"; data: Buffer };

export async function sendMessage(stream: Writable, value: object): Promise<void> {
  await writeFrame(stream, Buffer.concat([Buffer.from([JSON_FRAME]), Buffer.from(JSON.stringify(value))]));
}

export async function sendData(stream: Writable, data: Buffer): Promise<void> {
  await writeFrame(stream, Buffer.concat([Buffer.from([DATA_FRAME]), data]));
}

/** Sends a file's bytes as data frames of at most `piece` bytes. */
export async function sendBytes(stream: Writable, data: Buffer, piece = 256 * 1024): Promise<void> {
  for (let off = 0; off < data.length; off += piece) await sendData(stream, data.subarray(off, off + piece));
}

export async function* readMessages(stream: Readable, maxFrame?: number): AsyncGenerator<Incoming> {
  for await (const frame of readFrames(stream, maxFrame)) {
    if (frame.length === 0) throw new AirlockError("GUEST_PROTOCOL", "empty frame");
    if (frame[0] === DATA_FRAME) {
      yield { kind: "data", data: frame.subarray(1) };
    } else if (frame[0] === JSON_FRAME) {
      let value: unknown;
      try {
        value = JSON.parse(frame.subarray(1).toString("utf8"));
      } catch {
        throw new AirlockError("GUEST_PROTOCOL", "a message that is not JSON");
      }
      if (value === null || typeof value !== "object" || Array.isArray(value)) throw new AirlockError("GUEST_PROTOCOL", "a message that is not an object");
      yield { kind: "json", value: value as Record<string, unknown> };
    } else {
      throw new AirlockError("GUEST_PROTOCOL", `unknown frame type ${frame[0]}`);
    }
  }
}

/** A message's type for an error: only a well-formed one is quoted (errors may reach the host). */
const typeOf = (m: Record<string, unknown>): string => (typeof m.type === "string" && /^[a-z-]{1,32}$/.test(m.type) ? m.type : "(malformed)");

/** Field checks for messages from a peer; each throws GUEST_PROTOCOL naming the field. */
export const field = {
  string(m: Record<string, unknown>, k: string, max = 4096): string {
    const v = m[k];
    if (typeof v !== "string" || v.length > max) throw new AirlockError("GUEST_PROTOCOL", `message ${typeOf(m)}: field ${k} must be a string of at most ${max} characters`);
    return v;
  },
  int(m: Record<string, unknown>, k: string, min: number, max: number): number {
    const v = m[k];
    if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) throw new AirlockError("GUEST_PROTOCOL", `message ${typeOf(m)}: field ${k} must be an integer from ${min} to ${max}`);
    return v as number;
  },
};

/** A relative path inside an output folder: no absolute paths, no "..", no empty parts. */
export function checkRelativePath(p: string): string {
  if (p.length === 0 || p.length > 1024 || p.startsWith("/") || p.split("/").some((s) => s === "" || s === "." || s === "..") || p.includes("\0")) {
    throw new AirlockError("GUEST_PROTOCOL", "an output file path is not a plain relative path");
  }
  return p;
}
