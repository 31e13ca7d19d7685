// Each call to the room's service, decided in the firewall (README.md): the method must be one the
// manifest lists; the inputs are decrypted here and raise the sandbox's data (policy.ts) before a
// byte reaches the workload; the answer leaves as that data allows (in clear, sealed to the
// caller, sealed to the room) or not at all; a room with `reset` restarts its sandbox rather than
// refuse. Every call is one `service.call` record in the trail; what the host may count (calls
// served, refused, resets) it gets as ServiceStats. The workload's own words (an error, a status)
// reach a caller only while the sandbox is PUBLIC.
import { AirlockError } from "../../../../proto/src/errors.ts";
import type { Logger } from "../../../../proto/src/log.ts";
import { decrypt, encrypt, X25519Recipient, type AgeIdentity } from "../../../../proto/src/age/index.ts";
import type { DataScope, Service, ServiceMethod } from "../../../../proto/src/manifest/schema.ts";
import { MAX_EGRESS_STREAMS } from "../../../../proto/src/egress-mux.ts";
import { padAnswer, RELEASED_KEY, REPLY_TO_KEY, scopeFromWire, userUuid } from "../../../../proto/src/service.ts";
import type { CallRequest } from "../../../../proto/gen/enforcer/v1/ez_service_pb.ts";
import { afterCall, FRESH, releaseFor, type CallInput, type Release, type SandboxData } from "./policy.ts";
import { callWorkload } from "./upstream.ts";
import type { SandboxInstance } from "./sandbox.ts";
import type { AuditAppend } from "../http/proxy.ts";

/** The gRPC status a refusal carries (grpc-js's numbers). */
export const GRPC = { INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, UNAVAILABLE: 14, UNKNOWN: 2 } as const;

export class CallRefused extends Error {
  constructor(
    readonly grpcCode: number,
    message: string,
  ) {
    super(message);
  }
}

export interface CallAnswer {
  publicOutput?: Buffer;
  sealed?: { ciphertext: Buffer; scope: DataScope; owner?: string };
  released: "public" | "user" | "room";
}

export interface ServiceCallsOptions {
  service: Service;
  /** Decrypts EncryptedField.ciphertext (its recipient is published with the evidence). */
  inputIdentity: AgeIdentity;
  /** The room's own recipient (answers above USER_PRIVATE), when the key broker released it. */
  roomRecipient?: string;
  audit: AuditAppend;
  log: Logger;
  /** The instance serving now (after a reset, the new one). */
  instance: () => SandboxInstance;
  /** Restarts the sandbox from its measured image; resolves when the new one serves. */
  reset: (reason: string) => Promise<void>;
  /** The counts changed (for the host's ServiceStats). */
  onStats: (s: { served: number; refused: number; resets: number }) => void;
}

/** A call's session, for `reset: session` and stream stickiness: the client and its session id. */
type SessionKey = string;

export class ServiceCalls {
  data: SandboxData = FRESH;
  /** The session whose data the sandbox holds (reset: session). */
  private holder: SessionKey | undefined;
  readonly stats = { served: 0, refused: 0, resets: 0 };
  private inFlight = 0;
  private queue: (() => void)[] = [];
  /** Streams open on the current instance: no reset while one is (they are sticky). */
  openStreams = 0;
  /** Decisions and scope changes happen one at a time (a reset waits for calls in flight). */
  private gate: Promise<void> = Promise.resolve();

  constructor(private readonly o: ServiceCallsOptions) {}

  method(service: string, method: string): ServiceMethod {
    const m = this.o.service.methods.find((x) => x.service === service && x.method === method);
    if (!m) throw new CallRefused(GRPC.PERMISSION_DENIED, `the room does not allow ${service.slice(0, 200)}/${method.slice(0, 128)}`);
    return m;
  }

