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

/**
 * Decrypts an age file (binary or armored). Yields plaintext chunk by chunk, each only after its
 * tag verified; throws AirlockError CRYPTO naming the fault. A consumer must treat everything it
 * received as void if the iteration throws (e.g. delete a partly written output file).
 */
export async function* decrypt(source: ByteSource, identities: AgeIdentity[]): AsyncGenerator<Buffer> {
  let r = new ByteReader(source);
  if (looksArmored(await r.peek(256))) r = new ByteReader(armorDecode(r.rest()));

  const header = await parseHeader(r);
  const fileKey = await fileKeyFor(header.stanzas, identities);
  if (!timingSafeEqual(headerMac(fileKey, header.macInput), header.mac)) {
    throw new AirlockError("CRYPTO", "header MAC does not verify: the header was tampered with");
  }
  const nonce = await r.read(NONCE_SIZE);
  if (nonce.length !== NONCE_SIZE) throw new AirlockError("CRYPTO", "truncated: the file ends before its payload nonce");
  const key = payloadKey(fileKey, nonce);

  const full = CHUNK_SIZE + TAG_SIZE;
  for (let i = 0; ; i++) {
    const sealed = await r.read(full);
    // Only possible for i = 0: after a chunk read with more data behind it, at least one byte follows.
    if (sealed.length === 0) throw new AirlockError("CRYPTO", "truncated: the payload has no final chunk (the file ends after its header)");
    const last = await r.atEnd();
    const plaintext = aeadOpen(key, chunkNonce(i, last), sealed);
    if (!plaintext) throw diagnose(key, i, last, sealed);
    if (last && plaintext.length === 0 && i > 0) throw new AirlockError("CRYPTO", "not a valid age file: the final chunk is empty");
    if (plaintext.length) yield plaintext;
    if (last) return;
  }
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
