// HTTP egress endpoints (the manifest's `egress:` entries) as the three programs see them: the host
// launch derives one guestfwd per endpoint, the firewall's HTTP proxy reaches endpoint i at
// firewallAddress(i), and the sandbox agent listens for each endpoint's host on sandboxPort(entry)
// besides its HTTP proxy on PROXY_PORT. Design: firewall-vm/src/proxies/README.md.
import { AirlockError } from "./errors.ts";

/** The agent's HTTP proxy in the sandbox: HTTP_PROXY=http://127.0.0.1:3128. */
export const PROXY_PORT = 3128;

/** At most this many egress entries in a manifest (the validator's cap, below firewallAddress's limit). */
export const MAX_EGRESS_ENTRIES = 64;

/** firewallAddress has room for this many endpoints: 10.0.2.100 … 10.0.2.199. */
const FIREWALL_ADDRESSES = 100;

export { EGRESS_METHODS, type EgressMethod } from "./manifest/schema.ts";

/** An HTTP header name (RFC 9110 token). */
export const HEADER_NAME_RE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

/**
 * Hop-by-hop and framing headers: the proxy manages these itself, so a manifest never lists them
 * in `rules.headers` (proxy-* included).
 */
export const FRAMING_HEADERS = ["host", "connection", "content-length", "transfer-encoding", "te", "trailer", "upgrade", "keep-alive"] as const;

/** Whether a (lower-case) header name is one a manifest may not allow: FRAMING_HEADERS or proxy-*. */
export function isFramingHeader(name: string): boolean {
  const n = name.toLowerCase();
  return (FRAMING_HEADERS as readonly string[]).includes(n) || n.startsWith("proxy-");
}

/**
 * A deny pattern as the firewall runs it: `new RegExp(p, "u")`, or with "iu" when the pattern
 * starts with "(?i)" (which is removed). Throws SyntaxError for a pattern that does not compile.
 */
export function compileDenyPattern(p: string): RegExp {
  return p.startsWith("(?i)") ? new RegExp(p.slice(4), "iu") : new RegExp(p, "u");
}

export interface EgressUrl {
  scheme: "http" | "https";
  /** Lower-case DNS name or dotted IPv4 address (no IPv6 literals). */
  host: string;
  /** The endpoint's real port: the URL's, or 80 (http) / 443 (https). */
  port: number;
  /** Starts and ends with "/". */
  pathPrefix: string;
}

const RAW_URL_RE = /^(https?):\/\/([^/?#]*)(\/[^?#]*)?$/i;
/** A path prefix: RFC 3986 unreserved and sub-delims, ':' '@' '/'; no '%' (no encoded dots or slashes). */
const PREFIX_CHARS_RE = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$/;
const DNS_NAME_RE = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * Why `url` is not an egress URL (a phrase for "expected …" messages), or null when it is one:
 * http: or https:, no userinfo, no query or fragment, a DNS name or IPv4 host, an explicit port
 * from 1 to 65535 if any, and a path prefix ending in "/" with no "." or ".." segment, no "//" and
 * no percent-encoding. An empty path is "/".
 */
export function egressUrlProblem(url: string): string | null {
  if (url.length > 2048) return "a URL of at most 2048 characters";
  const raw = RAW_URL_RE.exec(url);
  if (!raw) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(url) && !/^https?:/i.test(url)) return "an http: or https: URL";
    return "an absolute http(s) URL with no query or fragment (scheme://host[:port]/path/)";
  }
  const authority = raw[2]!;
  const rawPath = raw[3] ?? "/";
  if (authority.includes("@")) return "a URL without user name or password";
  if (authority.startsWith("[")) return "a URL whose host is a DNS name or an IPv4 address (IPv6 literals are not supported)";
  const m = /^([^:]*)(?::(\d{1,5}))?$/.exec(authority);
  if (!m || m[1] === "") return "a URL with a host (and an optional numeric port)";
  if (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535)) return "a URL with a port from 1 to 65535";
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return "an absolute http(s) URL";
  }
  if (!DNS_NAME_RE.test(u.hostname) && !IPV4_RE.test(u.hostname)) return "a URL whose host is a DNS name or an IPv4 address";
  if (u.hostname !== m[1]!.toLowerCase()) return `a URL whose host is written as it resolves (${u.hostname})`;
  if (!rawPath.endsWith("/")) return 'a path prefix ending in "/" (e.g. https://api.example.test/v1/)';
  if (!PREFIX_CHARS_RE.test(rawPath)) return "a path prefix of letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : @ / (no percent-encoding)";
  if (rawPath.includes("//") || rawPath.split("/").some((s) => s === "." || s === "..")) return 'a normalized path prefix (no "//", "." or ".." segments)';
  if (u.pathname !== rawPath) return "a normalized path prefix";
  return null;
}

/**
 * The normalized form of an egress URL (lower-case scheme and host, default port dropped, "/" for
 * an empty path): what the validated manifest and its canonical form hold. Throws
 * MANIFEST_INVALID when egressUrlProblem finds one.
 */
export function normalizeEgressUrl(url: string): string {
  const problem = egressUrlProblem(url);
  if (problem) throw new AirlockError("MANIFEST_INVALID", `egress url: expected ${problem}`);
  return new URL(url).href;
}

/** Scheme, host, port (default 80/443) and path prefix of an egress URL; throws MANIFEST_INVALID on a bad one. */
export function parseEgressUrl(url: string): EgressUrl {
  const u = new URL(normalizeEgressUrl(url));
  const scheme = u.protocol === "https:" ? "https" : "http";
  return { scheme, host: u.hostname, port: u.port ? Number(u.port) : scheme === "https" ? 443 : 80, pathPrefix: u.pathname };
}

/**
 * The port the workload uses for an endpoint in the sandbox, where it always speaks plain HTTP
 * (the firewall is its TLS): 80 for https on 443 and http on 80, otherwise the URL's port.
 */
export function sandboxPort(entry: { url: string }): number {
  const { scheme, port } = parseEgressUrl(entry.url);
  if ((scheme === "https" && port === 443) || (scheme === "http" && port === 80)) return 80;
  return port;
}

/** Where the firewall reaches endpoint i (its index in the manifest's egress list): 10.0.2.(100+i). */
export function firewallAddress(i: number): string {
  if (!Number.isSafeInteger(i) || i < 0 || i >= FIREWALL_ADDRESSES) {
    throw new AirlockError("INTERNAL", `firewallAddress: endpoint index ${i} is outside 0 … ${FIREWALL_ADDRESSES - 1}`);
  }
  return `10.0.2.${100 + i}`;
}
