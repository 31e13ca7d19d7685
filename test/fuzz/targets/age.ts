// Fuzz targets on the age format (proto/src/age/): headers, whole files (binary and armored) and
// key files. Seeds are real age files, built here from fixed keys, nonces and file keys so they
// are the same bytes on every run (encrypt() draws fresh randomness each time).
import { createCipheriv, createPublicKey, diffieHellman, hkdfSync, scryptSync } from "node:crypto";
import { armorEncode } from "../../../proto/src/age/armor.ts";
import { bech32Encode } from "../../../proto/src/age/bech32.ts";
import { encodeHeader, parseHeader } from "../../../proto/src/age/header.ts";
import { formatIdentityFile, parseIdentityFile, parseRecipientsFile, ScryptIdentity, X25519Identity } from "../../../proto/src/age/keys.ts";
import type { Stanza } from "../../../proto/src/age/keys.ts";
import { aeadSeal, b64Encode, ZERO_NONCE } from "../../../proto/src/age/primitives.ts";
import { ByteReader } from "../../../proto/src/age/reader.ts";
import { CHUNK_SIZE, decrypt } from "../../../proto/src/age/stream.ts";
import { AirlockError } from "../../../proto/src/errors.ts";
import { Refused, Violation, type DecoderTarget, type TargetFactory } from "../engine.ts";
import { dictionary, type Rng, type Seed } from "../mutate.ts";
import { fixedBytes, fixedX25519 } from "../keys.ts";

const PASSPHRASE = "airlock fuzz passphrase";

/** age's X25519 stanza for a recipient, from a fixed ephemeral key (keys.ts X25519Recipient.wrap). */
function x25519Stanza(fileKey: Buffer, recipient: Buffer, label: string): Stanza {
  const eph = fixedX25519(`age ephemeral ${label}`);
  const shared = diffieHellman({ privateKey: eph.privateKey, publicKey: createPublicKey({ key: { kty: "OKP", crv: "X25519", x: recipient.toString("base64url") }, format: "jwk" }) });
  const wrapKey = Buffer.from(hkdfSync("sha256", shared, Buffer.concat([eph.publicRaw, recipient]), "age-encryption.org/v1/X25519", 32));
  return { args: ["X25519", b64Encode(eph.publicRaw)], body: aeadSeal(wrapKey, ZERO_NONCE, fileKey) };
}

function scryptStanza(fileKey: Buffer, logN: number): Stanza {
  const salt = fixedBytes("age scrypt salt", 16);
  const key = scryptSync(PASSPHRASE, Buffer.concat([Buffer.from("age-encryption.org/v1/scrypt"), salt]), 32, { N: 2 ** logN, r: 8, p: 1 });
  return { args: ["scrypt", b64Encode(salt), String(logN)], body: aeadSeal(key, ZERO_NONCE, fileKey) };
}

/** A whole age file: header, payload nonce, STREAM chunks (stream.ts encrypt, with fixed randomness). */
function ageFile(label: string, stanzas: (fileKey: Buffer) => Stanza[], plaintext: Buffer): Buffer {
  const fileKey = fixedBytes(`age file key ${label}`, 16);
  const nonce = fixedBytes(`age nonce ${label}`, 16);
  const key = Buffer.from(hkdfSync("sha256", fileKey, nonce, "payload", 32));
  const parts = [encodeHeader(stanzas(fileKey), fileKey), nonce];
  const n = Math.max(1, Math.ceil(plaintext.length / CHUNK_SIZE));
  for (let i = 0; i < n; i++) {
    const iv = Buffer.alloc(12);
    iv.writeUIntBE(i, 5, 6);
    iv[11] = i === n - 1 ? 1 : 0;
    const c = createCipheriv("chacha20-poly1305", key, iv, { authTagLength: 16 });
    parts.push(c.update(plaintext.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE)), c.final(), c.getAuthTag());
  }
  return Buffer.concat(parts);
}

interface AgeFixture {
  identity: X25519Identity;
  scrypt: ScryptIdentity;
  binary: Seed[];
  armored: Seed[];
}

let fixture: AgeFixture | undefined;

async function ageFixture(): Promise<AgeFixture> {
  if (fixture) return fixture;
  const identity = X25519Identity.parse(bech32Encode("age-secret-key-", fixedBytes("age identity")).toUpperCase());
  const other = X25519Identity.parse(bech32Encode("age-secret-key-", fixedBytes("age other identity")).toUpperCase());
  const me = identity.recipient.publicKey;
  const binary: Seed[] = [
    { name: "X25519, empty", data: ageFile("empty", (k) => [x25519Stanza(k, me, "a")], Buffer.alloc(0)) },
    { name: "X25519, a line", data: ageFile("line", (k) => [x25519Stanza(k, me, "b")], Buffer.from("hello, clean room\n")) },
    { name: "X25519, two chunks", data: ageFile("two chunks", (k) => [x25519Stanza(k, me, "c")], Buffer.alloc(CHUNK_SIZE + 100, 0x61)) },
    {
      name: "three stanzas",
      data: ageFile("three", (k) => [{ args: ["ssh-ed25519", "Zm9v", "YmFy"], body: fixedBytes("ssh body", 32) }, x25519Stanza(k, other.recipient.publicKey, "d"), x25519Stanza(k, me, "e")], Buffer.from("x".repeat(300))),
    },
    { name: "scrypt", data: ageFile("scrypt", (k) => [scryptStanza(k, 2)], Buffer.from("passphrase-protected\n")) },
  ];
  const armored: Seed[] = [];
  for (const s of binary.filter((x) => x.data.length < 4096)) {
    const parts: Buffer[] = [];
    for await (const p of armorEncode([s.data])) parts.push(p);
    armored.push({ name: `armored ${s.name}`, data: Buffer.concat(parts) });
  }
  fixture = { identity, scrypt: new ScryptIdentity(PASSPHRASE, 10), binary, armored };
  return fixture;
}