  /**
   * One call (unary, or one message of a stream with `sticky` set), and its one record. A call the
   * firewall refuses never reaches the sandbox (counted refused); one that reached it is counted
   * served whatever the workload answered, and above PUBLIC its record does not say whether the
   * workload answered or failed: that is the sandbox's data.
   */
  async call(req: CallRequest, first: { service: string; method: string; session: SessionKey; client: string }, sticky: boolean): Promise<CallAnswer> {
    const record = { service: first.service.slice(0, 200), method: first.method.slice(0, 128), caller: first.client, stream: sticky };
    const before = this.data.scope;
    let admitted: { method: ServiceMethod; body: Buffer; release: Release; inputBytes: number };
    try {
      const method = this.method(first.service, first.method);
      const params = req.inputParams;
      const { body, inputs, inputBytes } = await this.inputs(params, method);
      const replyTo = this.replyTo(params?.requestMetadata);
      // Decided before anything reaches the sandbox; reset first if the room allows it and it helps.
      const { release } = await this.admit(inputs, replyTo, first.session, sticky);
      admitted = { method, body, release, inputBytes };
    } catch (err) {
      const refused = err instanceof CallRefused ? err : new CallRefused(GRPC.UNAVAILABLE, AirlockError.from(err).message.slice(0, 300));
      this.stats.refused++;
      this.o.onStats({ ...this.stats });
      await this.o.audit.append("service.call", { ...record, scopeBefore: before, scopeAfter: this.data.scope, decision: "refused", reason: refused.message.slice(0, 300) }).catch(() => undefined);
      throw refused;
    }
    const { method, body, release, inputBytes } = admitted;
    const generation = this.o.instance().generation;
    let failure: CallRefused | undefined;
    let answer: CallAnswer | undefined;
    try {
      answer = await this.forward(method, first, body, release);
    } catch (err) {
      failure = err instanceof CallRefused ? err : new CallRefused(GRPC.UNKNOWN, "the service failed");
    }
    this.stats.served++;
    this.o.onStats({ ...this.stats });
    const clear = this.data.scope === "PUBLIC";
    await this.o.audit.append("service.call", {
      ...record,
      inputBytes,
      scopeBefore: before,
      scopeAfter: this.data.scope,
      decision: release.to,
      generation,
      // The answer's size: exact in clear (PUBLIC), else the padded ciphertext's, which the host sees anyway.
      ...(clear ? { outcome: failure ? "failed" : "answered", ...(failure ? { reason: failure.message.slice(0, 300) } : { outputBytes: answer!.publicOutput?.length ?? 0 }) } : { outcome: "completed", ...(answer?.sealed ? { sealedBytes: answer.sealed.ciphertext.length } : {}) }),
    });
    if (failure) throw failure;
    return answer!;
  }

  private replyTo(meta: { [k: string]: Uint8Array } | undefined): string | undefined {
    const raw = meta?.[REPLY_TO_KEY];
    if (!raw) return undefined;
    const text = Buffer.from(raw).toString("utf8");
    try {
      X25519Recipient.parse(text, REPLY_TO_KEY);
    } catch {
      throw new CallRefused(GRPC.INVALID_ARGUMENT, `request_metadata ${REPLY_TO_KEY} must be an age X25519 recipient (age1…)`);
    }
    return text;
  }

