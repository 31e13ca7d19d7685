// The few primitives age is made of, on node:crypto: ChaCha20-Poly1305 and strict unpadded base64.
import { createCipheriv, createDecipheriv } from "node:crypto";

export const ZERO_NONCE = Buffer.alloc(12);
export const TAG_SIZE = 16;

export function aeadSeal(key: Buffer, nonce: Buffer, plaintext: Buffer): Buffer {
  const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG_SIZE });
  const ct = c.update(plaintext);
  c.final();
  return Buffer.concat([ct, c.getAuthTag()]);
}

/** The plaintext, or null when the tag does not verify. Nothing is returned before it does. */
export function aeadOpen(key: Buffer, nonce: Buffer, sealed: Buffer): Buffer | null {
  if (sealed.length < TAG_SIZE) return null;
  const d = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG_SIZE });
  d.setAuthTag(sealed.subarray(sealed.length - TAG_SIZE));
  const pt = d.update(sealed.subarray(0, sealed.length - TAG_SIZE));
  try {
    d.final();
  } catch {
    return null;
  }
  return pt;
}

export function b64Encode(b: Buffer): string {
  return b.toString("base64").replace(/=+$/, "");
}

/** Canonical unpadded standard base64 (age's encoding) or null; Buffer.from alone is too lenient. */
export function b64Decode(s: string): Buffer | null {
  if (!/^[A-Za-z0-9+/]*$/.test(s) || s.length % 4 === 1) return null;
  const b = Buffer.from(s, "base64");
  return b64Encode(b) === s ? b : null;
}
