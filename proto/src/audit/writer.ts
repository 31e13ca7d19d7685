// The audit trail writer. Appends are serialised and each one is written and fdatasync'd before
// its promise resolves: an acknowledged record survives `kill -9` or a power cut. Every
// `checkpointEvery` records, and every `checkpointIntervalMs` while records are unsigned, a signed
// checkpoint is appended; `close()` appends a signed "closed" record, which marks the log complete.
import { open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import { AirlockError, isErrnoException } from "../errors.ts";
import { silentLogger } from "../log.ts";
import type { Logger } from "../log.ts";
import { canonicalJson } from "./canonical.ts";
import type { Json } from "./canonical.ts";
import { algOf, CHECKPOINT, CLOSED, GENESIS, recordHash, serialize, signedBytes, spkiBase64 } from "./record.ts";
import type { AuditRecord, AuditSigner, SealData } from "./record.ts";

export interface AuditLogOptions {
  signer: AuditSigner;
  /** Sign a checkpoint after this many unsigned records (default 64). */
  checkpointEvery?: number;
  /** Sign a checkpoint this often while records are unsigned (default 5000 ms; 0 turns it off). */
  checkpointIntervalMs?: number;
  clock?: () => Date;
  logger?: Logger;
}

const KIND = /^[a-z][a-z0-9_.-]{0,63}$/;

export class AuditLog {
  readonly path: string;
  readonly #fh: FileHandle;
  readonly #signer: AuditSigner;
  readonly #every: number;
  readonly #clock: () => Date;
  readonly #log: Logger;
  readonly #timer: NodeJS.Timeout | null;
  #seq = 0;
  #prev = GENESIS;
  #unsigned = 0;
  #closed = false;
  #fhClosed = false;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(file: string, fh: FileHandle, opts: AuditLogOptions) {
    this.path = file;
    this.#fh = fh;
    this.#signer = opts.signer;
    this.#every = opts.checkpointEvery ?? 64;
    this.#clock = opts.clock ?? (() => new Date());
    this.#log = (opts.logger ?? silentLogger).child({ module: "audit" });
    const ms = opts.checkpointIntervalMs ?? 5000;
    this.#timer = ms > 0 ? setInterval(() => void this.#periodic(), ms).unref() : null;
  }

  /** Creates a new log (never reuses an existing file: a log is written once, by one writer). */
  static async create(file: string, opts: AuditLogOptions): Promise<AuditLog> {
    algOf(opts.signer.publicKey); // refuse an unsupported key now, not at the first checkpoint
    let fh: FileHandle;
    try {
      fh = await open(file, "wx", 0o600);
    } catch (err) {
      if (isErrnoException(err, "EEXIST")) throw new AirlockError("CONFLICT", `audit log ${file} already exists; an audit log is never reopened for writing`);
      throw AirlockError.from(err, "INTERNAL");
    }
    // The new directory entry must be durable too, or a crash could lose the whole file.
    const dir = await open(path.dirname(file), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    return new AuditLog(file, fh, opts);
  }

  /** Appends a record; resolves once it is on stable storage. */
  append(kind: string, data: Json = {}): Promise<AuditRecord> {
    if (!KIND.test(kind) || kind === CHECKPOINT || kind === CLOSED) {
      return Promise.reject(new AirlockError("INTERNAL", `bad audit record kind ${JSON.stringify(kind)}`));
    }
    try {
      canonicalJson(data); // fail before queueing, so a bad record never poisons the log
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#enqueue(async () => {
      const r = await this.#write(kind, data);
      if (this.#unsigned >= this.#every) await this.#seal(CHECKPOINT, {});
      return r;
    });
  }

  /** Appends a signed checkpoint now (if anything is unsigned). */
  checkpoint(): Promise<AuditRecord | null> {
    return this.#enqueue(async () => (this.#unsigned > 0 ? this.#seal(CHECKPOINT, {}) : null));
  }

  /** Appends the signed "closed" record and closes the file. Nothing can follow it. */
  async close(data: Record<string, Json> = {}): Promise<AuditRecord> {
    try {
      return await this.#enqueue(() => this.#seal(CLOSED, data));
    } finally {
      await this.abandon();
    }
  }

  /** Stops without a closed record (e.g. the process is going down on a fault). */
  async abandon(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#closed = true;
    if (this.#fhClosed) return;
    this.#fhClosed = true;
    await this.#queue.catch(() => {});
    await this.#fh.close();
  }

  #enqueue<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new AirlockError("INTERNAL", "the audit log is closed"));
    const p = this.#queue.then(fn);
    // A failed write poisons the log: later records would not chain to what is on disk.
    this.#queue = p.catch((err: unknown) => {
      this.#closed = true;
      this.#log.error({ err }, "audit log write failed; the log is closed");
    });
    return p;
  }

  async #periodic(): Promise<void> {
    if (this.#closed || this.#unsigned === 0) return;
    try {
      await this.checkpoint();
    } catch {
      // already logged by #enqueue
    }
  }

  async #write(kind: string, data: Json, sign = false): Promise<AuditRecord> {
    const body = { seq: this.#seq, time: this.#clock().toISOString(), kind, data, prev: this.#prev };
    const r: AuditRecord = { ...body, hash: recordHash(body) };
    if (sign) r.sig = Buffer.from(await this.#signer.sign(signedBytes(r.hash))).toString("base64");
    const line = Buffer.from(serialize(r));
    let off = 0;
    while (off < line.length) off += (await this.#fh.write(line, off)).bytesWritten;
    await this.#fh.datasync();
    this.#seq++;
    this.#prev = r.hash;
    this.#unsigned = sign ? 0 : this.#unsigned + 1;
    return r;
  }

  async #seal(kind: typeof CHECKPOINT | typeof CLOSED, extra: Record<string, Json>): Promise<AuditRecord> {
    const pub = this.#signer.publicKey;
    const data: SealData = { ...extra, alg: algOf(pub), publicKey: spkiBase64(pub), covers: this.#seq };
    return this.#write(kind, data, true);
  }
}