  /** The call's one input (public or decrypted) and the scopes it carries in. */
  private async inputs(params: CallRequest["inputParams"], method: ServiceMethod): Promise<{ body: Buffer; inputs: CallInput[]; inputBytes: number }> {
    const pub = Buffer.from(params?.publicInput ?? new Uint8Array());
    const enc = params?.encryptedInput ?? [];
    if (pub.length > 0 && enc.length > 0) throw new CallRefused(GRPC.INVALID_ARGUMENT, "a call carries one input: public_input or one encrypted_input, not both");
    if (enc.length > 1) throw new CallRefused(GRPC.INVALID_ARGUMENT, "a call carries one input: at most one encrypted_input");
    if (enc.length === 0) {
      if (pub.length > method.maxRequestBytes) throw new CallRefused(GRPC.RESOURCE_EXHAUSTED, `the input is over the method's bound (${method.maxRequestBytes} bytes)`);
      return { body: pub, inputs: [{ scope: "PUBLIC" }], inputBytes: pub.length };
    }
    const field = enc[0]!;
    const info = field.scope?.staticInfo;
    const scope = info ? scopeFromWire(info.scopeType) : undefined;
    if (!scope) throw new CallRefused(GRPC.INVALID_ARGUMENT, "encrypted_input[0].scope.static_info.scope_type must name a data scope");
    let owner: string | undefined;
    if (scope === "USER_PRIVATE") {
      const uuid = info?.scopeOwner?.ownerUuid;
      if (!uuid || uuid.length !== 16) throw new CallRefused(GRPC.INVALID_ARGUMENT, "USER_PRIVATE input must name its owner (scope_owner.owner_uuid, 16 bytes)");
      owner = Buffer.from(uuid).toString("hex");
    }
    const parts: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of decrypt([field.ciphertext], [this.o.inputIdentity])) {
        size += chunk.length;
        if (size > method.maxRequestBytes) throw new CallRefused(GRPC.RESOURCE_EXHAUSTED, `the input is over the method's bound (${method.maxRequestBytes} bytes)`);
        parts.push(Buffer.from(chunk));
      }
    } catch (err) {
      if (err instanceof CallRefused) throw err;
      throw new CallRefused(GRPC.INVALID_ARGUMENT, "encrypted_input[0] does not decrypt with the room's input key (encrypt it to the input_recipient of GetEvidence)");
    }
    return { body: Buffer.concat(parts), inputs: [{ scope, ...(owner ? { owner } : {}) }], inputBytes: field.ciphertext.length };
  }

  /** Raises the sandbox's data for the call, resetting first when the room says so; returns how the answer leaves. */
  private admit(inputs: CallInput[], replyTo: string | undefined, session: SessionKey, sticky: boolean): Promise<{ release: Release }> {
    const run = async (): Promise<{ release: Release }> => {
      const roomKey = this.o.roomRecipient !== undefined;
      let after = afterCall(this.data, inputs);
      let release = releaseFor(after, replyTo, roomKey);
      const policy = this.o.service.reset;
      const otherSession = this.holder !== undefined && this.holder !== session && this.data.scope !== "PUBLIC";
      // A conflict: this sandbox's data would keep the answer from the caller (refused, or sealed to
      // the room) where a fresh sandbox would give it to them (in clear, or sealed to them).
      const readable = (r: Release): boolean => r.to === "public" || r.to === "user";
      const conflict = !readable(release) && readable(releaseFor(afterCall(FRESH, inputs), replyTo, roomKey));
      const wantReset = (policy === "session" && otherSession) || (policy !== "never" && conflict);
      if (wantReset) {
        if (sticky || this.openStreams > 0) throw new CallRefused(GRPC.FAILED_PRECONDITION, "the sandbox would have to be reset, but a stream holds it (streams stay on one instance)");
        await this.drain();
        await this.o.reset(conflict ? "a call whose answer the sandbox's data would keep from its caller" : "a call from another session");
        this.stats.resets++;
        this.data = FRESH;
        this.holder = undefined;
        after = afterCall(this.data, inputs);
        release = releaseFor(after, replyTo, roomKey);
      }
      if (release.to === "refused") throw new CallRefused(GRPC.FAILED_PRECONDITION, release.reason);
      if (this.o.instance().broken) throw new CallRefused(GRPC.UNAVAILABLE, "the service is not running");
      if (this.inFlight >= MAX_EGRESS_STREAMS) throw new CallRefused(GRPC.RESOURCE_EXHAUSTED, `${MAX_EGRESS_STREAMS} calls are in flight already; retry`);
      // The data goes in: the scope rises now, whatever the workload answers.
      this.data = after;
      if (after.scope !== "PUBLIC") this.holder = session;
      this.inFlight++;
      return { release };
    };
    const next = this.gate.then(run);
    this.gate = next.then(() => undefined, () => undefined);
    return next;
  }

  /** Waits until no call is in flight. */
  private async drain(): Promise<void> {
    while (this.inFlight > 0) await new Promise<void>((r) => this.queue.push(r));
  }

  private done(): void {
    this.inFlight--;
    if (this.inFlight === 0) for (const r of this.queue.splice(0)) r();
  }

  private async forward(method: ServiceMethod, first: { service: string; method: string }, body: Buffer, release: Release): Promise<CallAnswer> {
    try {
      const instance = this.o.instance();
      const result = await callWorkload({ protocol: this.o.service.protocol, service: first.service, method: first.method, body, maxResponseBytes: method.maxResponseBytes, timeoutMs: this.o.service.callTimeoutSeconds * 1000, connect: () => instance.connect() });
      const clear = this.data.scope === "PUBLIC";
      if (!result.ok) {
        if (clear) {
          const code = result.status === "timeout" ? GRPC.DEADLINE_EXCEEDED : result.tooLarge ? GRPC.RESOURCE_EXHAUSTED : GRPC.UNKNOWN;
          throw new CallRefused(code, `the service failed: ${result.status}`);
        }
        // Above PUBLIC the workload's status is its data: the failure is sealed like an answer
        // (same shape, the smallest bucket), so only the caller who can open it learns it failed.
        return await this.seal(null, release, method.maxResponseBytes);
      }
      return await this.seal(result.body, release, method.maxResponseBytes);
    } finally {
      this.done();
    }
  }

  /** The answer as `release` says; `body` null: the workload failed (sealed, above PUBLIC only). */
  private async seal(body: Buffer | null, release: Release, max: number): Promise<CallAnswer> {
    if (release.to === "public") {
      if (!body) throw new CallRefused(GRPC.UNKNOWN, "the service failed");
      return { publicOutput: body, released: "public" };
    }
    if (release.to === "refused") throw new CallRefused(GRPC.FAILED_PRECONDITION, release.reason);
    const recipient = release.to === "user" ? release.recipient : this.o.roomRecipient!;
    const parts: Buffer[] = [];
    for await (const c of encrypt([padAnswer(body, max)], [X25519Recipient.parse(recipient)])) parts.push(Buffer.from(c));
    const owner = release.to === "user" ? userUuid(recipient) : undefined;
    return { sealed: { ciphertext: Buffer.concat(parts), scope: this.data.scope, ...(owner ? { owner } : {}) }, released: release.to };
  }
}

export { RELEASED_KEY };
