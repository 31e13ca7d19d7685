// A client for a service room's API (firewall-vm/src/proxies/service/README.md) that checks what it
// talks to before it sends a byte of data: it takes the TLS key the firewall presents, fetches the
// evidence over that same connection, and proceeds only if the report verifies to a trusted root,
// its host_data is the room the caller expects, its measurement is the firewall that room pins,
// the report binds the audit key, the audit key signs this TLS key and the input recipient, and
// the TLS key is the one the connection runs on. Scoped inputs are then sealed to that recipient;
// sealed answers are opened with the caller's identity. `airlock call` is this class for people.
import { createHash, createPublicKey, randomBytes, verify, X509Certificate } from "node:crypto";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { AirlockError } from "../../../proto/src/errors.ts";
import { ReportVerifier } from "../../../proto/src/attestation/verify.ts";
import { auditKeyReportData } from "../../../proto/src/audit/index.ts";
import { decrypt, encrypt, X25519Recipient, type X25519Identity } from "../../../proto/src/age/index.ts";
import { grpcDefinition } from "../../../proto/src/grpc.ts";
import { RELEASED_KEY, REPLY_TO_KEY, scopeToWire, serviceBinding, sha256Hex, unpadAnswer, userUuid } from "../../../proto/src/service.ts";
import type { DataScope } from "../../../proto/src/manifest/schema.ts";
import { RoomEvidenceService, type GetEvidenceResponse } from "../../../proto/gen/airlock/v1/service_pb.ts";
import { EzPublicApi, type CallResponse, type GetHealthReportResponse } from "../../../proto/gen/enforcer/v1/ez_service_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { CallRequestSchema } from "../../../proto/gen/enforcer/v1/ez_service_pb.ts";

export interface ConnectOptions {
  /** host:port of the API. */
  endpoint: string;
  /** The room's digest the caller expects (hex): the report's host_data must be it. */
  digest: string;
  /** ARKs to trust besides AMD's (the emulated PSP's test ARK for emulated rooms). */
  trustRoots?: (string | Buffer)[];
  /** Plaintext API (a room with api.tls false): the evidence is checked, nothing pins the connection. */
  plaintext?: boolean;
  timeoutMs?: number;
}

export interface VerifiedRoom {
  digest: string;
  measurement: string;
  tee: string;
  apiTlsSpkiSha256: string;
  inputRecipient: string;
  amdRoot: boolean;
}

export interface CallOptions {
  /** The input's scope (default PUBLIC: sent in clear as public_input; otherwise sealed to the room). */
  scope?: DataScope;
  /** The caller's age identity: its recipient is the reply key (and the owner of USER_PRIVATE input). */
  identity?: X25519Identity;
  sessionId?: bigint;
  clientUuid?: Buffer;
}

export interface CallResult {
  /** The answer in clear: the public output, or the sealed one opened with the caller's identity. */
  output?: Buffer;
  /** How it left: "public", "user" (sealed to the caller) or "room" (sealed to the room: not for the caller). */
  released: string;
  /** The sealed answer as it came, when it was not opened. */
  sealed?: Buffer;
}

type Unary<Req, Res> = (req: Req, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void;

function refused(why: string): AirlockError {
  return new AirlockError("REPORT_REJECTED", `the service room's evidence does not check out: ${why}; nothing was sent`);
}

/** The TLS certificate the endpoint presents (taken without trusting it: the evidence decides). */
function presentedCertificate(host: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host, port, rejectUnauthorized: false, ALPNProtocols: ["h2"], servername: "localhost" }, () => {
      const raw = s.getPeerCertificate().raw;
      s.destroy();
      if (!raw) return reject(new AirlockError("REPORT_REJECTED", `${host}:${port} presented no TLS certificate`));
      resolve(new X509Certificate(raw).toString());
    });
    s.setTimeout(timeoutMs, () => (s.destroy(), reject(new AirlockError("TIMEOUT", `no TLS handshake with ${host}:${port} within ${timeoutMs} ms`))));
    s.once("error", (err) => reject(new AirlockError("LISTEN", `cannot reach the service API at ${host}:${port}: ${err.message}`, { hint: "check the endpoint (`airlock status` shows it) and that the pair is up" })));
  });
}

export class RoomClient {
  /** This client's UUID and session (EZ's SessionMetadata), unless a call names others. */
  readonly clientUuid = randomBytes(16);
  readonly sessionId = randomBytes(8).readBigUInt64BE();

