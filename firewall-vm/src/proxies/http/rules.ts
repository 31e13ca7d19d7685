// The HTTP egress proxy's decisions (../README.md § The path of a request), as pure functions: which
// `egress:` entry a request names, whether its method, path, headers and framing may pass at the
// sandbox's scope, whether an open request's body meets the entry's rules, and the audit receipt.
// No I/O: proxy.ts parses, sends and records.
//
// A reason never quotes what the workload chose (no path, no header name or value, no body): it is
// built from the manifest and the rule that failed, because reasons reach the workload, the trail
// and the host in clear.
import { AirlockError } from "../../../../proto/src/errors.ts";
import { compileDenyPattern, EGRESS_METHODS, HEADER_NAME_RE, parseEgressUrl, sandboxPort, type EgressUrl } from "../../../../proto/src/egress.ts";
import type { DataScope, Egress } from "../../../../proto/src/manifest/schema.ts";
import { checkFormat, parseSchema, type Schema } from "../../policy/formats.ts";
import { MODE_CEILING, modeMayCarry, scopeRank } from "../../policy/scopes.ts";

/** The request as the proxy parsed it. */
export interface EgressRequest {
  method: string;
  /** The request target in origin form: /path[?query], as received. */
  path: string;
  /** Raw header lines as received, in order, repeats included. */
  headers: [string, string][];
  /** What the parser found: a declared length, chunked, or nothing (no body). */
  bodyLength?: number | "chunked";
}

export type RequestDecision =
  | {
      allow: true;
      /** The path to send: the checked, normalized one ("." segments and "//" removed, %2e decoded), with its query. */
      path: string;
      /** Headers to forward (lower-case names, values trimmed): only allow-listed ones; the proxy sets framing and host. */
      headers: [string, string][];
      /** The body's framing: a length (0: none) or chunked (bounded by maxRequestBytes as it streams). */
      bodyLength: number | "chunked";
    }
  | { allow: false; status: 400 | 403 | 405 | 413; reason: string };

/**
 * Headers the proxy accepts from the workload and never forwards unless allow-listed: framing and
 * identity it manages itself, and what ordinary clients send on their own (curl's Accept, urllib's
 * Accept-Encoding, every client's User-Agent), so that unmodified clients work. Dropping them keeps
 * them from carrying anything out. Also accepted and dropped: "Expect: 100-continue". Any other
 * header outside `rules.headers` is refused.
 */
const MANAGED_HEADERS = ["host", "content-length", "transfer-encoding", "connection", "proxy-connection", "keep-alive", "user-agent", "accept", "accept-encoding", "accept-language", "cache-control", "pragma"];
const MAX_HEADERS = 100;
const MAX_HEADER_VALUE = 8 * 1024;
const MAX_TARGET = 8 * 1024;
// eslint-disable-next-line no-control-regex
const BAD_VALUE_RE = /[\u0000-\u0008\u000a-\u001f\u007f]/;
const TARGET_CHARS_RE = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*$/;

const parsedUrls = new WeakMap<Egress, EgressUrl>();
function urlOf(entry: Egress): EgressUrl {
  let u = parsedUrls.get(entry);
  if (!u) {
    u = parseEgressUrl(entry.url);
    parsedUrls.set(entry, u);
  }
  return u;
}

/**
 * Normalizes a request target's path for the prefix check: "%2e" decoded to ".", runs of "/"
 * collapsed, "." segments removed. Refused: not origin-form, characters outside RFC 3986's
 * (spaces, controls, backslashes, non-ASCII), a fragment, malformed percent-encoding, an encoded
 * slash, backslash, NUL or percent sign in the path, and ".." anywhere in the path.
 */
export function normalizeRequestPath(target: string): { path: string; query: string } | { problem: string } {
  if (!target.startsWith("/")) return { problem: "the request target is not an absolute path" };
  if (target.length > MAX_TARGET) return { problem: `the request target is longer than ${MAX_TARGET} characters` };
  if (!TARGET_CHARS_RE.test(target)) return { problem: "the request target has characters a URL path does not allow (spaces, controls, backslashes, '#', non-ASCII)" };
  if (/%(?![0-9A-Fa-f]{2})/.test(target)) return { problem: "the request target has malformed percent-encoding" };
  if (/%00/.test(target)) return { problem: "the request target has an encoded NUL" };
  const q = target.indexOf("?");
  let path = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? "" : target.slice(q + 1);
  if (/%(2f|5c|25)/i.test(path)) return { problem: "the path has an encoded slash, backslash or percent sign" };
  path = path.replace(/%2e/gi, ".");
  if (path.includes("..")) return { problem: "the path has '..'" };
  path = path.replace(/\/{2,}/g, "/");
  while (path.includes("/./")) path = path.replace("/./", "/");
  if (path.endsWith("/.")) path = path.slice(0, -1);
  return { path, query };
}

/**
 * The entry a request names: same host (case-insensitive), `port` equal to the entry's port in the
 * sandbox (proto/src/egress.ts sandboxPort: 80 for https:443 and http:80), and the path under its
 * prefix; the longest prefix wins. Null when none does.
 */