/** Cuts bytes into pieces at random points. */
function pieces(rng: Rng, b: Buffer): Buffer[] {
  if (rng.chance(0.6)) return [b];
  const out: Buffer[] = [];
  for (let off = 0; off < b.length; ) {
    const n = 1 + rng.int(rng.chance(0.5) ? 16 : 4096);
    out.push(b.subarray(off, off + n));
    off += n;
  }
  return out;
}

const AGE_DICT = dictionary("age-encryption.org/v1\n", "-> X25519 ", "-> scrypt ", "-> ", "--- ", "---", "\n", "\r\n", " ", "=", "AAAA", "-----BEGIN AGE ENCRYPTED FILE-----\n", "-----END AGE ENCRYPTED FILE-----\n", "20", "99");

const ageHeader: TargetFactory = {
  name: "age-header",
  what: "age headers (age/header.ts parseHeader over age/reader.ts ByteReader)",
  async create(): Promise<DecoderTarget> {
    const f = await ageFixture();
    const run = async (input: Buffer, rng: Rng): Promise<void> => {
      const h = await parseHeader(new ByteReader(pieces(rng, input)));
      if (h.mac.length !== 32) throw new Violation(`a header MAC of ${h.mac.length} bytes`);
      if (!input.subarray(0, h.macInput.length).equals(h.macInput)) throw new Violation("the MAC input is not a prefix of the file");
    };
    return { name: this.name, what: this.what, seeds: f.binary, dict: AGE_DICT, maxLen: 256 * 1024, run };
  },
};

async function drain(source: AsyncIterable<Buffer>): Promise<number> {
  let n = 0;
  for await (const p of source) n += p.length;
  return n;
}

const ageDecrypt: TargetFactory = {
  name: "age-decrypt",
  what: "whole age files, binary (age/stream.ts decrypt with an X25519 and a scrypt identity)",
  async create(): Promise<DecoderTarget> {
    const f = await ageFixture();
    const run = async (input: Buffer, rng: Rng): Promise<void> => {
      await drain(decrypt(pieces(rng, input), [f.identity, f.scrypt]));
    };
    return { name: this.name, what: this.what, seeds: f.binary, dict: AGE_DICT, maxLen: 256 * 1024, run };
  },
};

const ageArmor: TargetFactory = {
  name: "age-armor",
  what: "armored age files (age/armor.ts armorDecode inside age/stream.ts decrypt)",
  async create(): Promise<DecoderTarget> {
    const f = await ageFixture();
    const run = async (input: Buffer, rng: Rng): Promise<void> => {
      await drain(decrypt(pieces(rng, input), [f.identity, f.scrypt]));
    };
    return { name: this.name, what: this.what, seeds: f.armored, dict: AGE_DICT, maxLen: 64 * 1024, run };
  },
};

const ageKeys: TargetFactory = {
  name: "age-keys",
  what: "age identity and recipient files (age/keys.ts parseIdentityFile, parseRecipientsFile, age/bech32.ts)",
  async create(): Promise<DecoderTarget> {
    const f = await ageFixture();
    const other = X25519Identity.parse(bech32Encode("age-secret-key-", fixedBytes("age other identity")).toUpperCase());
    const seeds: Seed[] = [
      { name: "identity file", data: Buffer.from(formatIdentityFile(f.identity, new Date("2026-01-01T00:00:00Z"))) },
      { name: "two identities", data: Buffer.from(`${f.identity.encode()}\r\n\n# another\n  ${other.encode()}  \n`) },
      { name: "recipients file", data: Buffer.from(`# analysts\n${f.identity.recipient.toString()}\n${other.recipient.toString()}\n`) },
    ];
    const run = (input: Buffer): void => {
      const text = input.toString("utf8");
      let ok = 0;
      for (const parse of [() => parseIdentityFile(text, "id.txt"), () => parseRecipientsFile(text, "r.txt")]) {
        try {
          const keys = parse();
          if (keys.length === 0) throw new Violation("a key file parsed to no keys");
          ok++;
        } catch (err) {
          if (!(err instanceof AirlockError)) throw err;
        }
      }
      if (ok === 0) throw new Refused("neither an identity nor a recipients file");
    };
    return { name: this.name, what: this.what, seeds, dict: dictionary("AGE-SECRET-KEY-1", "age1", "#", "\n", "\r", " ", "1", "qpzry9x8gf2tvdw0s3jn54khce6mua7l", "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", "\u0130", "\u212a"), maxLen: 16 * 1024, run };
  },
};

export const ageTargets: TargetFactory[] = [ageHeader, ageDecrypt, ageArmor, ageKeys];
