// The broker's key store: one JSON file per key under <state>/keys/, each holding the release
// policy and the key encrypted under the broker master key (ChaCha20-Poly1305, random nonce, AAD =
// key id, so a ciphertext cannot be moved to another key's file).
//
// Master key: 32 bytes, from AIRLOCK_KBS_MASTER_KEY (64 hex digits) or a file (raw 32 bytes or 64
// hex digits) that must not be readable by group or others. `airlock kbs` defaults to
// <state>/master.key, created 0600 on first use; keep it on other storage (or in the environment)
// when the state dir is backed up or shared.
//
// A key's hostData (the room manifest digest it serves) is set once: put() refuses to change it,
// so a grant cannot be re-bound to another manifest that reuses the room's and the input's names.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { AirlockError, isErrnoException } from "../../../proto/src/errors.ts";
import { PRODUCTS } from "../../../proto/src/attestation/report.ts";
import type { Product, TcbVersion } from "../../../proto/src/attestation/report.ts";
import { DATA_SCOPES, type DataScope } from "../../../proto/src/manifest/schema.ts";

/** Key ids; long enough for an input's ROOM.INPUT.DIGEST24 (proto/src/room.ts inputKeyId) at the longest names. */
export const KEY_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,159}$/;
export const MAX_KEY_BYTES = 16 * 1024;

/** What a requester must prove to get a key. */
export interface KeyPolicy {
  /** Accepted launch measurements (hex, 96 digits); at least one. */
  measurements: string[];
  /** Required host_data (hex, 64 digits), e.g. the digest of the room manifest. */
  hostData?: string;
  product?: Product;
  vmpl?: number;
  minTcb?: Partial<TcbVersion>;
  allowDebug?: boolean;
  forbidSmt?: boolean;
  forbidMigrateMa?: boolean;
  requireSingleSocket?: boolean;
  /** ARK certificates (PEM) to trust instead of AMD's (e.g. the emulated PSP's test root). */
  trustRoots?: string[];
  /**
   * The data owner's scope for this key's data, carried in the signed release; the firewall
   * applies the stricter of it and the manifest's label. Absent: USER_PRIVATE.
   */
  scope?: DataScope;
}

interface KeyFile {
  id: string;
  policy: KeyPolicy;
  nonce: string;
  ciphertext: string;
  createdAt: string;
}

/** A key's id, bytes or release policy is malformed, or the change is refused (a re-bind). */
function policyError(message: string): AirlockError {
  return new AirlockError("KEY_POLICY", message);
}

/** The broker's master key is missing, malformed or readable by others. */
function masterKeyError(message: string): AirlockError {
  return new AirlockError("KEY_INVALID", message);
}

/** Checks a policy's shape (it may come from a user's JSON file). */
export function checkPolicy(p: unknown, where: string): KeyPolicy {
  if (typeof p !== "object" || p === null) throw policyError(`${where}: policy must be a JSON object`);
  const o = p as Record<string, unknown>;
  const allowed = ["measurements", "hostData", "product", "vmpl", "minTcb", "allowDebug", "forbidSmt", "forbidMigrateMa", "requireSingleSocket", "trustRoots", "scope"];
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw policyError(`${where}: unknown field "${k}" (known: ${allowed.join(", ")})`);
  if (!Array.isArray(o.measurements) || o.measurements.length === 0 || !o.measurements.every((m) => typeof m === "string" && /^[0-9a-f]{96}$/i.test(m))) {
    throw policyError(`${where}: measurements must be a non-empty list of 96-hex-digit launch digests`);
  }
  if (o.hostData !== undefined && !(typeof o.hostData === "string" && /^[0-9a-f]{64}$/i.test(o.hostData))) throw policyError(`${where}: hostData must be 64 hex digits`);
  if (o.product !== undefined && !PRODUCTS.includes(o.product as Product)) throw policyError(`${where}: product must be one of ${PRODUCTS.join(", ")}`);
  if (o.vmpl !== undefined && !(Number.isInteger(o.vmpl) && (o.vmpl as number) >= 0 && (o.vmpl as number) <= 3)) throw policyError(`${where}: vmpl must be 0 to 3`);
  if (o.minTcb !== undefined) {
    if (typeof o.minTcb !== "object" || o.minTcb === null) throw policyError(`${where}: minTcb must be an object`);
    for (const [k, v] of Object.entries(o.minTcb)) {
      if (!["bootloader", "tee", "snp", "microcode", "fmc"].includes(k) || !(Number.isInteger(v) && v >= 0 && v <= 255)) throw policyError(`${where}: minTcb.${k} must be a known field with a value 0-255`);
    }
  }
  for (const b of ["allowDebug", "forbidSmt", "forbidMigrateMa", "requireSingleSocket"]) {
    if (o[b] !== undefined && typeof o[b] !== "boolean") throw policyError(`${where}: ${b} must be true or false`);
  }
  if (o.trustRoots !== undefined && !(Array.isArray(o.trustRoots) && o.trustRoots.every((r) => typeof r === "string" && r.includes("BEGIN CERTIFICATE")))) {
    throw policyError(`${where}: trustRoots must be a list of PEM certificates`);
  }
  if (o.scope !== undefined && !(DATA_SCOPES as readonly unknown[]).includes(o.scope)) throw policyError(`${where}: scope must be one of ${DATA_SCOPES.join(", ")}`);
  return o as unknown as KeyPolicy;
}

