// The firewall's HTTP egress proxy (../README.md): each egress stream from the agent is one
// HTTP/1.1 connection, parsed by node:http (strict parser: no request smuggling through
// Content-Length and Transfer-Encoding both, no obsolete folding); each request is matched to one
// `egress:` entry and decided by rules.ts; an allowed one is sent by the firewall itself — TLS to a
// pinned endpoint (trusted), the body sealed to the room (secure), or checked in full (open) — and
// the answer is bounded, unsealed when sealed to the room (secure), and handed back, raising the
// sandbox's scope to the endpoint's. Every decision is an `egress.request` receipt in the audit
// trail. Refusals answer the workload with a status and a reason that quotes only the manifest.
import http from "node:http";
import { Transform, type Duplex } from "node:stream";
import { pipeline } from "node:stream/promises";
import { decrypt, encrypt, X25519Recipient, type AgeIdentity } from "../../../../proto/src/age/index.ts";
import { AUDIT_KINDS } from "../../../../proto/src/audit/index.ts";
import { parseEgressUrl } from "../../../../proto/src/egress.ts";
import type { DataScope, Egress } from "../../../../proto/src/manifest/schema.ts";
import type { Logger } from "../../../../proto/src/log.ts";
import { scopeRank, type ScopeTracker } from "../../policy/index.ts";
import { checkRequestBody, decideRequest, egressReceipt, matchEndpoint } from "./rules.ts";
import { send } from "./upstream.ts";
import type { PrivacyProxy } from "../proxy.ts";

export interface AuditAppend {
  append(kind: string, data: Record<string, unknown>): Promise<unknown>;
}

export interface HttpEgressOptions {
  entries: Egress[];
  scope: ScopeTracker;
  audit: AuditAppend;
  log: Logger;
  /** The room's recipient (secure mode seals request bodies to it) and identity (unseals answers). */
  roomRecipient?: string;
  roomIdentity?: AgeIdentity;
  /** Where the firewall reaches entry i (its NIC's forwarding address; tests: a loopback server). */
  upstream(index: number): { host: string; port: number };
  /** Bound on each upstream exchange. */
  timeoutMs?: number;
  /**
   * A refusal while the sandbox is above DOMAIN_OWNED: the workload chose to make it, so its count
   * and time would be a signal; it is counted (capped, written after the run), not recorded live.
   */
  countRefused?: () => void;
}

/** What the workload gets back when a request is refused: a status and a reason from the manifest. */
function refuse(res: http.ServerResponse, status: number, reason: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = Buffer.from(`airlock egress: ${reason}\n`);
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": body.length, connection: "close", "x-airlock-refused": "1" });
  res.end(body);
}

const AGE_MAGIC = Buffer.from("age-encryption.org/v1\n");

export class HttpEgressProxy implements PrivacyProxy {
  readonly surfaces = "HTTP/1.1 on the sandbox's loopback (HTTP_PROXY=http://127.0.0.1:3128) and each egress endpoint's host name, while the workload runs";
  private readonly server: http.Server;
  private stopped = false;

