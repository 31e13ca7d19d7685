// age's payload: a 16-byte nonce, then the STREAM construction: ChaCha20-Poly1305 over 64 KiB
// chunks, nonce = 11-byte big-endian chunk counter || final flag. Decryption releases a chunk's
// plaintext only after its tag verifies, and names what went wrong: truncation (no final chunk),
// reordering (a chunk authenticates under another counter), appended data, or tampering.
import { createCipheriv, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";
import { AirlockError } from "../errors.ts";
import { armorDecode, armorEncode, looksArmored } from "./armor.ts";
import { encodeHeader, headerMac, parseHeader } from "./header.ts";
import type { AgeIdentity, AgeRecipient, Stanza } from "./keys.ts";
import { aeadOpen, TAG_SIZE } from "./primitives.ts";
import { ByteReader } from "./reader.ts";
import type { ByteSource } from "./reader.ts";

export const CHUNK_SIZE = 64 * 1024;
const NONCE_SIZE = 16;
/** How far decryption looks for the right place of a misplaced chunk (only on failure). */
const REORDER_WINDOW = 256;

export interface EncryptOptions {
  /** Wrap the output in ASCII armor. */
  armor?: boolean;
}

function chunkNonce(counter: number, final: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.writeUIntBE(counter, 5, 6); // 2^48 chunks of 64 KiB is far beyond any file
  n[11] = final ? 1 : 0;
  return n;
}

function payloadKey(fileKey: Buffer, nonce: Buffer): Buffer {
  return Buffer.from(hkdfSync("sha256", fileKey, nonce, "payload", 32));
}

/** Ciphertext and tag as two buffers: joining them would copy every chunk once more. */
function* sealChunk(key: Buffer, counter: number, final: boolean, plaintext: Buffer): Generator<Buffer> {
  const c = createCipheriv("chacha20-poly1305", key, chunkNonce(counter, final), { authTagLength: TAG_SIZE });
  const ct = c.update(plaintext);
  c.final();
  yield ct;
  yield c.getAuthTag();
}

async function wrapAll(recipients: AgeRecipient[], fileKey: Buffer): Promise<Stanza[]> {
  if (recipients.length === 0) throw new AirlockError("KEY_INVALID", "encryption needs at least one recipient");
  if (recipients.length > 1 && recipients.some((r) => r.mustBeAlone)) {
    throw new AirlockError("KEY_INVALID", "a passphrase (scrypt) cannot be combined with other recipients");
  }
  const stanzas: Stanza[] = [];
  for (const r of recipients) stanzas.push(...(await r.wrap(fileKey)));
  return stanzas;
}

/** Encrypts a stream of plaintext to the recipients; memory stays at about one chunk. */
export function encrypt(source: ByteSource, recipients: AgeRecipient[], options: EncryptOptions = {}): AsyncGenerator<Buffer> {
  const binary = encryptBinary(source, recipients);
  return options.armor ? armorEncode(binary) : binary;
}

async function* encryptBinary(source: ByteSource, recipients: AgeRecipient[]): AsyncGenerator<Buffer> {
  const fileKey = randomBytes(16);
  const header = encodeHeader(await wrapAll(recipients, fileKey), fileKey);
  const nonce = randomBytes(NONCE_SIZE);
  const key = payloadKey(fileKey, nonce);
  yield Buffer.concat([header, nonce]);

  // A chunk is sealed only once more data is known to follow: the last one carries the final
  // flag. Whole chunks inside a source piece are sealed in place; only a chunk that straddles two
  // pieces is copied into `carry`.
  let counter = 0;
  let carry: Buffer | null = null;
  for await (const input of source) {
    const piece = Buffer.from(input.buffer, input.byteOffset, input.length);
    let off = 0;
    if (carry && carry.length < CHUNK_SIZE) {
      const take = Math.min(CHUNK_SIZE - carry.length, piece.length);
      carry = Buffer.concat([carry, piece.subarray(0, take)]);
      off = take;
    }
    if (off === piece.length) continue;
    if (carry) yield* sealChunk(key, counter++, false, carry);
    while (piece.length - off > CHUNK_SIZE) {
      yield* sealChunk(key, counter++, false, piece.subarray(off, off + CHUNK_SIZE));
      off += CHUNK_SIZE;
    }
    carry = Buffer.from(piece.subarray(off)); // a copy: the producer may reuse its buffer
  }
  yield* sealChunk(key, counter, true, carry ?? Buffer.alloc(0));
}

async function fileKeyFor(stanzas: Stanza[], identities: AgeIdentity[]): Promise<Buffer> {
  if (stanzas.some((s) => s.args[0] === "scrypt") && stanzas.length !== 1) {
    throw new AirlockError("CRYPTO", "not a valid age file: a scrypt stanza must be the only stanza");
  }
  for (const id of identities) {
    const k = await id.unwrap(stanzas);
    if (k) {
      if (k.length !== 16) throw new AirlockError("CRYPTO", "the unwrapped file key is not 16 bytes");
      return k;
    }
  }
  const types = [...new Set(stanzas.map((s) => s.args[0]))].join(", ");
  throw new AirlockError("CRYPTO", `wrong identity: none of the ${identities.length} identities given opens this file (its header has ${stanzas.length} stanza(s) of type ${types || "none"})`, {
    hint: "use the identity that matches a recipient the file was encrypted to",
  });
}

/** An age file's payload key, and the reader at its first payload chunk (after the nonce). */
export interface OpenedHeader {
  key: Buffer;
  payload: ByteReader;
}

/**
 * Reads an age file's header (binary or armored): unwraps the file key with one of `identities`,
 * checks the header MAC and derives the payload key. The payload is left unread, so it can be
 * opened here (decrypt) or handed on, still sealed, to whoever was given the key.
 */
export async function openHeader(source: ByteSource, identities: AgeIdentity[]): Promise<OpenedHeader> {
  let r = new ByteReader(source);
  if (looksArmored(await r.peek(256))) r = new ByteReader(armorDecode(r.rest()));

  const header = await parseHeader(r);
  const fileKey = await fileKeyFor(header.stanzas, identities);
  if (!timingSafeEqual(headerMac(fileKey, header.macInput), header.mac)) {
    throw new AirlockError("CRYPTO", "header MAC does not verify: the header was tampered with");
  }
  const nonce = await r.read(NONCE_SIZE);
  if (nonce.length !== NONCE_SIZE) throw new AirlockError("CRYPTO", "truncated: the file ends before its payload nonce");
  return { key: payloadKey(fileKey, nonce), payload: r };
}

/** Bytes of one sealed payload chunk (all but the last are exactly this long). */
export const SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE;

/** The plaintext length of a payload of `sealed` bytes (-1 if no valid payload is that long). */
export function payloadPlaintextLength(sealed: number): number {
  if (sealed < TAG_SIZE) return -1;
  const chunks = Math.max(1, Math.ceil(sealed / SEALED_CHUNK_SIZE));
  const last = sealed - (chunks - 1) * SEALED_CHUNK_SIZE;
  return last < TAG_SIZE ? -1 : sealed - chunks * TAG_SIZE;
}

/**
 * Opens an age payload (the STREAM chunks after the nonce) pushed in pieces of any size, with its
 * payload key: push() yields the plaintext of each chunk known not to be the last, end() that of
 * the final one. A chunk's plaintext is yielded only after its tag verified; a fault throws
 * AirlockError CRYPTO naming it, and everything yielded before must then be treated as void.
 */
export class PayloadOpener {
  /** What went wrong and in which chunk, once push() or end() threw CRYPTO. */
  fault: { kind: "tampered" | "truncated" | "malformed"; chunk: number } | undefined;
  readonly #key: Buffer;
  #held: Buffer[] = [];
  #heldLength = 0;
  #counter = 0;
  #ended = false;
  /** Plaintext bytes returned so far. */
  bytes = 0;

  constructor(key: Buffer) {
    if (key.length !== 32) throw new AirlockError("CRYPTO", "an age payload key is 32 bytes");
    this.#key = key;
  }

  *push(piece: Buffer): Generator<Buffer> {
    if (this.fault) throw new AirlockError("INTERNAL", "age payload: data pushed after a fault");
    if (this.#ended) throw new AirlockError("INTERNAL", "age payload: data pushed after its end");
    if (piece.length === 0) return;
    this.#held.push(piece);
    this.#heldLength += piece.length;
    // A full chunk is the final one when nothing follows it: open one only once a byte follows.
    while (this.#heldLength > SEALED_CHUNK_SIZE) yield this.#open(this.#take(SEALED_CHUNK_SIZE), false);
  }

  *end(): Generator<Buffer> {
    if (this.#ended) throw new AirlockError("INTERNAL", "age payload: ended twice");
    this.#ended = true;
    if (this.#heldLength === 0) {
      if (this.#counter === 0) throw this.#failed(new AirlockError("CRYPTO", "truncated: the payload has no final chunk (the file ends after its header)"), 0);
      // The previous chunk was opened as "not last" because a byte followed; none can be missing here.
      throw new AirlockError("INTERNAL", "age payload: no final chunk held");
    }
    const plaintext = this.#open(this.#take(this.#heldLength), true);
    if (plaintext.length === 0 && this.#counter > 1) throw this.#failed(new AirlockError("CRYPTO", "not a valid age file: the final chunk is empty"), this.#counter - 1);
    if (plaintext.length) yield plaintext;
  }

  #take(n: number): Buffer {
    const first = this.#held[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#held.shift();
      else this.#held[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      for (let off = 0; off < n; ) {
        const b = this.#held[0]!;
        const k = b.copy(out, off, 0, Math.min(b.length, n - off));
        off += k;
        if (k === b.length) this.#held.shift();
        else this.#held[0] = b.subarray(k);
      }
    }
    this.#heldLength -= n;
    return out;
  }

  #open(sealed: Buffer, last: boolean): Buffer {
    const i = this.#counter++;
    const plaintext = aeadOpen(this.#key, chunkNonce(i, last), sealed);
    if (!plaintext) throw this.#failed(diagnose(this.#key, i, last, sealed), i);
    this.bytes += plaintext.length;
    return plaintext;
  }

  /** Records the fault's kind (from diagnose()'s verdict) for a caller that must name it in a few bits. */
  #failed(err: AirlockError, chunk: number): AirlockError {
    const kind = /^truncated/.test(err.message) ? "truncated" : /^(not a valid|.*appended data\)$)/.test(err.message) ? "malformed" : "tampered";
    this.fault = { kind, chunk };
    return err;
  }
}

/**
 * Decrypts an age file (binary or armored). Yields plaintext chunk by chunk, each only after its
 * tag verified; throws AirlockError CRYPTO naming the fault. A consumer must treat everything it
 * received as void if the iteration throws (e.g. delete a partly written output file).
 */
export async function* decrypt(source: ByteSource, identities: AgeIdentity[]): AsyncGenerator<Buffer> {
  const { key, payload } = await openHeader(source, identities);
  const opener = new PayloadOpener(key);
  for await (const piece of payload.rest()) yield* opener.push(piece);
  yield* opener.end();
}

/** Runs only after a chunk failed: finds out why, so the error says what happened to the file. */
function diagnose(key: Buffer, i: number, last: boolean, sealed: Buffer): AirlockError {
  const where = `chunk ${i} (plaintext bytes ${i * CHUNK_SIZE}…)`;
  if (last && aeadOpen(key, chunkNonce(i, false), sealed)) {
    return new AirlockError("CRYPTO", `truncated: ${where} is not the final chunk, and the file ends after it (the final chunk is missing)`);
  }
  if (!last && aeadOpen(key, chunkNonce(i, true), sealed)) {
    return new AirlockError("CRYPTO", `${where} is the final chunk, but data follows it (appended data)`);
  }
  for (let j = Math.max(0, i - REORDER_WINDOW); j < i + REORDER_WINDOW; j++) {
    if (j === i) continue;
    if (aeadOpen(key, chunkNonce(j, false), sealed) || aeadOpen(key, chunkNonce(j, true), sealed)) {
      return new AirlockError("CRYPTO", `reordered: ${where} holds chunk ${j} of the file (chunks were moved)`);
    }
  }
  if (last && sealed.length < CHUNK_SIZE + TAG_SIZE) {
    return new AirlockError("CRYPTO", `${where}, the last one, fails authentication: the file was cut inside it (truncated), had data appended, or was tampered with`);
  }
  return new AirlockError("CRYPTO", `tampered: ${where} fails authentication`);
}
