import { describe, expect, it } from "vitest";
import { AirlockError } from "../../../../proto/src/errors.ts";
import type { DataScope, Egress } from "../../../../proto/src/manifest/schema.ts";
import { checkRequestBody, compileEgressRules, decideRequest, egressReceipt, matchEndpoint, normalizeRequestPath, type EgressRequest, type RequestDecision } from "./rules.ts";

const MARKER = "zq7secretmarker";

const rules = (r: Partial<Egress["rules"]> = {}): Egress["rules"] => ({ maxRequestBytes: 100, maxResponseBytes: 1000, headers: [], ...r });
const api: Egress = { name: "api", url: "https://api.example.test/v1/", methods: ["GET", "POST"], mode: "open", scope: "DOMAIN_OWNED", rules: rules({ headers: ["content-type", "accept"], format: "bytes", deny: [] }) };
const apiAdmin: Egress = { ...api, name: "admin", url: "https://api.example.test/v1/admin/", methods: ["GET"] };
const other: Egress = { ...api, name: "other", url: "https://api.example.test:8443/v1/" };
const plain: Egress = { ...api, name: "plain", url: "http://plain.example.test/" };
const trusted: Egress = { name: "t", url: "https://t.example.test/", methods: ["GET"], mode: "trusted", scope: "USER_PRIVATE", tls: { spkiSha256: "a".repeat(64) }, rules: rules() };
const secure: Egress = { name: "s", url: "https://s.example.test/", methods: ["POST"], mode: "secure", scope: "SEALED", rules: rules() };

function req(r: Partial<EgressRequest> = {}): EgressRequest {
  return { method: "GET", path: "/v1/items", headers: [["Host", "api.example.test"]], ...r };
}

function refused(d: RequestDecision): { status: number; reason: string } {
  if (d.allow) throw new Error(`allowed: ${JSON.stringify(d)}`);
  return { status: d.status, reason: d.reason };
}

describe("matchEndpoint", () => {
  const entries = [api, apiAdmin, other, plain];
  it("matches host (any case), the sandbox port and the path prefix; the longest prefix wins", () => {
    expect(matchEndpoint(entries, { host: "api.example.test", port: 80, path: "/v1/items" })).toBe(api);
    expect(matchEndpoint(entries, { host: "API.Example.Test", port: 80, path: "/v1/admin/users" })).toBe(apiAdmin);
    expect(matchEndpoint(entries, { host: "api.example.test", port: 8443, path: "/v1/admin/users" })).toBe(other);
    expect(matchEndpoint(entries, { host: "plain.example.test", port: 80, path: "/anything?x=1" })).toBe(plain);
    expect(matchEndpoint(entries, { host: "api.example.test.", port: 80, path: "/v1/" })).toBe(api);
  });
  it("returns null for another host, port or path", () => {
    expect(matchEndpoint(entries, { host: "evil.example.test", port: 80, path: "/v1/items" })).toBeNull();
    expect(matchEndpoint(entries, { host: "api.example.test", port: 443, path: "/v1/items" })).toBeNull();
    expect(matchEndpoint(entries, { host: "api.example.test", port: 80, path: "/v2/items" })).toBeNull();
    expect(matchEndpoint(entries, { host: "api.example.test", port: 80, path: "/v1" })).toBeNull();
    expect(matchEndpoint([], { host: "api.example.test", port: 80, path: "/v1/" })).toBeNull();
  });
  it("matches on the normalized path (a traversal still names its entry; decideRequest refuses it)", () => {
    expect(matchEndpoint(entries, { host: "api.example.test", port: 80, path: "//v1//admin/x" })).toBe(apiAdmin);
    expect(matchEndpoint(entries, { host: "api.example.test", port: 80, path: "/v1/admin/../../etc" })).toBe(apiAdmin);
  });
});