  constructor(private readonly options: HttpEgressOptions) {
    this.server = http.createServer({ maxHeaderSize: 16 * 1024, requestTimeout: 60_000, headersTimeout: 20_000, keepAliveTimeout: 5_000 }, (req, res) => {
      this.serve(req, res).catch((err: unknown) => {
        options.log.warn({ err: (err as Error).message }, "egress request failed");
        refuse(res, 502, "the endpoint could not be reached");
      });
    });
    // A client that half-closes after its request (nc does) still gets its answer: node:http would
    // otherwise end the connection at the client's end (an undocumented but long-standing switch).
    (this.server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    // TLS from the sandbox is never relayed: the firewall must see what leaves.
    this.server.on("connect", (_req, socket: Duplex) => {
      void this.receipt({ endpoint: null, method: "CONNECT", decision: "refuse", scopeBefore: options.scope.current, scopeAfter: options.scope.current, reason: "CONNECT (TLS from the sandbox) is never relayed: use http:// URLs, the firewall is the TLS" });
      socket.end("HTTP/1.1 405 Method Not Allowed\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nairlock egress: CONNECT is never relayed (use http:// URLs; the firewall is the TLS)\n");
    });
    this.server.on("upgrade", (_req, socket: Duplex) => socket.end("HTTP/1.1 405 Method Not Allowed\r\nconnection: close\r\n\r\n"));
    this.server.on("clientError", (_err, socket: Duplex) => {
      void this.receipt({ endpoint: null, method: "", decision: "refuse", scopeBefore: options.scope.current, scopeAfter: options.scope.current, reason: "a request HTTP/1.1 does not allow (malformed, smuggled framing or oversized headers)" });
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
      else socket.destroy();
    });
  }

  /** One egress stream from the agent: an HTTP connection. `port` is the sandbox port it reached. */
  handle(stream: Duplex, port: number): void {
    if (this.stopped) {
      stream.destroy();
      return;
    }
    (stream as Duplex & { sandboxPort?: number }).sandboxPort = port;
    this.server.emit("connection", stream);
  }

  stop(): void {
    this.stopped = true;
    this.server.closeAllConnections();
  }

  private async receipt(r: Parameters<typeof egressReceipt>[0]): Promise<void> {
    if (r.decision === "refuse" && scopeRank(r.scopeBefore ?? "SEALED") > scopeRank("DOMAIN_OWNED")) {
      this.options.countRefused?.();
      return;
    }
    await this.options.audit.append(AUDIT_KINDS.egressRequest, egressReceipt(r));
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const { options } = this;
    const scopeBefore = options.scope.current;
    const method = req.method ?? "";
    // The target: an absolute URI (through HTTP_PROXY) or the Host header (through /etc/hosts).
    const target = requestTarget(req);
    const index = target ? matchIndex(options.entries, target) : -1;
    const entry = index >= 0 ? options.entries[index]! : null;
    const done = (decision: "allow" | "refuse", reason: string, extra: { path?: string; bytesOut?: number; bytesIn?: number; status?: number } = {}) =>
      this.receipt({ endpoint: entry?.name ?? null, method, decision, reason, scopeBefore, scopeAfter: options.scope.current, ...extra });
    if (!target || !entry) {
      await done("refuse", "no egress entry of the manifest names this destination");
      refuse(res, 403, "no egress entry of the manifest names this destination");
      return;
    }
    const bodyLength: number | "chunked" | undefined = req.headers["transfer-encoding"] ? "chunked" : req.headers["content-length"] !== undefined ? Number(req.headers["content-length"]) : undefined;
    const pairs: [string, string][] = [];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) pairs.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
    const decision = decideRequest(entry, { method, path: target.path, headers: pairs, ...(bodyLength !== undefined ? { bodyLength } : {}) }, options.scope.current);
    if (!decision.allow) {
      await done("refuse", decision.reason, { path: target.path });
      refuse(res, decision.status, decision.reason);
      return;
    }
    const limit = entry.rules.maxRequestBytes;
    // The body: bounded before it is buffered; open mode checks it whole, the others stream it.
    let body: AsyncIterable<Buffer> = boundedBody(req, limit);
    let bytesOut = 0;
    if (entry.mode === "open") {
      let whole: Buffer;
      try {
        whole = await collect(body);
      } catch {
        await done("refuse", `the request body is over the endpoint's limit (${limit} bytes)`, { path: target.path });
        refuse(res, 413, `the request body is over the endpoint's limit (${limit} bytes)`);
        return;
      }
      const why = checkRequestBody(entry, whole, target.path);
      if (why) {
        await done("refuse", why, { path: target.path });
        refuse(res, 403, why);
        return;
      }
      body = (async function* () {
        if (whole.length) yield whole;
      })();
    } else if (entry.mode === "secure") {
      if (!options.roomRecipient) {
        await done("refuse", "secure egress needs the room's identity, which the key broker did not release");
        refuse(res, 403, "secure egress needs the room's identity, which the key broker did not release");
        return;
      }
      body = encrypt(body, [X25519Recipient.parse(options.roomRecipient)]);
    }
    const url = parseEgressUrl(entry.url);
    const upstream = options.upstream(index);
    const headers: Record<string, string | string[]> = { host: url.port === (url.scheme === "https" ? 443 : 80) ? url.host : `${url.host}:${url.port}` };
    for (const [k, v] of decision.headers) {
      const had = headers[k];
      headers[k] = had === undefined ? v : [...(Array.isArray(had) ? had : [had]), v];
    }
    if (entry.mode === "secure") headers["content-type"] = "application/age";
    const counted = (async function* () {
      for await (const c of body) {
        bytesOut += c.length;
        yield c;
      }
    })();
    const hasBody = bodyLength !== undefined || entry.mode === "secure";
    let upstreamRes: http.IncomingMessage;
    try {
      upstreamRes = await send(url.scheme, { host: upstream.host, port: upstream.port, servername: url.host, method, path: decision.path, headers: { ...headers, ...(hasBody ? { "transfer-encoding": "chunked" } : {}) }, tls: entry.tls, timeoutMs: options.timeoutMs ?? 60_000 }, hasBody ? counted : null);
    } catch (err) {
      const e = err as Error & { code?: string };
      options.log.warn({ err: e.message, code: e.code }, "egress upstream failed");
      const reason = e.code === "PIN_MISMATCH" || /certificate|self.signed|unable to verify|altnames|CERT/i.test(`${e.code ?? ""} ${e.message}`) ? "the endpoint's certificate is not the one the manifest pins" : e.code === "BODY_LIMIT" ? `the request body is over the endpoint's limit (${limit} bytes)` : "the endpoint could not be reached";
      await done("refuse", reason, { path: target.path, bytesOut });
      refuse(res, e.code === "BODY_LIMIT" ? 413 : 502, reason);
      return;
    }
    // Reading the answer raises the sandbox's scope to the endpoint's, before a byte of it passes.
    options.scope.observe(entry.scope as DataScope, `egress ${entry.name}`);
    const max = entry.rules.maxResponseBytes;
    let bytesIn = 0;
    const limiter = new Transform({
      transform(chunk: Buffer, _enc, callback) {
        bytesIn += chunk.length;
        callback(bytesIn > max ? new LimitError("over the limit") : null, chunk);
      },
    });
    // The answer's framing is ours: its length when it is known, whole and unchanged; else chunked.
    const type = upstreamRes.headers["content-type"];
    const length = Number(upstreamRes.headers["content-length"]);
    const keepsLength = entry.mode !== "secure" && Number.isSafeInteger(length) && length <= max;
    res.writeHead(upstreamRes.statusCode ?? 502, { ...(type && entry.mode !== "secure" ? { "content-type": type } : {}), ...(keepsLength ? { "content-length": length } : { "transfer-encoding": "chunked" }) });
    try {
      if (entry.mode === "secure" && options.roomIdentity) await pipeline(upstreamRes, limiter, (source: AsyncIterable<Buffer>) => unsealIfSealed(source, options.roomIdentity!), res);
      else await pipeline(upstreamRes, limiter, res);
      await done("allow", `${entry.mode}: sent as the manifest allows`, { path: target.path, bytesOut, bytesIn, status: upstreamRes.statusCode ?? 0 });
    } catch (err) {
      const reason = err instanceof LimitError ? `the answer is over the endpoint's limit (${max} bytes): cut` : "the answer could not be read or unsealed: cut";
      await done("refuse", reason, { path: target.path, bytesOut, bytesIn });
      res.destroy();
    }
  }
}

