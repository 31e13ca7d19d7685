// The key broker's client, run by the firewall VM: get a nonce, make a fresh X25519 key pair,
// attest with report_data = SHA-512(nonce ‖ public key), send the evidence, unwrap the key.
// node:http only (no host-only dependencies); the endpoint is "http://host:port" or "unix:/path".
// The release must be signed by the broker identity the caller names (brokerPublicKey): the HTTP
// link itself is not trusted. The signature covers the data owner's scope, returned with the key.
import http from "node:http";
import { AirlockError } from "../errors.ts";
import type { DataScope } from "../manifest/schema.ts";
import type { KeyObject } from "node:crypto";
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import { decodeJson, encodeJson } from "../wire.ts";
import { NonceRequestSchema, NonceResponseSchema, RefusalSchema, ReleaseRequestSchema, ReleaseResponseSchema } from "../../gen/airlock/v1/kbs_pb.ts";
import { brokerKeyFrom, newX25519, releaseTranscript, reportDataFor, unwrapKey, verifyRelease } from "./kbs-wire.ts";
import type { ReportProvider } from "./provider.ts";

const MAX_RESPONSE = 1024 * 1024;

interface Reply {
  status: number;
  /** The reply's JSON text (kbs.proto's messages). */
  body: string;
}

function post<D extends DescMessage>(endpoint: string, pathname: string, schema: D, body: MessageInitShape<D>, timeoutMs: number): Promise<Reply> {
  const payload = Buffer.from(encodeJson(schema, body));
  const target: http.RequestOptions = endpoint.startsWith("unix:") ? { socketPath: endpoint.slice(5), path: pathname } : (() => {
    const u = new URL(pathname, endpoint);
    if (u.protocol !== "http:") throw new AirlockError("KEY_RELEASE", `key broker endpoint ${endpoint}: expected http://HOST:PORT or unix:PATH`);
    return { host: u.hostname.replace(/^\[|\]$/g, ""), port: u.port, path: u.pathname };
  })();
  return new Promise((resolve, reject) => {
    const req = http.request({ ...target, method: "POST", headers: { "content-type": "application/json", "content-length": payload.length }, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > MAX_RESPONSE) req.destroy(new AirlockError("KEY_RELEASE", "key broker reply is too large"));
        else chunks.push(c);
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new AirlockError("TIMEOUT", `key broker ${endpoint} did not answer within ${timeoutMs} ms`)));
    req.on("error", (err) => reject(err instanceof AirlockError ? err : new AirlockError("KEY_RELEASE", `key broker ${endpoint}: ${err.message}`, { cause: err })));
    req.end(payload);
  });
}

export interface RequestKeyOptions {
  endpoint: string;
  keyId: string;
  provider: ReportProvider;
  /**
   * The broker's Ed25519 identity (base64 SPKI DER, PEM or a KeyObject), e.g. from the room
   * manifest. Without it the release's signature is not checked and anyone on the path between VM
   * and broker could hand the VM a key of their choosing: only tests should leave it out.
   */
  brokerPublicKey: string | KeyObject | null;
  timeoutMs?: number;
}

export interface ReleasedKey {
  key: Buffer;
  /** The data owner's scope for this key, as the broker signed it (the key policy's; USER_PRIVATE by default). */
  scope: DataScope;
}

/** Attests to the broker and returns the released key and its owner's scope. Refusals throw KEY_RELEASE with the broker's reason. */
export async function requestKey(options: RequestKeyOptions): Promise<ReleasedKey> {
  const timeout = options.timeoutMs ?? 15_000;
  const n = await post(options.endpoint, "/v1/nonce", NonceRequestSchema, {}, timeout);
  if (n.status !== 200) throw new AirlockError("KEY_RELEASE", `key broker gave no nonce (HTTP ${n.status})`);
  const nonceBody = decodeJson(NonceResponseSchema, n.body, "key broker's nonce", "KEY_RELEASE");
  const nonce = Buffer.from(nonceBody.nonce, "base64");
  const pair = newX25519();
  const evidence = await options.provider.getReport(reportDataFor(nonce, pair.publicRaw));
  const r = await post(
    options.endpoint,
    `/v1/keys/${encodeURIComponent(options.keyId)}/release`,
    ReleaseRequestSchema,
    { nonce: nonceBody.nonce, publicKey: pair.publicRaw.toString("base64"), report: evidence.report.toString("base64"), vcek: evidence.vcek.toString("base64"), chain: evidence.chain ?? "" },
    timeout,
  );
  if (r.status !== 200) {
    let reason = "no reason";
    try {
      reason = decodeJson(RefusalSchema, r.body, "key broker's refusal", "KEY_RELEASE").reason.slice(0, 500);
    } catch {
      // a refusal without a readable reason is still a refusal
    }
    throw new AirlockError("KEY_RELEASE", `key broker refused key "${options.keyId}" (HTTP ${r.status}): ${reason}`);
  }
  const release = decodeJson(ReleaseResponseSchema, r.body, "key broker's release", "KEY_RELEASE");
  if (release.keyId !== options.keyId) throw new AirlockError("KEY_RELEASE", "key broker released another key than the one asked for");
  const wrapped = release.wrapped!;
  const scope = release.scope as DataScope;
  if (options.brokerPublicKey !== null) {
    const brokerKey = typeof options.brokerPublicKey === "string" ? brokerKeyFrom(options.brokerPublicKey) : options.brokerPublicKey;
    if (!verifyRelease(brokerKey, releaseTranscript(options.keyId, nonce, pair.publicRaw, wrapped, scope), release.signature)) {
      throw new AirlockError("KEY_RELEASE", "the key release is not signed by the expected key broker (wrong broker, or altered on the way)");
    }
  }
  return { key: unwrapKey(wrapped, options.keyId, nonce, pair), scope };
}