describe("decideRequest", () => {
  it("allows a request within the rules: allow-listed headers forwarded, framing and user-agent left to the proxy", () => {
    const d = decideRequest(
      api,
      req({
        method: "POST",
        path: "/v1//items/./x%2E?q=a/b",
        headers: [
          ["Host", "api.example.test"],
          ["User-Agent", `curl/${MARKER}`],
          ["Content-Type", " application/json "],
          ["accept", "*/*"],
          ["Accept", "text/plain"],
          ["Connection", "close"],
          ["Proxy-Connection", "Keep-Alive"],
          ["Content-Length", "12"],
          ["Expect", "100-Continue"],
        ],
        bodyLength: 12,
      }),
      "PUBLIC",
    );
    expect(d).toEqual({
      allow: true,
      path: "/v1/items/x.?q=a/b",
      headers: [
        ["content-type", "application/json"],
        ["accept", "*/*"],
        ["accept", "text/plain"],
      ],
      bodyLength: 12,
    });
    expect(decideRequest(api, req({ headers: [["Transfer-Encoding", "Chunked"]], bodyLength: "chunked", method: "POST" }), "DOMAIN_OWNED")).toMatchObject({ allow: true, bodyLength: "chunked" });
    expect(decideRequest(api, req({ headers: [] }), "DOMAIN_OWNED")).toMatchObject({ allow: true, bodyLength: 0, headers: [] });
    expect(decideRequest(api, req({ headers: [["Content-Length", "0"]], bodyLength: 0 }), "DOMAIN_OWNED")).toMatchObject({ allow: true, bodyLength: 0 });
    expect(decideRequest(api, req({ method: "POST", headers: [["Content-Length", "100"]], bodyLength: 100 }), "DOMAIN_OWNED")).toMatchObject({ allow: true, bodyLength: 100 });
    expect(decideRequest({ ...api, rules: { ...api.rules, headers: ["user-agent"] } }, req({ headers: [["User-Agent", "x"]] }), "PUBLIC")).toMatchObject({ allow: true, headers: [["user-agent", "x"]] });
  });

  it("applies the mode's scope ceiling: open at DOMAIN_OWNED at most, trusted below SEALED, secure always", () => {
    expect(refused(decideRequest(api, req(), "USER_PRIVATE"))).toEqual({ status: 403, reason: "egress api is open but the sandbox has read USER_PRIVATE data; open mode carries at most DOMAIN_OWNED" });
    expect(decideRequest(api, req(), "DOMAIN_OWNED").allow).toBe(true);
    const t = req({ path: "/x", headers: [] });
    expect(decideRequest(trusted, t, "MULTI_USER_PRIVATE").allow).toBe(true);
    expect(refused(decideRequest(trusted, t, "SEALED"))).toEqual({ status: 403, reason: "egress t is trusted but the sandbox has read SEALED data; trusted mode carries at most MULTI_USER_PRIVATE" });
    expect(decideRequest(secure, { ...t, method: "POST" }, "SEALED").allow).toBe(true);
  });

  it("refuses a method not in the entry's list (405)", () => {
    for (const method of ["DELETE", "get", "CONNECT", "TRACE", "", MARKER]) {
      expect(refused(decideRequest(api, req({ method }), "PUBLIC"))).toEqual({ status: 405, reason: "egress api: the method is not allowed (allowed: GET, POST)" });
    }
  });

  it("refuses path traversal in every spelling (400) and paths outside the prefix (403)", () => {
    const traversals = [
      "/v1/../admin",
      "/v1/items/..",
      "/v1/%2e%2e/admin",
      "/v1/%2E%2e/admin",
      "/v1/.%2e/admin",
      "/v1/%2e./admin",
      "/v1/..%2fadmin",
      "/v1/%2F..",
      "/v1\\..\\admin",
      "/v1/%5c..%5cadmin",
      "/v1/%255c",
      "/v1/%252e%252e/admin",
      "/v1/a..b",
      "/v1/x%00",
      "/v1/x\u0000",
      "/v1/x?a=%00",
      "/v1/x%",
      "/v1/x%zz",
      "/v1/a b",
      "/v1/é",
      "/v1/x#frag",
      "v1/x",
      "http://api.example.test/v1/",
      "*",
      `/v1/${"a".repeat(9000)}`,
    ];
    for (const path of traversals) {
      const d = refused(decideRequest(api, req({ path }), "PUBLIC"));
      expect(d.status, path).toBe(400);
      expect(d.reason, path).toMatch(/^egress api: .*; refused$/);
    }
    for (const path of ["/v2/x", "/v1", "/", "//v2/x", "/V1/x", "/v1x/"]) {
      expect(refused(decideRequest(api, req({ path }), "PUBLIC")), path).toEqual({ status: 403, reason: "egress api: the path is outside the endpoint's prefix /v1/" });
    }
    expect(decideRequest(api, req({ path: "//v1/x" }), "PUBLIC")).toMatchObject({ allow: true, path: "/v1/x" });
    expect(decideRequest(api, req({ path: "/v1/x?next=../../etc" }), "PUBLIC")).toMatchObject({ allow: true, path: "/v1/x?next=../../etc" });
  });

  it("refuses header smuggling and malformed framing (400)", () => {
    const cases: [string, [string, string][], EgressRequest["bodyLength"]?][] = [
      ["Transfer-Encoding and Content-Length", [["Transfer-Encoding", "chunked"], ["Content-Length", "5"]], "chunked"],
      ["Content-Length then Transfer-Encoding", [["Content-Length", "5"], ["transfer-encoding", "chunked"]], 5],
      ["gzip, chunked", [["transfer-encoding", "gzip, chunked"]], "chunked"],
      ["chunked, chunked", [["transfer-encoding", "chunked, chunked"]], "chunked"],
      ["identity", [["transfer-encoding", "identity"]]],
      ["repeated Transfer-Encoding", [["Transfer-Encoding", "chunked"], ["Transfer-Encoding", "chunked"]], "chunked"],
      ["a list in Content-Length", [["Content-Length", "1, 2"]], 1],
      ["repeated Content-Length", [["Content-Length", "5"], ["Content-Length", "5"]], 5],
      ["signed Content-Length", [["Content-Length", "+5"]], 5],
      ["hex Content-Length", [["Content-Length", "0x10"]], 16],
      ["empty Content-Length", [["Content-Length", ""]]],
      ["huge Content-Length", [["Content-Length", "99999999999999999999"]]],
      ["a space in a name", [["Content-Length ", "5"]], 5],
      ["a space inside a name", [["Transfer Encoding", "chunked"]]],
      ["an obs-fold continuation", [["Accept", "a"], [" b", ""]]],
      ["a folded value", [["Accept", "a\r\n b"]]],
      ["a newline in a value", [["Accept", "a\nX-Injected: 1"]]],
      ["a NUL in a value", [["Accept", "a\u0000b"]]],
      ["an empty name", [["", "x"]]],
      ["a colon in a name", [["Accept:", "x"]]],
      ["repeated Host", [["Host", "api.example.test"], ["Host", "evil.example.test"]]],
      ["a body the headers do not declare", [], 5],
      ["chunked body with a Content-Length", [["Content-Length", "5"]], "chunked"],
      ["a length the headers contradict", [["Content-Length", "5"]], 7],
      ["too many headers", Array.from({ length: 101 }, () => ["Accept", "x"] as [string, string])],
      ["an oversized value", [["Accept", "x".repeat(9000)]]],
    ];
    for (const [what, headers, bodyLength] of cases) {
      const d = refused(decideRequest(api, req({ method: "POST", headers, ...(bodyLength !== undefined ? { bodyLength } : {}) }), "PUBLIC"));
      expect(d.status, what).toBe(400);
    }
  });

  it("refuses headers outside the allow-list (403), hop-by-hop ones included", () => {
    for (const name of ["X-Secret", "Cookie", "Authorization", "TE", "Trailer", "Upgrade", "Proxy-Authorization", MARKER]) {
      expect(refused(decideRequest(api, req({ headers: [[name, "1"]] }), "PUBLIC")), name).toEqual({ status: 403, reason: "egress api: a header outside the allow-list (allowed: content-type, accept)" });
    }
    // What ordinary clients send on their own is dropped, not refused, when the manifest does not list it.
    const d = decideRequest(trusted, req({ path: "/", headers: [["Accept", "*/*"], ["Accept-Encoding", "identity"], ["User-Agent", MARKER]] }), "PUBLIC");
    expect(d).toMatchObject({ allow: true, headers: [] });
    expect(refused(decideRequest(api, req({ headers: [["Expect", "something-else"]] }), "PUBLIC")).status).toBe(403);
  });

  it("refuses a declared body over maxRequestBytes (413)", () => {
    expect(refused(decideRequest(api, req({ method: "POST", headers: [["Content-Length", "101"]], bodyLength: 101 }), "PUBLIC"))).toEqual({ status: 413, reason: "egress api: the request body is over the endpoint's limit (100 bytes)" });
  });

  it("never quotes what the workload chose", () => {
    const hostile: EgressRequest[] = [
      req({ method: MARKER }),
      req({ path: `/v1/../${MARKER}` }),
      req({ path: `/${MARKER}/` }),
      req({ path: `/v1/${MARKER} x` }),
      req({ headers: [[MARKER, "1"]] }),
      req({ headers: [[`x-${MARKER} `, "1"]] }),
      req({ headers: [["Accept", `${MARKER}\r\n`]] }),
      req({ headers: [["Content-Length", MARKER]] }),
      req({ headers: [["Transfer-Encoding", MARKER]] }),
      req({ headers: [["Content-Length", "9999"]], bodyLength: 9999 }),
      req({ headers: [["x-other", MARKER]] }),
    ];
    for (const r of hostile) {
      for (const scope of ["PUBLIC", "SEALED"] as DataScope[]) {
        const d = refused(decideRequest(api, r, scope));
        expect(d.reason.toLowerCase()).not.toContain(MARKER);
      }
    }
  });
});

