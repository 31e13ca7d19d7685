// The links between the host, the firewall VM and the sandbox VM: the messages are declared in
// proto/airlock/v1/control.proto (host <-> firewall) and agent.proto (firewall <-> agent). Both
// links carry frames (framing.ts); a frame's first byte says whether it holds one message of the
// link or raw data that belongs to the message before it. Every message from a peer is decoded and
// checked against its declaration (wire.ts): a guest's message is hostile until it has passed.
import type { Readable, Writable } from "node:stream";
import type { DescMessage, Message, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import { AirlockError } from "./errors.ts";
import { readFrames, writeFrameParts } from "./framing.ts";
import { decodeMessage, encodeMessage } from "./wire.ts";
import { clearBody } from "./channel/secure-stream.ts";

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

const MESSAGE_FRAME = 1;
const DATA_FRAME = 2;
/** Raw data that crossed the secure channel unsealed (clearBody): hostile bytes, authenticated by their reader. */
const CLEAR_FRAME = 3;
const MESSAGE_TYPE = Buffer.from([MESSAGE_FRAME]);
const DATA_TYPE = Buffer.from([DATA_FRAME]);
const CLEAR_TYPE = Buffer.from([CLEAR_FRAME]);

/**
 * A frame from a peer: one message of the link's envelope (already checked), or raw bytes — `clear`
 * when they crossed unsealed (only where the reader asked for them, and authenticates them itself).
 */
export type Incoming<M> = { kind: "message"; message: M } | { kind: "data"; data: Buffer; clear?: true };

type AnyCase = { case: string; value: unknown };
/** The cases of a link's envelope (`body` oneof): `{ case: "workloadExit"; value: WorkloadExit }`... */
export type BodyOf<M> = M extends { body: infer B } ? Extract<B, AnyCase> : never;
/** One case's name. */
export type CaseOf<M> = BodyOf<M> extends infer B ? (B extends AnyCase ? B["case"] : never) : never;
/** The value of case K. */
export type ValueOf<M, K> = BodyOf<M> extends infer B ? (B extends { case: K; value: infer V } ? V : never) : never;
/** What a sender gives for case K: the value's fields, any of them left at their defaults. */
type InitOf<M, K> = ValueOf<M, K> extends infer V ? (V extends Message ? MessageInitShape<GenMessage<V>> : never) : never;
/** A message of a link as its sender writes it. */
export type Outgoing<M> = { [K in CaseOf<M>]: { case: K; value: InitOf<M, K> } }[CaseOf<M>];

/** Sends one message of the link (`body` case K), checked against its declaration. */
export async function sendMessage<M extends Message>(stream: Writable, schema: GenMessage<M>, message: Outgoing<M>): Promise<void> {
  const payload = encodeMessage(schema, { body: message } as unknown as MessageInitShape<GenMessage<M>>);
  await writeFrameParts(stream, [MESSAGE_TYPE, Buffer.from(payload.buffer, payload.byteOffset, payload.length)]);
}

/** One data frame holding `data` (or the concatenation of several buffers, none of them copied). */
export async function sendData(stream: Writable, data: Buffer | readonly Buffer[]): Promise<void> {
  await writeFrameParts(stream, Buffer.isBuffer(data) ? [DATA_TYPE, data] : [DATA_TYPE, ...data]);
}

/**
 * One data frame whose bytes cross the secure channel unsealed (channel/secure-stream.ts,
 * clearBody): only for bytes the reader authenticates itself, as the agent does an age payload.
 */
export async function sendClearData(stream: Writable, data: readonly Buffer[]): Promise<void> {
  await writeFrameParts(stream, [CLEAR_TYPE, ...data.map(clearBody)]);
}

/** Sends a file's bytes as data frames of at most `piece` bytes. */
export async function sendBytes(stream: Writable, data: Buffer, piece = 1024 * 1024): Promise<void> {
  for (let off = 0; off < data.length; off += piece) await sendData(stream, data.subarray(off, off + piece));
}

/**
 * Reads a link's frames: each message is decoded and checked against `schema` (proto/src/wire.ts)
 * before it is yielded; `peer` names the sender in errors (GUEST_PROTOCOL). Clear frames are a
 * protocol error unless `acceptClear`.
 */
export async function* readMessages<D extends DescMessage>(stream: Readable, schema: D, peer: string, maxFrame?: number, acceptClear = false): AsyncGenerator<Incoming<MessageShape<D>>> {
  for await (const frame of readFrames(stream, maxFrame)) {
    if (frame.length === 0) throw new AirlockError("GUEST_PROTOCOL", `${peer}: empty frame`);
    if (frame[0] === DATA_FRAME) {
      yield { kind: "data", data: frame.subarray(1) };
    } else if (frame[0] === CLEAR_FRAME && acceptClear) {
      yield { kind: "data", data: frame.subarray(1), clear: true };
    } else if (frame[0] === MESSAGE_FRAME) {
      yield { kind: "message", message: decodeMessage(schema, frame.subarray(1), peer) };
    } else {
      throw new AirlockError("GUEST_PROTOCOL", `${peer}: unknown frame type ${frame[0]}`);
    }
  }
}

/** The body of a decoded message (decodeMessage has checked that its oneof is set). */
export function bodyOf<M>(message: M): BodyOf<M> {
  return (message as { body: unknown }).body as BodyOf<M>;
}

/** The value of an expected message, or GUEST_PROTOCOL naming what was expected (never what came). */
export function expectMessage<M, K extends CaseOf<M>>(frame: Incoming<M>, kind: K, peer: string): ValueOf<M, K> {
  if (frame.kind !== "message" || (bodyOf(frame.message) as AnyCase).case !== kind) throw new AirlockError("GUEST_PROTOCOL", `${peer} sent something other than the expected ${kind} message`);
  return (bodyOf(frame.message) as AnyCase).value as ValueOf<M, K>;
}

/** A relative path inside an output folder: no absolute paths, no "..", no empty parts. */
export function checkRelativePath(p: string): string {
  if (p.length === 0 || p.length > 1024 || p.startsWith("/") || p.split("/").some((s) => s === "" || s === "." || s === "..") || p.includes("\0")) {
    throw new AirlockError("GUEST_PROTOCOL", "an output file path is not a plain relative path");
  }
  return p;
}