/** The request's destination: host, the sandbox port it used, and the path (with its query). */
function requestTarget(req: http.IncomingMessage): { host: string; port: number; path: string } | null {
  const raw = req.url ?? "";
  const sandboxPortOf = (req.socket as unknown as { sandboxPort?: number }).sandboxPort ?? 80;
  try {
    if (/^[a-z]+:\/\//i.test(raw)) {
      const u = new URL(raw);
      if (u.protocol !== "http:" || u.username || u.password) return null;
      return { host: u.hostname.toLowerCase(), port: Number(u.port || 80), path: `${u.pathname}${u.search}` };
    }
    const hostHeader = req.headers.host;
    if (!raw.startsWith("/") || !hostHeader) return null;
    const u = new URL(`http://${hostHeader}`);
    return { host: u.hostname.toLowerCase(), port: Number(u.port || sandboxPortOf), path: raw };
  } catch {
    return null;
  }
}

/** The index of the entry a target names (rules.ts matchEndpoint: host, sandbox port, longest prefix). */
function matchIndex(entries: Egress[], target: { host: string; port: number; path: string }): number {
  const hit = matchEndpoint(entries, target);
  return hit ? entries.indexOf(hit) : -1;
}

class LimitError extends Error {
  readonly code = "BODY_LIMIT";
}

async function* boundedBody(source: AsyncIterable<Buffer>, max: number): AsyncGenerator<Buffer> {
  let n = 0;
  for await (const c of source) {
    n += c.length;
    if (n > max) throw new LimitError("over the limit");
    yield c;
  }
}

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of source) parts.push(c);
  return Buffer.concat(parts);
}

/** Secure mode: an answer sealed with age (to the room) is opened; any other passes as it is. */
async function* unsealIfSealed(source: AsyncIterable<Buffer>, identity: AgeIdentity): AsyncGenerator<Buffer> {
  const it = source[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  const buffered: Buffer[] = [];
  while (head.length < AGE_MAGIC.length) {
    const r = await it.next();
    if (r.done) break;
    buffered.push(r.value);
    head = Buffer.concat([head, r.value]);
  }
  const rest = (async function* () {
    yield* buffered;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  })();
  if (head.subarray(0, AGE_MAGIC.length).equals(AGE_MAGIC)) yield* decrypt(rest, [identity]);
  else yield* rest;
}