  private constructor(
    private readonly api: grpc.Client,
    readonly room: VerifiedRoom,
    private readonly timeoutMs: number,
    /** The API's certificate (PEM), now that the evidence binds its key; absent over plaintext. */
    readonly certificatePem: string | undefined,
  ) {}

  /** Connects and verifies the evidence; throws REPORT_REJECTED (nothing sent) when anything differs. */
  static async connect(o: ConnectOptions): Promise<RoomClient> {
    const timeoutMs = o.timeoutMs ?? 30_000;
    const m = /^([^:]+):(\d{1,5})$/.exec(o.endpoint);
    if (!m) throw new AirlockError("LISTEN", `endpoint ${JSON.stringify(o.endpoint)}: expected HOST:PORT`);
    const [, host, port] = m as unknown as [string, string, string];
    let pinned: string | undefined;
    let certPem: string | undefined;
    let credentials: grpc.ChannelCredentials;
    if (o.plaintext) credentials = grpc.credentials.createInsecure();
    else {
      certPem = await presentedCertificate(host, Number(port), timeoutMs);
      pinned = sha256Hex(createPublicKey(certPem).export({ type: "spki", format: "der" }));
      // The channel trusts exactly that certificate, and checks on every handshake that the key is still it.
      credentials = grpc.credentials.createSsl(Buffer.from(certPem), null, null, {
        checkServerIdentity: (_host, cert) => (cert.raw && sha256Hex(createPublicKey(new X509Certificate(cert.raw).toString()).export({ type: "spki", format: "der" })) === pinned ? undefined : new Error("the API's TLS key changed")),
      });
    }
    const options = { "grpc.ssl_target_name_override": "localhost", "grpc.max_receive_message_length": 32 * 1024 * 1024 };
    const Evidence = grpc.makeGenericClientConstructor(grpcDefinition(RoomEvidenceService, "client"), "RoomEvidenceService");
    const Api = grpc.makeGenericClientConstructor(grpcDefinition(EzPublicApi, "client"), "EzPublicApi");
    const evidenceClient = new Evidence(o.endpoint, credentials, options);
    let evidence: GetEvidenceResponse;
    try {
      evidence = await unary<Record<string, never>, GetEvidenceResponse>(evidenceClient, "getEvidence", {}, timeoutMs);
    } finally {
      evidenceClient.close();
    }
    const room = checkEvidence(evidence, o, pinned);
    return new RoomClient(new Api(o.endpoint, credentials, options), room, timeoutMs, certPem);
  }

  close(): void {
    this.api.close();
  }

  /** The request for one call: PUBLIC input in clear, any other scope sealed to the room's input recipient. */
  async request(service: string, method: string, input: Buffer, o: CallOptions = {}): Promise<MessageInitShape<typeof CallRequestSchema>> {
    const scope = o.scope ?? "PUBLIC";
    const reply = o.identity?.recipient.toString();
    const params: NonNullable<MessageInitShape<typeof CallRequestSchema>["inputParams"]> = { requestMetadata: reply ? { [REPLY_TO_KEY]: Buffer.from(reply) } : {} };
    if (scope === "PUBLIC") params.publicInput = input;
    else {
      if (scope === "USER_PRIVATE" && !reply) throw new AirlockError("POLICY", "USER_PRIVATE input needs the caller's identity (its recipient owns the data and receives the answer)");
      const parts: Buffer[] = [];
      for await (const c of encrypt([input], [X25519Recipient.parse(this.room.inputRecipient)])) parts.push(Buffer.from(c));
      params.encryptedInput = [{ ciphertext: Buffer.concat(parts), scope: { staticInfo: { scopeType: scopeToWire(scope), ...(scope === "USER_PRIVATE" ? { scopeOwner: { ownerUuid: Buffer.from(userUuid(reply!), "hex") } } : {}) } } }];
    }
    return { serviceName: service, methodName: method, sessionMetadata: { sessionId: o.sessionId ?? this.sessionId, ezClientUuid: o.clientUuid ?? this.clientUuid }, inputParams: params };
  }

  /** The answer of one response, opened when it was sealed to the caller. */
  async answer(res: CallResponse, identity?: X25519Identity): Promise<CallResult> {
    const released = Buffer.from(res.responseMetadata[RELEASED_KEY] ?? new Uint8Array()).toString();
    const sealed = res.encryptedOutput[0]?.ciphertext;
    if (!sealed) return { output: Buffer.from(res.publicOutput), released };
    if (released !== "user" || !identity) return { released, sealed: Buffer.from(sealed) };
    const parts: Buffer[] = [];
    for await (const c of decrypt([sealed], [identity])) parts.push(Buffer.from(c));
    const answer = unpadAnswer(Buffer.concat(parts));
    if (!answer) throw new AirlockError("POLICY", "the service failed (details withheld: the answer's scope is above PUBLIC, and the workload's words are its data)");
    return { output: Buffer.from(answer), released };
  }

