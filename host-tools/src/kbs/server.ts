// The key broker: a plain HTTP service (node:http) that releases a dataset key only to a VM whose
// attestation report verifies against the policy registered with that key and whose report_data
// binds a fresh broker nonce and the VM's ephemeral X25519 key (see proto/src/attestation/kbs-wire.ts).
// Its bodies are proto/airlock/v1/kbs.proto's messages in JSON, decoded and checked by wire.ts:
//
//   GET  /v1/identity             → 200 {publicKey}: the Ed25519 key that signs releases
//   POST /v1/nonce                → 200 {nonce, expiresAt}
//   POST /v1/keys/<id>/release    → 200 {keyId, wrapped, scope, signature} | 403 {error: "KEY_RELEASE", reason} | 404 | 400
//
// `scope` is the data owner's scope from the key's policy (USER_PRIVATE when it names none); the
// signature covers it (releaseTranscript), so the firewall can hold the data to it.
//
// Nonces are random, single-use (consumed by the first release attempt, whatever its outcome) and
// expire after nonceTtlMs. Every release and refusal goes to a signed, hash-chained audit log
// (proto/src/audit) under <state>/audit/, one file per broker run; no key material is recorded.
import { createPublicKey, hkdfSync, randomBytes } from "node:crypto";
import { lstatSync, mkdirSync, unlinkSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { silentLogger } from "../../../proto/src/log.ts";
import { AuditLog, AUDIT_KINDS, signerFromPrivateKey } from "../../../proto/src/audit/index.ts";
import { parseReport } from "../../../proto/src/attestation/report.ts";
import { DEFAULT_OWNER_SCOPE, ed25519FromSeed, KBS_NONCE_BYTES, releaseTranscript, reportDataFor, signRelease, wrapKey } from "../../../proto/src/attestation/kbs-wire.ts";
import { decodeJson, encodeJson } from "../../../proto/src/wire.ts";
import { IdentityResponseSchema, NonceResponseSchema, RefusalSchema, ReleaseRequestSchema, ReleaseResponseSchema, type ReleaseRequest } from "../../../proto/gen/airlock/v1/kbs_pb.ts";
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import { ReportVerifier } from "../attestation/verify.ts";
import type { Expectations } from "../attestation/verify.ts";
import { KEY_ID, KeyStore } from "./store.ts";
import type { KeyPolicy } from "./store.ts";

export type KbsListen = { host?: string; port?: number } | { path: string };

export interface KbsOptions {
  stateDir: string;
  masterKey: Buffer;
  listen?: KbsListen;
  log?: Logger;
  /** How long a nonce stays valid (default 60 s). */
  nonceTtlMs?: number;
  /** Outstanding nonces kept at most; the oldest go first (default 10000). */
  maxNonces?: number;
}

export interface KbsHandle {
  /** "http://127.0.0.1:PORT" or "unix:/path/to.sock" (what KbsClient takes). */
  endpoint: string;
  store: KeyStore;
  auditPath: string;
  /** The broker's Ed25519 identity key (base64 SPKI DER): it signs releases and the audit log. Put it in the room manifest. */
  publicKey: string;
  close(): Promise<void>;
}

const MAX_BODY = 64 * 1024;
const RELEASE = /^\/v1\/keys\/([^/]+)\/release$/;

interface RefusalBody {
  error: "KEY_RELEASE" | "USAGE" | "NOT_FOUND" | "INTERNAL";
  reason: string;
}

class Refusal extends Error {
  readonly body: RefusalBody;
  constructor(
    readonly status: number,
    body: RefusalBody,
  ) {
    super(body.reason);
    // kbs.proto bounds a reason to 2000 bytes.
    this.body = { error: body.error, reason: body.reason.slice(0, 500) };
  }
}

function refuse(reason: string): Refusal {
  return new Refusal(403, { error: "KEY_RELEASE", reason });
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Refusal(413, { error: "USAGE", reason: `request body exceeds ${MAX_BODY} bytes` }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/** The nonce a request names, read leniently (for a request that fails its checks). */
function nonceNamedIn(body: Buffer): string {
  try {
    const v = (JSON.parse(body.toString("utf8")) as { nonce?: unknown }).nonce;
    return typeof v === "string" ? v : "";
  } catch {
    return "";
  }
}

function expectationsOf(policy: KeyPolicy, reportData: Buffer): Expectations {
  const e: Expectations = { reportData };
  if (policy.hostData) e.hostData = Buffer.from(policy.hostData, "hex");
  if (policy.product) e.product = policy.product;
  if (policy.vmpl !== undefined) e.vmpl = policy.vmpl;
  if (policy.minTcb) e.minTcb = policy.minTcb;
  if (policy.allowDebug) e.allowDebug = true;
  if (policy.forbidSmt) e.forbidSmt = true;
  if (policy.forbidMigrateMa) e.forbidMigrateMa = true;
  if (policy.requireSingleSocket) e.requireSingleSocket = true;
  return e;
}

function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(socketPath);
    const done = (alive: boolean): void => {
      s.destroy();
      resolve(alive);
    };
    s.setTimeout(1000, () => done(true)); // no answer in time: leave it alone
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

/**
 * The broker's identity key (signs releases and the audit log), derived from the master key: no
 * second secret to keep, and it stays the same across runs — so a room's manifest can pin it.
 */
function brokerIdentity(masterKey: Buffer): ReturnType<typeof ed25519FromSeed> {
  const seed = Buffer.from(hkdfSync("sha256", masterKey, Buffer.alloc(0), "airlock-kbs-v1 identity", 32));
  const identity = ed25519FromSeed(seed);
  seed.fill(0);
  return identity;
}

/** The broker's public key (base64 SPKI DER), as GET /v1/identity answers it. */
export function brokerPublicKey(masterKey: Buffer): string {
  return createPublicKey(brokerIdentity(masterKey)).export({ type: "spki", format: "der" }).toString("base64");
}

export async function startKbs(options: KbsOptions): Promise<KbsHandle> {
  const log = (options.log ?? silentLogger).child({ module: "kbs" });
  const store = new KeyStore(options.stateDir, options.masterKey);
  const ttl = options.nonceTtlMs ?? 60_000;
  const maxNonces = options.maxNonces ?? 10_000;
  const nonces = new Map<string, number>(); // base64 nonce → expiry (ms); insertion order = age
  const verifiers = new Map<string, ReportVerifier>();

  const auditDir = path.join(options.stateDir, "audit");
  mkdirSync(auditDir, { recursive: true, mode: 0o700 });
  const auditPath = path.join(auditDir, `kbs-${new Date().toISOString().replace(/[:.]/g, "-")}-${randomBytes(3).toString("hex")}.jsonl`);
  const identity = brokerIdentity(options.masterKey);
  const publicKey = createPublicKey(identity).export({ type: "spki", format: "der" }).toString("base64");
  const audit = await AuditLog.create(auditPath, { signer: signerFromPrivateKey(identity), logger: log });

  const verifierFor = (policy: KeyPolicy): ReportVerifier => {
    const k = JSON.stringify(policy.trustRoots ?? []);
    let v = verifiers.get(k);
    if (!v) {
      v = new ReportVerifier(policy.trustRoots?.length ? { trustRoots: policy.trustRoots } : {});
      verifiers.set(k, v);
    }
    return v;
  };

  const newNonce = (): MessageInitShape<typeof NonceResponseSchema> => {
    const now = Date.now();
    for (const [n, exp] of nonces) {
      if (exp > now && nonces.size < maxNonces) break;
      nonces.delete(n);
    }
    const nonce = randomBytes(KBS_NONCE_BYTES).toString("base64");
    nonces.set(nonce, now + ttl);
    return { nonce, expiresAt: new Date(now + ttl).toISOString() };
  };

  const release = async (keyId: string, body: Buffer, remote: string): Promise<MessageInitShape<typeof ReleaseResponseSchema>> => {
    let req: ReleaseRequest;
    try {
      req = decodeJson(ReleaseRequestSchema, body.toString("utf8"), "release request", "USAGE");
    } catch (err) {
      // Even a malformed request uses up the nonce it names: one attempt per nonce.
      nonces.delete(nonceNamedIn(body));
      throw new Refusal(400, { error: "USAGE", reason: AirlockError.from(err).message });
    }
    // The nonce is consumed before anything else can fail (and before any await): one attempt per nonce.
    const nonceKey = req.nonce;
    const expiry = nonces.get(nonceKey);
    nonces.delete(nonceKey);
    const facts: Record<string, string> = { keyId, remote };
    const record = async (kind: string, extra: Record<string, string>): Promise<void> => {
      await audit.append(kind, { ...facts, ...extra });
    };
    try {
      if (expiry === undefined) throw refuse("nonce unknown, already used, or from another broker run (replay?)");
      if (expiry < Date.now()) throw refuse("nonce expired: ask for a fresh one and attest again");
      const nonce = Buffer.from(nonceKey, "base64");
      // kbs.proto's bounds hold already: base64 text, a 32-byte key, bounded report and VCEK.
      const requesterKey = Buffer.from(req.publicKey, "base64");
      const report = Buffer.from(req.report, "base64");
      const vcek = Buffer.from(req.vcek, "base64");
      const policy = store.policy(keyId);
      if (!policy) throw new Refusal(404, { error: "NOT_FOUND", reason: `no key "${keyId}"` });
      try {
        const parsed = parseReport(report);
        facts.measurement = parsed.measurement.toString("hex");
        facts.reportId = parsed.reportId.toString("hex");
        facts.chipId = parsed.chipId.toString("hex").slice(0, 32);
      } catch (err) {
        throw refuse(AirlockError.from(err).message);
      }
      let result;
      try {
        result = verifierFor(policy).verify({ report, vcek, ...(req.chain ? { chain: req.chain } : {}) }, expectationsOf(policy, reportDataFor(nonce, requesterKey)));
      } catch (err) {
        throw refuse(AirlockError.from(err).message);
      }
      if (!result.ok) {
        const reason = result.failed!.check === "report-data" ? "report_data does not bind this nonce and public key (stale, replayed or relayed report)" : result.failed!.reason;
        facts.check = result.failed!.check;
        throw refuse(`${result.failed!.check}: ${reason}`);
      }
      if (!policy.measurements.some((m) => m.toLowerCase() === facts.measurement)) {
        facts.check = "measurement";
        throw refuse(`measurement: ${facts.measurement} is not one registered for key ${keyId}`);
      }
      const key = store.open(keyId);
      try {
        const scope = policy.scope ?? DEFAULT_OWNER_SCOPE;
        const wrapped = wrapKey(key, keyId, nonce, requesterKey);
        const signature = signRelease(identity, releaseTranscript(keyId, nonce, requesterKey, wrapped, scope));
        await record(AUDIT_KINDS.keyReleased, { product: result.product ?? "", amdRoot: String(result.amdRoot), ownerScope: scope, hostData: policy.hostData ?? "any room" });
        log.info({ keyId, measurement: facts.measurement, scope }, "key released");
        return { keyId, wrapped, scope, signature };
      } finally {
        key.fill(0);
      }
    } catch (err) {
      if (err instanceof Refusal) {
        await record("key.refused", { status: String(err.status), reason: err.body.reason.slice(0, 500) });
        log.warn({ keyId, reason: err.body.reason }, "key release refused");
      }
      throw err;
    }
  };

  const server = http.createServer((req, res) => {
    const send = <D extends DescMessage>(status: number, schema: D, value: MessageInitShape<D>): void => {
      const body = encodeJson(schema, value);
      res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), "cache-control": "no-store" });
      res.end(body);
    };
    const remote = req.socket.remoteAddress ?? "unix";
    void (async () => {
      try {
        const url = new URL(req.url ?? "/", "http://kbs");
        if (req.method === "GET" && url.pathname === "/v1/identity") {
          send(200, IdentityResponseSchema, { publicKey });
          return;
        }
        if (req.method === "POST" && url.pathname === "/v1/nonce") {
          await readBody(req);
          send(200, NonceResponseSchema, newNonce());
          return;
        }
        const m = RELEASE.exec(url.pathname);
        if (req.method === "POST" && m) {
          const keyId = decodeURIComponent(m[1]!);
          if (!KEY_ID.test(keyId)) throw new Refusal(400, { error: "USAGE", reason: "malformed key id" });
          send(200, ReleaseResponseSchema, await release(keyId, await readBody(req), remote));
          return;
        }
        send(404, RefusalSchema, { error: "NOT_FOUND", reason: `${String(req.method).slice(0, 16)} ${url.pathname.slice(0, 200)} is not a broker endpoint` });
      } catch (err) {
        if (err instanceof Refusal) send(err.status, RefusalSchema, err.body);
        else {
          log.error({ err: AirlockError.from(err).message }, "key broker fault");
          send(500, RefusalSchema, { error: "INTERNAL", reason: "internal fault" });
        }
      }
    })();
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 2_000;

  const listen = options.listen ?? { host: "127.0.0.1", port: 0 };
  // A socket file left by a broker that died is replaced; a live one or any other file is not touched.
  if ("path" in listen && lstatSync(listen.path, { throwIfNoEntry: false })?.isSocket() && !(await socketAnswers(listen.path))) unlinkSync(listen.path);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      if ("path" in listen) server.listen(listen.path, resolve);
      else server.listen(listen.port ?? 0, listen.host ?? "127.0.0.1", resolve);
    });
  } catch (err) {
    await audit.close({ reason: "could not listen" });
    throw AirlockError.from(err, "LISTEN");
  }
  const addr = server.address();
  const endpoint = typeof addr === "string" ? `unix:${addr}` : `http://${(addr as AddressInfo).address.includes(":") ? `[${(addr as AddressInfo).address}]` : (addr as AddressInfo).address}:${(addr as AddressInfo).port}`;
  log.info({ endpoint, auditPath, publicKey }, "key broker listening");

  return {
    endpoint,
    store,
    auditPath,
    publicKey,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await audit.close();
    },
  };
}