export function matchEndpoint<E extends Egress>(entries: readonly E[], target: { host: string; port: number; path: string }): E | null {
  const host = target.host.toLowerCase().replace(/\.$/, "");
  const norm = normalizeRequestPath(target.path);
  const path = "problem" in norm ? target.path : norm.path;
  let best: E | null = null;
  let bestLength = -1;
  for (const e of entries) {
    const u = urlOf(e);
    if (u.host !== host || sandboxPort(e) !== target.port || !path.startsWith(u.pathPrefix)) continue;
    if (u.pathPrefix.length > bestLength) {
      best = e;
      bestLength = u.pathPrefix.length;
    }
  }
  return best;
}

/**
 * Whether a request may leave through `entry` while the sandbox is at `scope`, before its body is
 * read. Checked in this order: the mode at this scope (403), the method (405), the path (400 when
 * malformed or a traversal, 403 outside the prefix), the headers and framing (400 for smuggling,
 * 403 outside the allow-list), the declared body size (413).
 */
export function decideRequest(entry: Egress, request: EgressRequest, scope: DataScope): RequestDecision {
  const name = `egress ${entry.name}`;
  const no = (status: 400 | 403 | 405 | 413, why: string): RequestDecision => ({ allow: false, status, reason: `${name}: ${why}` });
  if (!modeMayCarry(entry.mode, scope)) {
    return { allow: false, status: 403, reason: `${name} is ${entry.mode} but the sandbox has read ${scope} data; ${entry.mode} mode carries at most ${MODE_CEILING[entry.mode]}` };
  }
  if (!(entry.methods as string[]).includes(request.method)) return no(405, `the method is not allowed (allowed: ${entry.methods.join(", ")})`);

  const norm = normalizeRequestPath(request.path);
  if ("problem" in norm) return no(400, `${norm.problem}; refused`);
  const prefix = urlOf(entry).pathPrefix;
  if (!norm.path.startsWith(prefix)) return no(403, `the path is outside the endpoint's prefix ${prefix}`);

  if (request.headers.length > MAX_HEADERS) return no(400, `more than ${MAX_HEADERS} header lines`);
  const forward: [string, string][] = [];
  let contentLength: number | undefined;
  let chunked = false;
  const seen = new Map<string, number>();
  for (const [rawName, rawValue] of request.headers) {
    if (!HEADER_NAME_RE.test(rawName)) return no(400, "a header name that is not an HTTP token (spaces, a folded line or other characters)");
    if (rawValue.length > MAX_HEADER_VALUE) return no(400, `a header value longer than ${MAX_HEADER_VALUE} characters`);
    if (BAD_VALUE_RE.test(rawValue)) return no(400, "a header value with control characters or a folded line");
    const h = rawName.toLowerCase();
    const value = rawValue.replace(/^[ \t]+|[ \t]+$/g, "");
    const count = (seen.get(h) ?? 0) + 1;
    seen.set(h, count);
    if (h === "host" || h === "content-length" || h === "transfer-encoding") {
      if (count > 1) return no(400, `a repeated ${h === "host" ? "Host" : h === "content-length" ? "Content-Length" : "Transfer-Encoding"} header`);
      if (h === "content-length") {
        if (!/^\d{1,15}$/.test(value)) return no(400, "a Content-Length that is not one decimal number");
        contentLength = Number(value);
      } else if (h === "transfer-encoding") {
        if (value.toLowerCase() !== "chunked") return no(400, "a Transfer-Encoding other than chunked");
        chunked = true;
      }
      continue;
    }
    if (entry.rules.headers.includes(h)) {
      forward.push([h, value]);
      continue;
    }
    if (MANAGED_HEADERS.includes(h)) continue;
    // curl sends it with larger bodies; node:http answers 100 Continue itself, so it need not go on.
    if (h === "expect" && value.toLowerCase() === "100-continue") continue;
    return no(403, `a header outside the allow-list (allowed: ${entry.rules.headers.length ? entry.rules.headers.join(", ") : "none"})`);
  }
  if (chunked && contentLength !== undefined) return no(400, "both Content-Length and Transfer-Encoding");
  const declared: number | "chunked" = chunked ? "chunked" : (contentLength ?? 0);
  const parsed = request.bodyLength;
  if (parsed !== undefined && parsed !== declared && !(parsed === 0 && declared === 0)) return no(400, "a body framing that does not match its headers");
  if (typeof declared === "number" && declared > entry.rules.maxRequestBytes) return no(413, `the request body is over the endpoint's limit (${entry.rules.maxRequestBytes} bytes)`);
  return { allow: true, path: norm.query ? `${norm.path}?${norm.query}` : norm.path, headers: forward, bodyLength: declared };
}

export interface CompiledEgressRules {
  schema?: Schema;
  deny: RegExp[];
}

const compiled = new WeakMap<Egress, CompiledEgressRules>();

