// The secure channel's wire format and key schedule: pure functions, no streams. The design is
// described in index.ts; this file is its byte-level definition.
//
//   frame   = u32be length ‖ body                   (every message on the wire, both phases)
//   hello   = version u8 (1) ‖ X25519 public[32] ‖ nonce[32]                 (body, in clear)
//   record  = ChaCha20-Poly1305(key, nonce = 0[4] ‖ u64be counter, aad = the frame's length
//             header, plaintext = type u8 ‖ payload) — ciphertext ‖ tag[16]  (body)
//   clear   = the body of the frame after a CLEAR_NEXT record: n bytes as the sender wrote them
//
// transcript = SHA-256("airlock-channel-v1 transcript" ‖ client hello ‖ server hello)
// reportData(role) = SHA-512("airlock-channel-v1" ‖ role ‖ transcript), role = "client"|"server"
// keys = HKDF-SHA-256(ikm = X25519 shared secret, salt = transcript,
//                     info = "airlock-channel-v1 keys", 128 bytes)
//      = handshake c→s ‖ handshake s→c ‖ application c→s ‖ application s→c
import { createCipheriv, createDecipheriv, createHash, diffieHellman, hkdfSync } from "node:crypto";
import { AirlockError } from "../errors.ts";
import { newX25519, x25519PublicFromRaw } from "../attestation/kbs-wire.ts";
import type { X25519Pair } from "../attestation/kbs-wire.ts";

export const PROTOCOL_LABEL = "airlock-channel-v1";
export const VERSION = 1;
export const HELLO_SIZE = 1 + 32 + 32;
export const TAG_SIZE = 16;
/** Largest payload of one record; bigger writes are split. */
export const MAX_PAYLOAD = 256 * 1024;
/** Largest record body on the wire: type byte, payload, tag. */
export const MAX_RECORD = 1 + MAX_PAYLOAD + TAG_SIZE;
/** Records per key before the channel refuses to go on (the nonce must never repeat). */
export const MAX_RECORDS = 2 ** 32;

export const RecordType = {
  /** Application bytes. */
  DATA: 1,
  /** Authenticated end of stream: after it the sender writes nothing more. */
  CLOSE: 2,
  /** The sender's attestation evidence (handshake keys). */
  EVIDENCE: 3,
  /** Server → client: your evidence verified, the channel is open (handshake keys). */
  FINISHED: 4,
  /** The sender refuses the handshake; payload = a short UTF-8 reason (handshake keys). */
  ALERT: 5,
  /**
   * payload = u32be n: the next frame on the wire is a clear-body frame, exactly n bytes (at most
   * MAX_CLEAR) that the sender did not seal — bytes it marked with clearBody() because something
   * else authenticates them (an age payload). The record fixes where they go and how many there
   * are; only a receiver that asked for them (acceptClearBodies) takes them.
   */
  CLEAR_NEXT: 6,
} as const;

/** Largest clear-body frame (so the receiver's frame bound, MAX_RECORD, holds for it too). */
export const MAX_CLEAR = MAX_PAYLOAD;

export type Role = "client" | "server";

export interface Hello {
  publicRaw: Buffer;
  nonce: Buffer;
}

export function encodeFrame(body: Buffer): Buffer {
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

export function encodeHello(h: Hello): Buffer {
  return Buffer.concat([Buffer.from([VERSION]), h.publicRaw, h.nonce]);
}

/** Checks a peer's hello body (hostile until checked). */
export function decodeHello(body: Buffer, from: Role): Hello {
  if (body.length !== HELLO_SIZE) throw new AirlockError("GUEST_PROTOCOL", `secure channel: the ${from}'s hello is ${body.length} bytes, expected ${HELLO_SIZE}`);
  if (body[0] !== VERSION) throw new AirlockError("GUEST_PROTOCOL", `secure channel: the ${from} speaks protocol version ${body[0]}, this side speaks ${VERSION}`, { hint: "both VMs must run images built from the same airlock release" });
  return { publicRaw: Buffer.from(body.subarray(1, 33)), nonce: Buffer.from(body.subarray(33)) };
}

export function transcriptHash(clientHello: Buffer, serverHello: Buffer): Buffer {
  return createHash("sha256").update(`${PROTOCOL_LABEL} transcript`).update(clientHello).update(serverHello).digest();
}

/** The 64 bytes a side's evidence must bind (an SNP report's report_data). */
export function reportDataFor(role: Role, transcript: Buffer): Buffer {
  return createHash("sha512").update(PROTOCOL_LABEL).update(role).update(transcript).digest();
}

export interface SessionKeys {
  handshake: { clientToServer: Buffer; serverToClient: Buffer };
  application: { clientToServer: Buffer; serverToClient: Buffer };
}

export function newEphemeral(): X25519Pair {
  return newX25519();
}

export function deriveKeys(own: X25519Pair, peerPublicRaw: Buffer, transcript: Buffer): SessionKeys {
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey: own.privateKey, publicKey: x25519PublicFromRaw(peerPublicRaw) });
  } catch (err) {
    throw new AirlockError("GUEST_PROTOCOL", `secure channel: the peer's X25519 key is unusable (${(err as Error).message})`, { cause: err });
  }
  // A low-order peer key gives an all-zero secret that an attacker knows too.
  if (shared.every((b) => b === 0)) throw new AirlockError("GUEST_PROTOCOL", "secure channel: the peer's X25519 key is of low order (shared secret is zero)");
  const okm = Buffer.from(hkdfSync("sha256", shared, transcript, `${PROTOCOL_LABEL} keys`, 128));
  shared.fill(0);
  return {
    handshake: { clientToServer: okm.subarray(0, 32), serverToClient: okm.subarray(32, 64) },
    application: { clientToServer: okm.subarray(64, 96), serverToClient: okm.subarray(96, 128) },
  };
}