  async call(service: string, method: string, input: Buffer, o: CallOptions = {}): Promise<CallResult> {
    const res = await unary<MessageInitShape<typeof CallRequestSchema>, CallResponse>(this.api, "call", await this.request(service, method, input, o), this.timeoutMs);
    return this.answer(res, o.identity);
  }

  /** A stream of calls to one instance: each input in order, each answer in order. */
  async stream(service: string, method: string, inputs: { input: Buffer; options?: CallOptions }[]): Promise<CallResult[]> {
    const call = (this.api as unknown as { streamCall: (opts: grpc.CallOptions) => grpc.ClientDuplexStream<unknown, CallResponse> }).streamCall({ deadline: Date.now() + this.timeoutMs });
    const out: CallResult[] = [];
    const done = new Promise<void>((resolve, reject) => {
      let chain = Promise.resolve();
      call.on("data", (res: CallResponse) => {
        const i = out.length;
        chain = chain.then(async () => void (out[i] = await this.answer(res, inputs[i]?.options?.identity)));
      });
      call.on("error", reject);
      call.on("end", () => void chain.then(resolve, reject));
    });
    for (const { input, options } of inputs) call.write(await this.request(service, method, input, options));
    call.end();
    await done;
    return out;
  }

  health(): Promise<GetHealthReportResponse> {
    return unary<Record<string, never>, GetHealthReportResponse>(this.api, "getHealthReport", {}, this.timeoutMs);
  }
}

function unary<Req, Res>(client: grpc.Client, name: string, req: Req, timeoutMs: number): Promise<Res> {
  const fn = (client as unknown as Record<string, Unary<Req, Res>>)[name]!.bind(client);
  return new Promise((resolve, reject) =>
    fn(req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(new AirlockError(err.code === grpc.status.UNAVAILABLE ? "LISTEN" : "POLICY", `${name}: ${err.details || err.message} (gRPC status ${grpc.status[err.code] ?? err.code})`, { cause: err })) : resolve(res!))),
  );
}

/** Every check of the evidence, against what the caller expects and the key the connection runs on. */
export function checkEvidence(e: GetEvidenceResponse, o: Pick<ConnectOptions, "digest" | "trustRoots">, presentedSpki: string | undefined): VerifiedRoom {
  const digest = createHash("sha256").update(e.roomCanonicalJson).digest("hex");
  if (digest !== o.digest.toLowerCase()) throw refused(`it serves room ${digest}, not the expected ${o.digest}`);
  let pins: { firewall?: unknown };
  try {
    pins = (JSON.parse(Buffer.from(e.roomCanonicalJson).toString("utf8")) as { attestation?: { firewall?: unknown } }).attestation ?? {};
  } catch {
    throw refused("its room is not JSON");
  }
  if (typeof pins.firewall !== "string" || !/^[0-9a-f]{96}$/.test(pins.firewall)) throw refused("its room pins no firewall measurement");
  const auditSpki = Buffer.from(e.auditKeySpki);
  const verified = new ReportVerifier(o.trustRoots?.length ? { trustRoots: o.trustRoots } : {}).verify(
    { report: Buffer.from(e.report), vcek: Buffer.from(e.vcek), ...(e.chain ? { chain: e.chain } : {}) },
    { hostData: Buffer.from(digest, "hex"), measurement: Buffer.from(pins.firewall, "hex"), reportData: auditKeyReportData(auditSpki) },
  );
  if (!verified.ok) throw refused(`the attestation report fails its ${verified.failed?.check} check (${verified.failed?.reason})`);
  let key;
  try {
    key = createPublicKey({ key: auditSpki, format: "der", type: "spki" });
  } catch {
    throw refused("its audit key is not a public key");
  }
  if (!verify(null, serviceBinding(digest, e.apiTlsSpkiSha256, e.inputRecipient), key, Buffer.from(e.binding))) throw refused("the audit key did not sign this TLS key and input recipient");
  if (presentedSpki !== undefined && presentedSpki !== e.apiTlsSpkiSha256) throw refused("the TLS key this connection runs on is not the one the firewall's report binds (someone else terminates the connection)");
  return { digest, measurement: pins.firewall, tee: e.tee, apiTlsSpkiSha256: e.apiTlsSpkiSha256, inputRecipient: e.inputRecipient, amdRoot: verified.amdRoot };
}
