// age recipients and identities: X25519 (`age1…` / `AGE-SECRET-KEY-1…`) and scrypt passphrases.
// A recipient wraps the file key into header stanzas; an identity finds its stanza and unwraps it.
// Private keys live only in KeyObjects; identities print as their public recipient, never the key.
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, scrypt } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { inspect, promisify } from "node:util";
import { AirlockError } from "../errors.ts";
import { bech32Decode, bech32Encode } from "./bech32.ts";
import { aeadOpen, aeadSeal, b64Decode, b64Encode, ZERO_NONCE } from "./primitives.ts";

/** One header stanza: `-> arg0 arg1…` then a base64 body. args[0] is the stanza type. */
export interface Stanza {
  args: string[];
  body: Buffer;
}

export interface AgeRecipient {
  wrap(fileKey: Buffer): Stanza[] | Promise<Stanza[]>;
  /** scrypt stanzas must be the only stanza of a header. */
  readonly mustBeAlone?: boolean;
}

export interface AgeIdentity {
  /** The file key, or null when no stanza is for this identity. Throws only on a malformed stanza of its own type. */
  unwrap(stanzas: Stanza[]): Buffer | null | Promise<Buffer | null>;
}

const SPKI_X25519 = Buffer.from("302a300506032b656e032100", "hex");
const PKCS8_X25519 = Buffer.from("302e020100300506032b656e04220420", "hex");
const X25519_LABEL = "age-encryption.org/v1/X25519";

function x25519Public(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_X25519, raw]), format: "der", type: "spki" });
}

function rawPublic(key: KeyObject): Buffer {
  return key.export({ format: "der", type: "spki" }).subarray(SPKI_X25519.length);
}

function wrapKey(shared: Buffer, share: Buffer, recipient: Buffer): Buffer {
  return Buffer.from(hkdfSync("sha256", shared, Buffer.concat([share, recipient]), X25519_LABEL, 32));
}

export class X25519Recipient implements AgeRecipient {
  readonly publicKey: Buffer;

  constructor(publicKey: Buffer) {
    if (publicKey.length !== 32) throw new AirlockError("CRYPTO", "an X25519 recipient is 32 bytes");
    this.publicKey = publicKey;
  }

  /** Parses `age1…`; `where` names the source for the error message (file and line). */
  static parse(s: string, where = "recipient"): X25519Recipient {
    const dec = bech32Decode(s);
    if (!dec || dec.hrp !== "age" || dec.data.length !== 32 || s !== s.toLowerCase()) {
      throw new AirlockError("KEY_INVALID", `${where}: expected an age X25519 recipient (age1…, 62 characters), got ${JSON.stringify(s.slice(0, 80))}`, {
        hint: "make one with `airlock dataset keygen` or `age-keygen`",
      });
    }
    return new X25519Recipient(dec.data);
  }

  toString(): string {
    return bech32Encode("age", this.publicKey);
  }

  wrap(fileKey: Buffer): Stanza[] {
    const eph = generateKeyPairSync("x25519");
    const share = rawPublic(eph.publicKey);
    const shared = diffieHellman({ privateKey: eph.privateKey, publicKey: x25519Public(this.publicKey) });
    const body = aeadSeal(wrapKey(shared, share, this.publicKey), ZERO_NONCE, fileKey);
    return [{ args: ["X25519", b64Encode(share)], body }];
  }
}

export class X25519Identity implements AgeIdentity {
  readonly #privateKey: KeyObject;
  readonly recipient: X25519Recipient;

  private constructor(privateKey: KeyObject) {
    this.#privateKey = privateKey;
    this.recipient = new X25519Recipient(rawPublic(createPublicKey(privateKey)));
  }

  static generate(): X25519Identity {
    return new X25519Identity(generateKeyPairSync("x25519").privateKey);
  }

  static fromKeyObject(key: KeyObject): X25519Identity {
    if (key.type !== "private" || key.asymmetricKeyType !== "x25519") throw new AirlockError("CRYPTO", "an age identity needs an X25519 private key");
    return new X25519Identity(key);
  }

  /** Parses `AGE-SECRET-KEY-1…`. The message never echoes the text: it may be a key with a typo. */
  static parse(s: string, where = "identity"): X25519Identity {
    const dec = bech32Decode(s);
    if (!dec || dec.hrp !== "age-secret-key-" || dec.data.length !== 32 || s !== s.toUpperCase()) {
      throw new AirlockError("KEY_INVALID", `${where}: expected an age identity (AGE-SECRET-KEY-1…, upper case, valid checksum)`, {
        hint: "the identity file is the one `airlock dataset keygen` or `age-keygen` wrote",
      });
    }
    return new X25519Identity(createPrivateKey({ key: Buffer.concat([PKCS8_X25519, dec.data]), format: "der", type: "pkcs8" }));
  }

  /** The secret encoding, for writing an identity file. Handle with care: it is the key. */
  encode(): string {
    const raw = this.#privateKey.export({ format: "der", type: "pkcs8" }).subarray(PKCS8_X25519.length);
    return bech32Encode("age-secret-key-", raw).toUpperCase();
  }