/**
 * An open entry's schema (policy/formats.ts parseSchema: the manifest checks only that it is a JSON
 * mapping) and deny patterns, compiled once. Throws MANIFEST_INVALID for a schema outside the
 * subset: the enforcer calls it for every entry before the workload starts.
 */
export function compileEgressRules(entry: Egress): CompiledEgressRules {
  let c = compiled.get(entry);
  if (!c) {
    let deny: RegExp[];
    try {
      deny = (entry.rules.deny ?? []).map(compileDenyPattern);
    } catch (err) {
      throw new AirlockError("MANIFEST_INVALID", `egress ${entry.name}: rules.deny: ${(err as Error).message}`);
    }
    c = { deny, ...(entry.rules.schema !== undefined ? { schema: parseSchema(entry.rules.schema, `egress ${entry.name}: rules.schema`) } : {}) };
    compiled.set(entry, c);
  }
  return c;
}

function percentDecoded(s: string): string | null {
  if (!s.includes("%") && !s.includes("+")) return null;
  try {
    return decodeURIComponent(s.replace(/\+/g, " "));
  } catch {
    return null;
  }
}

/**
 * Open mode: the whole request body against the entry's format and schema (when the body is not
 * empty), then the deny patterns against the path and the body, each as sent and percent-decoded.
 * Returns null, or a reason that quotes the manifest only. Other modes: null (their bodies are not
 * inspected). Deny patterns are a tripwire against mistakes, not a guarantee: an encoded body
 * passes them.
 */
export function checkRequestBody(entry: Egress, body: Buffer, path: string): string | null {
  if (entry.mode !== "open") return null;
  const rules = compileEgressRules(entry);
  const format = entry.rules.format ?? "bytes";
  if (body.length > 0 && checkFormat(body, format, rules.schema)) {
    return `egress ${entry.name}: the request body is not valid ${format}${rules.schema ? " for the endpoint's schema" : ""}`;
  }
  if (rules.deny.length === 0) return null;
  const text = body.toString("utf8");
  const texts = [path, percentDecoded(path), text, percentDecoded(text)].filter((t): t is string => t !== null);
  for (let i = 0; i < rules.deny.length; i++) {
    const re = rules.deny[i]!;
    if (texts.some((t) => re.test(t))) return `egress ${entry.name}: the request matches deny pattern ${i} (${JSON.stringify(entry.rules.deny![i])})`;
  }
  return null;
}

export interface EgressReceiptInput {
  /** The entry's name, or null when the request named none. */
  endpoint: string | null;
  method: string;
  decision: "allow" | "refuse";
  /** From decideRequest / checkRequestBody or the proxy: built from the manifest only. */
  reason: string;
  /** The sandbox's scope when the request came and after its answer; absent: treated as above DOMAIN_OWNED. */
  scopeBefore?: DataScope;
  scopeAfter?: DataScope;
  path?: string;
  bytesOut?: number;
  bytesIn?: number;
  /** The endpoint's answer status (allowed requests). */
  status?: number;
}

export type EgressReceipt = { [key: string]: string | number | null };

const KNOWN_METHODS: readonly string[] = [...EGRESS_METHODS, "CONNECT", "OPTIONS", "TRACE"];
const DOMAIN_OWNED_RANK = scopeRank("DOMAIN_OWNED");

/**
 * The data of an `egress.request` audit record (AUDIT_KINDS.egressRequest): endpoint, method,
 * decision, reason, the scope before and after. What the workload chose goes in only while it is
 * at DOMAIN_OWNED or below (firewall-vm/README.md, the leakage budget): the path and bytesOut when
 * scopeBefore is (the request was made then), bytesIn and the answer's status when scopeAfter is
 * (they follow the answer). Above, a method outside the known set is "other".
 */
export function egressReceipt(r: EgressReceiptInput): EgressReceipt {
  const clearBefore = r.scopeBefore !== undefined && scopeRank(r.scopeBefore) <= DOMAIN_OWNED_RANK;
  const clearAfter = clearBefore && r.scopeAfter !== undefined && scopeRank(r.scopeAfter) <= DOMAIN_OWNED_RANK;
  const method = KNOWN_METHODS.includes(r.method) ? r.method : clearBefore ? r.method.slice(0, 32) : "other";
  return {
    endpoint: r.endpoint,
    method,
    decision: r.decision,
    reason: r.reason.slice(0, 500),
    ...(r.scopeBefore !== undefined ? { scopeBefore: r.scopeBefore } : {}),
    ...(r.scopeAfter !== undefined ? { scopeAfter: r.scopeAfter } : {}),
    ...(clearBefore && r.path !== undefined ? { path: r.path.slice(0, 2048) } : {}),
    ...(clearBefore && r.bytesOut !== undefined ? { bytesOut: r.bytesOut } : {}),
    ...(clearAfter && r.bytesIn !== undefined ? { bytesIn: r.bytesIn } : {}),
    ...(clearAfter && r.status !== undefined ? { status: r.status } : {}),
  };
}