/** Loads the master key from AIRLOCK_KBS_MASTER_KEY or a 0600 file, creating the file if asked. */
export function loadMasterKey(file: string | undefined, options: { create?: boolean } = {}): Buffer {
  const env = process.env.AIRLOCK_KBS_MASTER_KEY;
  if (env !== undefined) {
    if (!/^[0-9a-f]{64}$/i.test(env)) throw masterKeyError("AIRLOCK_KBS_MASTER_KEY must be 64 hex digits (32 bytes)");
    return Buffer.from(env, "hex");
  }
  if (!file) throw masterKeyError("no broker master key: set AIRLOCK_KBS_MASTER_KEY or give --master-key FILE");
  try {
    const st = statSync(file);
    if (st.mode & 0o077) throw masterKeyError(`master key ${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    const raw = readFileSync(file);
    const text = raw.toString("latin1").trim();
    if (/^[0-9a-f]{64}$/i.test(text)) return Buffer.from(text, "hex");
    if (raw.length === 32) return raw;
    throw masterKeyError(`master key ${file} must hold 32 raw bytes or 64 hex digits`);
  } catch (err) {
    if (!isErrnoException(err, "ENOENT") || !options.create) throw AirlockError.from(err, "FILE_UNREADABLE");
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const key = randomBytes(32);
    try {
      writeFileSync(file, key.toString("hex") + "\n", { mode: 0o600, flag: "wx" });
    } catch (e) {
      if (isErrnoException(e, "EEXIST")) return loadMasterKey(file); // another process made it first
      throw e;
    }
    return key;
  }
}

export class KeyStore {
  private readonly dir: string;
  private readonly kek: Buffer;

  constructor(stateDir: string, masterKey: Buffer) {
    if (masterKey.length !== 32) throw new AirlockError("INTERNAL", "broker master key must be 32 bytes");
    this.dir = path.join(stateDir, "keys");
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    // A purpose-bound key, so the master key itself encrypts nothing directly.
    this.kek = Buffer.from(hkdfSync("sha256", masterKey, Buffer.alloc(0), "airlock-kbs-v1 key store", 32));
  }

  private file(id: string): string {
    if (!KEY_ID.test(id)) throw policyError(`key id "${id}" must match ${KEY_ID}`);
    return path.join(this.dir, `${id}.json`);
  }

  /**
   * Registers a key with its release policy, or replaces one whose policy names the same hostData
   * (e.g. a new firewall measurement after an image rebuild). A key is never moved to another
   * hostData (room digest), nor between one and none.
   */
  put(id: string, key: Buffer, policy: KeyPolicy): void {
    const file = this.file(id);
    checkPolicy(policy, `policy for key ${id}`);
    const stored = this.read(id)?.policy;
    if (stored && stored.hostData?.toLowerCase() !== policy.hostData?.toLowerCase()) {
      const bound = stored.hostData ? `room digest ${stored.hostData.toLowerCase()}` : "any room (its policy names no host_data)";
      const asked = policy.hostData ? `room digest ${policy.hostData.toLowerCase()}` : "any room";
      throw policyError(`key ${id} is bound to ${bound}; it is not re-bound to ${asked}. A grant serves the manifest it was made for: grant the other manifest under its own key id (airlock manifest grant does), or register a new key id`);
    }
    if (key.length === 0 || key.length > MAX_KEY_BYTES) throw policyError(`key ${id}: must be 1 to ${MAX_KEY_BYTES} bytes`);
    const nonce = randomBytes(12);
    const c = createCipheriv("chacha20-poly1305", this.kek, nonce, { authTagLength: 16 });
    c.setAAD(Buffer.from(`key:${id}`), { plaintextLength: key.length });
    const ciphertext = Buffer.concat([c.update(key), c.final(), c.getAuthTag()]);
    const record: KeyFile = { id, policy, nonce: nonce.toString("base64"), ciphertext: ciphertext.toString("base64"), createdAt: new Date().toISOString() };
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, file);
  }

  /** The policy of a key, or undefined when there is no such key. */
  policy(id: string): KeyPolicy | undefined {
    return this.read(id)?.policy;
  }

  /** Decrypts a key. Only call after its policy was satisfied. */
  open(id: string): Buffer {
    const rec = this.read(id);
    if (!rec) throw new AirlockError("KEY_RELEASE", `no key "${id}"`);
    const ct = Buffer.from(rec.ciphertext, "base64");
    const d = createDecipheriv("chacha20-poly1305", this.kek, Buffer.from(rec.nonce, "base64"), { authTagLength: 16 });
    d.setAAD(Buffer.from(`key:${id}`), { plaintextLength: ct.length - 16 });
    d.setAuthTag(ct.subarray(ct.length - 16));
    try {
      return Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]);
    } catch (err) {
      throw new AirlockError("CRYPTO", `key ${id} does not decrypt: wrong broker master key, or the key file was altered`, { cause: err });
    }
  }

  list(): string[] {
    return readdirSync(this.dir)
      .filter((f) => f.endsWith(".json"))
      .map((f) => f.slice(0, -5))
      .filter((id) => KEY_ID.test(id))
      .sort();
  }

  private read(id: string): KeyFile | undefined {
    let text: string;
    try {
      text = readFileSync(this.file(id), "utf8");
    } catch (err) {
      if (isErrnoException(err, "ENOENT")) return undefined;
      throw err;
    }
    const rec = JSON.parse(text) as KeyFile;
    if (rec.id !== id) throw new AirlockError("INTERNAL", `key file for ${id} names ${rec.id}`);
    checkPolicy(rec.policy, `stored policy of key ${id}`);
    return rec;
  }
}