  unwrap(stanzas: Stanza[]): Buffer | null {
    for (const s of stanzas) {
      if (s.args[0] !== "X25519") continue;
      const share = s.args.length === 2 ? b64Decode(s.args[1]!) : null;
      if (!share || share.length !== 32 || s.body.length !== 32) throw new AirlockError("CRYPTO", "header has a malformed X25519 stanza");
      let shared: Buffer;
      try {
        shared = diffieHellman({ privateKey: this.#privateKey, publicKey: x25519Public(share) });
      } catch (err) {
        // OpenSSL refuses low-order points (an all-zero shared secret), as the age spec requires.
        throw new AirlockError("CRYPTO", "header has an X25519 stanza with an invalid (low-order) share", { cause: err });
      }
      const fileKey = aeadOpen(wrapKey(shared, share, this.recipient.publicKey), ZERO_NONCE, s.body);
      if (fileKey) return fileKey;
    }
    return null;
  }

  toString(): string {
    return `X25519Identity(${this.recipient.toString()})`;
  }
  toJSON(): string {
    return this.toString();
  }
  [inspect.custom](): string {
    return this.toString();
  }
}

const SCRYPT_LABEL = "age-encryption.org/v1/scrypt";
const scryptAsync = promisify(scrypt) as (pw: string, salt: Buffer, len: number, opts: object) => Promise<Buffer>;

async function scryptKey(passphrase: string, salt: Buffer, logN: number): Promise<Buffer> {
  const N = 2 ** logN;
  return scryptAsync(passphrase, Buffer.concat([Buffer.from(SCRYPT_LABEL), salt]), 32, { N, r: 8, p: 1, maxmem: 256 * N * 8 });
}

/** Passphrase encryption. logN 18 is age's default (about a second); tests use less. */
export class ScryptRecipient implements AgeRecipient {
  readonly mustBeAlone = true;
  readonly #passphrase: string;
  readonly #logN: number;
  constructor(passphrase: string, logN = 18) {
    if (!Number.isInteger(logN) || logN < 1 || logN > 30) throw new AirlockError("KEY_INVALID", "scrypt work factor must be an integer 1..30");
    this.#passphrase = passphrase;
    this.#logN = logN;
  }
  async wrap(fileKey: Buffer): Promise<Stanza[]> {
    const salt = randomBytes(16);
    const body = aeadSeal(await scryptKey(this.#passphrase, salt, this.#logN), ZERO_NONCE, fileKey);
    return [{ args: ["scrypt", b64Encode(salt), String(this.#logN)], body }];
  }
}

export class ScryptIdentity implements AgeIdentity {
  readonly #passphrase: string;
  readonly #maxLogN: number;
  /**
   * maxLogN bounds the work and memory a hostile file can demand: scrypt needs 1 KiB × 2^logN, so
   * 20 is 1 GiB (age -p writes 18; the Go tool accepts up to 22, 4 GiB).
   */
  constructor(passphrase: string, maxLogN = 20) {
    this.#passphrase = passphrase;
    this.#maxLogN = maxLogN;
  }
  async unwrap(stanzas: Stanza[]): Promise<Buffer | null> {
    const s = stanzas.find((x) => x.args[0] === "scrypt");
    if (!s) return null;
    if (stanzas.length !== 1) throw new AirlockError("CRYPTO", "header has a scrypt stanza next to other stanzas (not allowed)");
    const salt = s.args.length === 3 ? b64Decode(s.args[1]!) : null;
    const logNText = s.args[2] ?? "";
    if (!salt || salt.length !== 16 || !/^[1-9][0-9]?$/.test(logNText) || s.body.length !== 32) {
      throw new AirlockError("CRYPTO", "header has a malformed scrypt stanza");
    }
    const logN = Number(logNText);
    if (logN > this.#maxLogN) throw new AirlockError("CRYPTO", `scrypt work factor 2^${logN} is above the limit 2^${this.#maxLogN}`);
    return aeadOpen(await scryptKey(this.#passphrase, salt, logN), ZERO_NONCE, s.body);
  }
}

function contentLines(text: string): Array<{ line: string; n: number }> {
  return text
    .split("\n")
    .map((l, i) => ({ line: l.replace(/\r$/, "").trim(), n: i + 1 }))
    .filter(({ line }) => line !== "" && !line.startsWith("#"));
}

/** Parses an identity file (age-keygen's format: comments and AGE-SECRET-KEY-1 lines). */
export function parseIdentityFile(text: string, file: string): X25519Identity[] {
  const ids = contentLines(text).map(({ line, n }) => X25519Identity.parse(line, `${file}:${n}`));
  if (ids.length === 0) throw new AirlockError("KEY_INVALID", `${file}: no identity in the file (expected AGE-SECRET-KEY-1… lines)`);
  return ids;
}

/** Parses a recipients file (one age1… per line, # comments). */
export function parseRecipientsFile(text: string, file: string): X25519Recipient[] {
  const rs = contentLines(text).map(({ line, n }) => X25519Recipient.parse(line, `${file}:${n}`));
  if (rs.length === 0) throw new AirlockError("KEY_INVALID", `${file}: no recipient in the file (expected age1… lines)`);
  return rs;
}

/** The text of an identity file in age-keygen's layout. */
export function formatIdentityFile(id: X25519Identity, created = new Date()): string {
  return `# created: ${created.toISOString().replace(/\.\d+Z$/, "Z")}\n# public key: ${id.recipient.toString()}\n${id.encode()}\n`;
}