/** One direction of records under one key: the counter is the nonce, so it only moves forward. */
export class RecordCipher {
  private counter = 0;
  /** Rewritten for each record: the cipher copies the nonce when it is made. */
  private readonly nonceBuffer = Buffer.alloc(12);
  /** The type byte, rewritten for each record: update() reads it before returning. */
  private readonly typeBuffer = Buffer.alloc(1);

  constructor(private readonly key: Buffer) {}

  /** Records processed so far (the next record's counter). */
  get count(): number {
    return this.counter;
  }

  private nonce(): Buffer {
    if (this.counter >= MAX_RECORDS) throw new AirlockError("CRYPTO", `secure channel: ${MAX_RECORDS} records under one key; reconnect to get fresh keys`);
    // 0[4] ‖ u64be counter; its high half stays 0 below MAX_RECORDS (2^32).
    this.nonceBuffer.writeUInt32BE(this.counter, 8);
    this.counter++;
    return this.nonceBuffer;
  }

  /** A whole frame (length header ‖ sealed record), in one buffer. */
  seal(type: number, payload: Buffer): Buffer {
    return Buffer.concat(this.sealParts(type, [payload]));
  }

  /**
   * The same frame as seal() over the concatenation of `pieces`, as the buffers to write in order
   * (length header ‖ sealed type byte, each piece's ciphertext, tag): nothing of the payload is
   * copied besides the cipher's own output, and a corked socket sends them in one writev.
   */
  sealParts(type: number, pieces: readonly Buffer[]): Buffer[] {
    let payloadLength = 0;
    for (const p of pieces) payloadLength += p.length;
    if (payloadLength > MAX_PAYLOAD) throw new AirlockError("INTERNAL", `secure channel: record payload of ${payloadLength} bytes exceeds ${MAX_PAYLOAD}`);
    const head = Buffer.allocUnsafe(5);
    head.writeUInt32BE(1 + payloadLength + TAG_SIZE, 0);
    const c = createCipheriv("chacha20-poly1305", this.key, this.nonce(), { authTagLength: TAG_SIZE });
    c.setAAD(head.subarray(0, 4), { plaintextLength: 1 + payloadLength });
    this.typeBuffer.writeUInt8(type);
    c.update(this.typeBuffer).copy(head, 4);
    const out = [head];
    for (const p of pieces) if (p.length > 0) out.push(c.update(p));
    c.final(); // a stream cipher: no bytes left
    out.push(c.getAuthTag());
    return out;
  }

  /**
   * Opens a record body whose frame header was `head`; throws CRYPTO if it does not authenticate.
   * The payload is the cipher's own output, so `body` may be a reused buffer.
   */
  open(head: Buffer, body: Buffer): { type: number; payload: Buffer } {
    const index = this.counter;
    if (body.length < 1 + TAG_SIZE) throw new AirlockError("GUEST_PROTOCOL", `secure channel: record ${index} is ${body.length} bytes, too short to be a record`);
    const d = createDecipheriv("chacha20-poly1305", this.key, this.nonce(), { authTagLength: TAG_SIZE });
    d.setAAD(head, { plaintextLength: body.length - TAG_SIZE });
    d.setAuthTag(body.subarray(body.length - TAG_SIZE));
    let plain: Buffer;
    try {
      // Nothing of `plain` is used unless final() authenticates it (a stream cipher: final() adds no bytes).
      plain = d.update(body.subarray(0, body.length - TAG_SIZE));
      d.final();
    } catch (err) {
      throw new AirlockError("CRYPTO", `secure channel: record ${index} does not authenticate (tampered, dropped, reordered, replayed or from another session)`, { cause: err });
    }
    return { type: plain[0]!, payload: plain.subarray(1) };
  }
}

/** A peer's alert reason, made safe to show: printable ASCII, bounded. */
export function alertReason(payload: Buffer): string {
  const text = payload.subarray(0, 300).toString("latin1").replace(/[^\x20-\x7e]/g, "?");
  return text.length > 0 ? text : "(no reason given)";
}