describe("normalizeRequestPath", () => {
  it("decodes %2e, collapses // and drops . segments; keeps the query as sent", () => {
    expect(normalizeRequestPath("/a//b/./c/%2E/d?x=%2e%2e")).toEqual({ path: "/a/b/c/d", query: "x=%2e%2e" });
    expect(normalizeRequestPath("/a/.")).toEqual({ path: "/a/", query: "" });
    expect(normalizeRequestPath("/a/%41")).toEqual({ path: "/a/%41", query: "" });
  });
});

describe("checkRequestBody (open mode)", () => {
  const json: Egress = { ...api, rules: rules({ format: "json", schema: { type: "object", properties: { q: { type: "string", maxLength: 10 } }, required: ["q"] }, deny: ["(?i)password", "\\d{16}"] }) };
  it("checks format and schema, quoting the manifest only", () => {
    expect(checkRequestBody(json, Buffer.from('{"q":"hello"}'), "/v1/search")).toBeNull();
    expect(checkRequestBody(json, Buffer.alloc(0), "/v1/search")).toBeNull();
    expect(checkRequestBody(json, Buffer.from(`{"q":"hello", "${MARKER}": 1}`), "/v1/search")).toBe("egress api: the request body is not valid json for the endpoint's schema");
    expect(checkRequestBody(json, Buffer.from(`{"q":"${MARKER}"}`), "/v1/search")).toBe("egress api: the request body is not valid json for the endpoint's schema");
    expect(checkRequestBody(json, Buffer.from(`${MARKER}`), "/v1/search")).toBe("egress api: the request body is not valid json for the endpoint's schema");
    const csv: Egress = { ...api, rules: rules({ format: "csv", schema: { type: "object", properties: { a: { type: "integer" } } }, deny: [] }) };
    expect(checkRequestBody(csv, Buffer.from("a\n1\n2\n"), "/v1/")).toBeNull();
    expect(checkRequestBody(csv, Buffer.from(`${MARKER}\n1\n`), "/v1/")).toBe("egress api: the request body is not valid csv for the endpoint's schema");
    const text: Egress = { ...api, rules: rules({ format: "text", deny: [] }) };
    expect(checkRequestBody(text, Buffer.from("hello\n"), "/v1/")).toBeNull();
    expect(checkRequestBody(text, Buffer.from(`${MARKER}\u0001`), "/v1/")).toBe("egress api: the request body is not valid text");
    expect(checkRequestBody(text, Buffer.from([0xff, 0xfe]), "/v1/")).toBe("egress api: the request body is not valid text");
    expect(checkRequestBody(api, Buffer.from([0, 1, 2]), "/v1/")).toBeNull();
  });

  it("matches deny patterns against the path and the body, as sent and percent-decoded", () => {
    expect(checkRequestBody(json, Buffer.from('{"q":"PassWord"}'), "/v1/search")).toBe('egress api: the request matches deny pattern 0 ("(?i)password")');
    expect(checkRequestBody(json, Buffer.alloc(0), "/v1/password/")).toBe('egress api: the request matches deny pattern 0 ("(?i)password")');
    expect(checkRequestBody(json, Buffer.alloc(0), "/v1/pa%73sword")).toBe('egress api: the request matches deny pattern 0 ("(?i)password")');
    expect(checkRequestBody(json, Buffer.alloc(0), "/v1/x?card=4111111111111111")).toBe('egress api: the request matches deny pattern 1 ("\\\\d{16}")');
    expect(checkRequestBody(json, Buffer.alloc(0), "/v1/x?card=4111+1111")).toBeNull();
    const form: Egress = { ...api, rules: rules({ format: "text", deny: ["secret value"] }) };
    expect(checkRequestBody(form, Buffer.from("a=secret+value"), "/v1/")).toBe('egress api: the request matches deny pattern 0 ("secret value")');
    expect(checkRequestBody(form, Buffer.from("a=secret%20value"), "/v1/")).not.toBeNull();
    expect(checkRequestBody(form, Buffer.from("a=%zz"), "/v1/")).toBeNull();
  });

  it("does not inspect trusted or secure bodies", () => {
    expect(checkRequestBody(trusted, Buffer.from("anything"), "/x")).toBeNull();
    expect(checkRequestBody(secure, Buffer.from("anything"), "/x")).toBeNull();
  });

  it("compiles an entry's schema with the firewall's parser: one outside the subset is refused before the run", () => {
    const bad: Egress = { ...api, rules: rules({ format: "json", schema: { type: "object", pattern: ".*" }, deny: [] }) };
    expect(() => compileEgressRules(bad)).toThrow(AirlockError);
    expect(() => compileEgressRules(bad)).toThrow(/egress api: rules.schema.pattern: expected one of the schema keywords/);
    expect(compileEgressRules(json).deny.map((r) => r.flags)).toEqual(["iu", "u"]);
    expect(compileEgressRules(json)).toBe(compileEgressRules(json));
  });
});

