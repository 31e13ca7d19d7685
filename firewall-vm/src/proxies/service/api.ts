// The service room's public API on the firewall's NIC (README.md): enforcer.v1.EzPublicApi, wire-
// compatible with Encrypted Zone's (proto/enforcer/v1/), and airlock.v1.RoomEvidenceService on the
// same port, over TLS with the key the evidence binds (or plaintext when the room says so). Each
// request is decoded here and checked against its declaration (wire.ts) before calls.ts sees it.
import * as grpc from "@grpc/grpc-js";
import { AirlockError } from "../../../../proto/src/errors.ts";
import type { Logger } from "../../../../proto/src/log.ts";
import { decodeMessage } from "../../../../proto/src/wire.ts";
import { grpcDefinition } from "../../../../proto/src/grpc.ts";
import { RELEASED_KEY, scopeToWire } from "../../../../proto/src/service.ts";
import { CallRequestSchema, EzPublicApi, type CallRequest, type CallResponse, type CallResponseSchema, type GetHealthReportResponse, type GetHealthReportResponseSchema } from "../../../../proto/gen/enforcer/v1/ez_service_pb.ts";
import { RoomEvidenceService, type GetEvidenceResponse, type GetEvidenceResponseSchema } from "../../../../proto/gen/airlock/v1/service_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { CallRefused, GRPC, type CallAnswer, type ServiceCalls } from "./calls.ts";

/** Requests are bounded by the largest input a method may take, sealed (age adds ~1/4000 + 200 bytes). */
const MAX_REQUEST_BYTES = 17 * 1024 * 1024;

export interface ApiOptions {
  port: number;
  /** TLS key and certificate (PEM); absent: plaintext. */
  tls?: { keyPem: string; certPem: string };
  calls: ServiceCalls;
  /** A stream that sends nothing this long is ended (it holds the sandbox against resets). */
  streamIdleSeconds: number;
  evidence: () => MessageInitShape<typeof GetEvidenceResponseSchema>;
  health: () => MessageInitShape<typeof GetHealthReportResponseSchema>;
  log: Logger;
}

function decodeCall(bytes: Buffer): CallRequest {
  try {
    return decodeMessage(CallRequestSchema, bytes, "the caller", "POLICY");
  } catch (err) {
    throw new CallRefused(GRPC.INVALID_ARGUMENT, AirlockError.from(err).message.slice(0, 500));
  }
}

function toResponse(req: CallRequest, a: CallAnswer): MessageInitShape<typeof CallResponseSchema> {
  return {
    ...(req.sessionMetadata ? { sessionMetadata: req.sessionMetadata } : {}),
    publicOutput: a.publicOutput ?? new Uint8Array(),
    encryptedOutput: a.sealed
      ? [{ ciphertext: a.sealed.ciphertext, scope: { staticInfo: { scopeType: scopeToWire(a.sealed.scope), ...(a.sealed.owner ? { scopeOwner: { ownerUuid: Buffer.from(a.sealed.owner, "hex") } } : {}) } } }]
      : [],
    responseMetadata: { [RELEASED_KEY]: Buffer.from(a.released) },
  };
}

function grpcError(err: unknown): grpc.ServiceError {
  const e = err instanceof CallRefused ? err : new CallRefused(GRPC.UNKNOWN, "internal error in the firewall");
  return Object.assign(new Error(e.message), { code: e.grpcCode, details: e.message, metadata: new grpc.Metadata() }) as grpc.ServiceError;
}

const sessionOf = (req: CallRequest): { session: string; client: string } => {
  const client = Buffer.from(req.sessionMetadata?.ezClientUuid ?? new Uint8Array()).toString("hex");
  return { client, session: `${client}/${req.sessionMetadata?.sessionId ?? 0n}` };
};

export async function startApi(o: ApiOptions): Promise<{ close(): Promise<void> }> {
  const server = new grpc.Server({ "grpc.max_receive_message_length": MAX_REQUEST_BYTES, "grpc.max_send_message_length": MAX_REQUEST_BYTES });
  server.addService(grpcDefinition(EzPublicApi, "server"), {
    call: (call: grpc.ServerUnaryCall<Buffer, CallResponse>, cb: grpc.sendUnaryData<unknown>) => {
      void (async () => {
        const req = decodeCall(call.request);
        const { session, client } = sessionOf(req);
        const answer = await o.calls.call(req, { service: req.serviceName, method: req.methodName, session, client }, false);
        return toResponse(req, answer);
      })().then((r) => cb(null, r), (err) => cb(grpcError(err)));
    },
    streamCall: (stream: grpc.ServerDuplexStream<Buffer, unknown>) => {
      // The first request names the method and the session; all run on the instance serving now,
      // and no reset happens while the stream is open (calls.ts).
      let first: { service: string; method: string; session: string; client: string } | undefined;
      let chain = Promise.resolve();
      o.calls.openStreams++;
      let closed = false;
      const close = (): void => {
        if (closed) return;
        closed = true;
        clearTimeout(idle);
        o.calls.openStreams--;
      };
      // A stream holds the instance (no reset meanwhile): one that goes quiet is ended.
      let idle: NodeJS.Timeout | undefined;
      const quiet = (): void => {
        clearTimeout(idle);
        idle = setTimeout(() => {
          if (closed) return;
          close();
          stream.emit("error", grpcError(new CallRefused(GRPC.DEADLINE_EXCEEDED, `the stream sent nothing for ${o.streamIdleSeconds} s: it no longer holds the sandbox`)));
        }, o.streamIdleSeconds * 1000);
      };
      quiet();
      stream.on("close", () => clearTimeout(idle));
      stream.on("data", (bytes: Buffer) => {
        quiet();
        chain = chain.then(async () => {
          if (closed) return;
          try {
            const req = decodeCall(bytes);
            first ??= { service: req.serviceName, method: req.methodName, ...sessionOf(req) };
            const answer = await o.calls.call(req, first, true);
            stream.write(toResponse(req, answer));
          } catch (err) {
            close();
            stream.emit("error", grpcError(err));
          }
        });
      });
      stream.on("end", () => void chain.then(() => (closed ? undefined : (close(), stream.end()))));
      stream.on("cancelled", close);
      stream.on("error", close);
    },
    getHealthReport: (_call: grpc.ServerUnaryCall<Buffer, GetHealthReportResponse>, cb: grpc.sendUnaryData<unknown>) => cb(null, o.health()),
  });
  server.addService(grpcDefinition(RoomEvidenceService, "server"), {
    getEvidence: (_call: grpc.ServerUnaryCall<Buffer, GetEvidenceResponse>, cb: grpc.sendUnaryData<unknown>) => cb(null, o.evidence()),
  });
  const credentials = o.tls ? grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(o.tls.keyPem), cert_chain: Buffer.from(o.tls.certPem) }], false) : grpc.ServerCredentials.createInsecure();
  await new Promise<void>((resolve, reject) => server.bindAsync(`0.0.0.0:${o.port}`, credentials, (err) => (err ? reject(err) : resolve())));
  o.log.info({ port: o.port, tls: !!o.tls }, "service API listening");
  return { close: () => new Promise((resolve) => server.tryShutdown(() => resolve())) };
}
