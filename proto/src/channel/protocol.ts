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
import { createHash, diffieHellman, hkdfSync } from "node:crypto";
import { AirlockError } from "../errors.ts";
import { newX25519, x25519PublicFromRaw } from "../attestation/kbs-wire.ts";
import type { X25519Pair } from "../attestation/kbs-wire.ts";
import { nativeAddon } from "../native.ts";

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

/** The cipher's calls in the native addon (host-tools/native/src/aead.cc, which says why node:crypto is not used). */
interface Aead {
  /** Seals the concatenation of `pieces` into out[offset, end - 16) and its tag after it; returns end. */
  aeadSeal(key: Buffer, nonce: Buffer, aad: Uint8Array, pieces: readonly Uint8Array[], out: Uint8Array, offset: number): number;
  /**
   * Decrypts the concatenation of `parts` into `out`, or in place without it, then checks `tag`.
   * false: it did not authenticate, and every byte written was zeroed (never use them).
   */
  aeadOpen(key: Buffer, nonce: Buffer, aad: Uint8Array, parts: readonly Uint8Array[], tag: Uint8Array, out: Uint8Array | undefined): boolean;
}

/** Most pieces one call of the addon takes (aead.cc kMaxPieces); more, from many tiny writes, are joined first. */
const AEAD_MAX_PIECES = 4096;

function aead(): Aead {
  const addon = nativeAddon<Partial<Aead>>();
  if (!addon.aeadSeal || !addon.aeadOpen) throw new AirlockError("INTERNAL", "secure channel: the native addon has no cipher (built against other OpenSSL headers than this node's?)", { hint: "rebuild it: `npm run build`" });
  return addon as Aead;
}

/** Bytes on the wire of a record with `payloadLength` bytes of payload: length header, type byte, payload, tag. */
export function frameSize(payloadLength: number): number {
  return 4 + 1 + payloadLength + TAG_SIZE;
}

/** The payload length of a record of `pieces`, checked against the bound. */
export function payloadLength(pieces: readonly Buffer[]): number {
  let n = 0;
  for (const p of pieces) n += p.length;
  if (n > MAX_PAYLOAD) throw new AirlockError("INTERNAL", `secure channel: record payload of ${n} bytes exceeds ${MAX_PAYLOAD}`);
  return n;
}

/** One direction of records under one key: the counter is the nonce, so it only moves forward. */
export class RecordCipher {
  private counter = 0;
  /** Rewritten for each record: the cipher reads the nonce before returning. */
  private readonly nonceBuffer = Buffer.alloc(12);
  /** The type byte, the first piece of each record's plaintext. */
  private readonly typeBuffer = Buffer.alloc(1);
  /** A tag that arrived split across chunks, put together. */
  private readonly tagBuffer = Buffer.alloc(TAG_SIZE);
  private readonly aead = aead();

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
    return this.sealParts(type, [payload])[0]!;
  }

  /** The same frame as seal() over the concatenation of `pieces`, as the buffers to write in order (one). */
  sealParts(type: number, pieces: readonly Buffer[]): Buffer[] {
    const frame = Buffer.allocUnsafe(frameSize(payloadLength(pieces)));
    this.sealInto(type, pieces, frame);
    return [frame];
  }

  /**
   * Seals the record of the concatenation of `pieces` as a whole frame into out[0, n), and returns
   * n (frameSize of the payload): the cipher writes straight into `out`, a buffer the caller may
   * reuse once the frame's bytes have left.
   */
  sealInto(type: number, pieces: readonly Buffer[], out: Buffer): number {
    const size = frameSize(payloadLength(pieces));
    if (out.length < size) throw new AirlockError("INTERNAL", `secure channel: a frame of ${size} bytes does not fit a buffer of ${out.length}`);
    out.writeUInt32BE(size - 4, 0);
    this.typeBuffer[0] = type;
    // The aad is the length header just written; the record follows it in the same buffer.
    const plain = pieces.length < AEAD_MAX_PIECES ? [this.typeBuffer, ...pieces] : [this.typeBuffer, Buffer.concat(pieces)];
    return this.aead.aeadSeal(this.key, this.nonce(), out.subarray(0, 4), plain, out, 4);
  }

  /**
   * Opens a record body whose frame header was `head`; throws CRYPTO if it does not authenticate.
   * `body` is left as it is (the payload is a buffer of its own), so it may be a reused buffer.
   */
  open(head: Buffer, body: Buffer): { type: number; payload: Buffer } {
    this.checkLength(body.length);
    const n = body.length - TAG_SIZE;
    const plain = Buffer.allocUnsafe(n);
    this.authenticate(this.aead.aeadOpen(this.key, this.nonce(), head, [body.subarray(0, n)], body.subarray(n), plain));
    return { type: plain[0]!, payload: plain.subarray(1) };
  }

  /**
   * Opens a record whose body is the concatenation of `parts` where it lies: the parts are
   * decrypted in place and the payload is views of them (the pieces in order, none empty). Only
   * for bytes nobody else holds (what a socket delivered). The parts are consumed either way: if
   * the record does not authenticate this throws CRYPTO, and the addon has already zeroed every
   * byte it decrypted — nothing of them is used.
   */
  openInPlace(head: Buffer, parts: readonly Buffer[]): { type: number; payload: Buffer[] } {
    if (parts.length >= AEAD_MAX_PIECES) parts = [Buffer.concat(parts)];
    let length = 0;
    for (const p of parts) length += p.length;
    this.checkLength(length);
    // The ciphertext is all but the last TAG_SIZE bytes; the tag may be split across parts.
    const ciphertext: Buffer[] = [];
    let tag: Buffer = this.tagBuffer;
    let need = length - TAG_SIZE;
    let tagBytes = 0;
    for (const p of parts) {
      const c = Math.min(p.length, need);
      if (c > 0) ciphertext.push(c === p.length ? p : p.subarray(0, c));
      need -= c;
      if (c === p.length) continue;
      if (p.length - c === TAG_SIZE) tag = p.subarray(c);
      else tagBytes += p.copy(this.tagBuffer, tagBytes, c);
    }
    this.authenticate(this.aead.aeadOpen(this.key, this.nonce(), head, ciphertext, tag, undefined));
    const first = ciphertext[0]!;
    const payload = first.length > 1 ? [first.subarray(1), ...ciphertext.slice(1)] : ciphertext.slice(1);
    return { type: first[0]!, payload };
  }

  private checkLength(bodyLength: number): void {
    if (bodyLength < 1 + TAG_SIZE) throw new AirlockError("GUEST_PROTOCOL", `secure channel: record ${this.counter} is ${bodyLength} bytes, too short to be a record`);
  }

  private authenticate(ok: boolean): void {
    // The nonce() of this record has moved the counter on.
    if (!ok) throw new AirlockError("CRYPTO", `secure channel: record ${this.counter - 1} does not authenticate (tampered, dropped, reordered, replayed or from another session)`);
  }
}

/** A peer's alert reason, made safe to show: printable ASCII, bounded. */
export function alertReason(payload: Buffer): string {
  const text = payload.subarray(0, 300).toString("latin1").replace(/[^\x20-\x7e]/g, "?");
  return text.length > 0 ? text : "(no reason given)";
}