describe("egressReceipt", () => {
  const base = { endpoint: "api", method: "POST", decision: "allow" as const, reason: "open: sent", path: "/v1/x?q=1", bytesOut: 10, bytesIn: 20, status: 200 };
  it("records the path, bytes and status at DOMAIN_OWNED or below", () => {
    expect(egressReceipt({ ...base, scopeBefore: "DOMAIN_OWNED", scopeAfter: "DOMAIN_OWNED" })).toEqual({
      endpoint: "api",
      method: "POST",
      decision: "allow",
      reason: "open: sent",
      scopeBefore: "DOMAIN_OWNED",
      scopeAfter: "DOMAIN_OWNED",
      path: "/v1/x?q=1",
      bytesOut: 10,
      bytesIn: 20,
      status: 200,
    });
  });
  it("leaves out what the workload chose above DOMAIN_OWNED", () => {
    expect(egressReceipt({ ...base, scopeBefore: "USER_PRIVATE", scopeAfter: "USER_PRIVATE" })).toEqual({ endpoint: "api", method: "POST", decision: "allow", reason: "open: sent", scopeBefore: "USER_PRIVATE", scopeAfter: "USER_PRIVATE" });
    // the request was made at PUBLIC; its answer raised the scope: the answer's size and status stay out
    expect(egressReceipt({ ...base, scopeBefore: "PUBLIC", scopeAfter: "USER_PRIVATE" })).toEqual({ endpoint: "api", method: "POST", decision: "allow", reason: "open: sent", scopeBefore: "PUBLIC", scopeAfter: "USER_PRIVATE", path: "/v1/x?q=1", bytesOut: 10 });
    const r = egressReceipt({ endpoint: null, method: MARKER, decision: "refuse", reason: "no egress entry names this destination", scopeBefore: "SEALED", scopeAfter: "SEALED", path: `/${MARKER}` });
    expect(r).toEqual({ endpoint: null, method: "other", decision: "refuse", reason: "no egress entry names this destination", scopeBefore: "SEALED", scopeAfter: "SEALED" });
    expect(JSON.stringify(egressReceipt({ endpoint: null, method: MARKER, decision: "refuse", reason: "x", path: `/${MARKER}`, bytesOut: 1 }))).not.toContain(MARKER);
    expect(egressReceipt({ ...base, method: MARKER, scopeBefore: "PUBLIC", scopeAfter: "PUBLIC" }).method).toBe(MARKER);
  });
});
