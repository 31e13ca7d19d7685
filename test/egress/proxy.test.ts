// The firewall's HTTP egress proxy with real sockets and a real HTTPS server on loopback (its own
// test CA, made by openssl): what is allowed reaches the server, what is not is refused with a
// reason, recorded in the trail, and never reaches the server.
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decrypt, X25519Identity } from "../../proto/src/age/index.ts";
import { silentLogger } from "../../proto/src/log.ts";
import type { Egress } from "../../proto/src/manifest/schema.ts";
import { ScopeTracker } from "../../firewall-vm/src/policy/index.ts";
import { HttpEgressProxy } from "../../firewall-vm/src/proxies/http/index.ts";
import { makePki, startServer, type TestServer } from "./server.ts";

const HOST = "api.example.test";
const MARKER = "EGRESS-MARKER-51c3";
const dir = mkdtempSync(path.join(tmpdir(), "airlock-egress-"));
const pki = makePki(dir, HOST);
const impostor = makePki(dir, HOST, "impostor");
const room = X25519Identity.generate();

let real: TestServer;
let fake: TestServer;
let plain: TestServer;

const rules = (r: Partial<Egress["rules"]> = {}): Egress["rules"] => ({ maxRequestBytes: 1024, maxResponseBytes: 64 * 1024, headers: ["content-type", "accept"], ...r });
const ENTRIES = (): Egress[] => [
  { name: "api", url: `https://${HOST}:8443/v1/`, methods: ["GET", "POST"], mode: "trusted", scope: "USER_PRIVATE", tls: { caPem: pki.caPem }, rules: rules() },
  { name: "pinned", url: `https://${HOST}:9443/v1/`, methods: ["GET"], mode: "trusted", scope: "DOMAIN_OWNED", tls: { spkiSha256: pki.spkiSha256 }, rules: rules() },
  { name: "stats", url: "http://stats.example.test/in/", methods: ["POST"], mode: "open", scope: "PUBLIC", rules: rules({ format: "json", schema: { type: "object", properties: { count: { type: "integer" } }, required: ["count"], additionalProperties: false }, deny: ["(?i)secret"] }) },
  { name: "vault", url: "http://vault.example.test/blobs/", methods: ["PUT", "GET"], mode: "secure", scope: "SEALED", rules: rules({ maxResponseBytes: 1 << 20 }) },
];

interface Harness {
  port: number;
  scope: ScopeTracker;
  trail: { kind: string; data: Record<string, unknown> }[];
  /** Refusals above DOMAIN_OWNED: counted, not recorded. */
  counted: number;
  close(): void;
}

/** The proxy behind a loopback listener, as the agent's streams reach it; entry i → `upstream[i]`. */
async function proxyWith(upstream: TestServer[], scope = new ScopeTracker("PUBLIC")): Promise<Harness> {
  const trail: Harness["trail"] = [];
  const h = { counted: 0 };
  const proxy = new HttpEgressProxy({
    countRefused: () => void h.counted++,
    entries: ENTRIES(),
    scope,
    audit: { append: async (kind, data) => void trail.push({ kind, data }) },
    log: silentLogger,
    roomRecipient: room.recipient.toString(),
    roomIdentity: room,
    upstream: (i) => ({ host: "127.0.0.1", port: upstream[i]!.port }),
  });
  const front = net.createServer((s) => proxy.handle(s, 3128));
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  return Object.assign(h, { port: (front.address() as net.AddressInfo).port, scope, trail, close: () => (proxy.stop(), front.close()) });
}

/** Sends raw bytes to the proxy and returns what it answered (the connection closed or 3 s); `halfClose`: then ends its side, as nc does. */
async function raw(port: number, request: string | Buffer, halfClose = false): Promise<string> {
  const s = net.connect(port, "127.0.0.1");
  const parts: Buffer[] = [];
  s.on("data", (c: Buffer) => parts.push(c));
  if (halfClose) s.end(request);
  else s.write(request);
  await new Promise<void>((resolve) => {
    s.on("close", () => resolve());
    s.on("error", () => resolve());
    setTimeout(() => (s.destroy(), resolve()), 3000);
    s.on("data", () => {
      const text = Buffer.concat(parts).toString("latin1");
      const m = /content-length: (\d+)\r\n/i.exec(text);
      const head = text.indexOf("\r\n\r\n");
      if (head > 0 && ((m && text.length >= head + 4 + Number(m[1])) || /\r\n0\r\n\r\n$/.test(text))) s.destroy();
    });
  });
  return Buffer.concat(parts).toString("latin1");
}

const get = (port: number, url: string, headers = ""): Promise<string> => raw(port, `GET ${url} HTTP/1.1\r\nhost: x\r\n${headers}\r\n`);
const post = (port: number, url: string, body: string, method = "POST", extra = ""): Promise<string> =>
  raw(port, `${method} ${url} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`);

beforeAll(async () => {
  real = await startServer(pki);
  fake = await startServer(impostor);
  plain = await startServer();
});
afterAll(async () => {
  await Promise.all([real.close(), fake.close(), plain.close()]);
  rmSync(dir, { recursive: true, force: true });
});

describe("HTTP egress proxy", () => {
  it("sends an allowed request itself, over TLS to the pinned endpoint, and raises the scope to the endpoint's", async () => {
    const h = await proxyWith([real, real, plain, plain]);
    try {
      const before = real.received.length;
      const answer = await get(h.port, `http://${HOST}:8443/v1/hello?x=1`, "accept: text/plain\r\n");
      expect(answer).toMatch(/^HTTP\/1.1 200/);
      expect(answer).toContain("ok\n");
      expect(real.received.slice(before)).toEqual([expect.objectContaining({ method: "GET", url: "/v1/hello?x=1" })]);
      expect(real.received.at(-1)!.headers.host).toBe(`${HOST}:8443`);
      expect(h.scope.current).toBe("USER_PRIVATE");
      expect(h.trail.at(-1)).toEqual({ kind: "egress.request", data: expect.objectContaining({ endpoint: "api", method: "GET", decision: "allow", path: "/v1/hello?x=1" }) });
      // Once the sandbox is above DOMAIN_OWNED, a receipt holds no guest-chosen path or size.
      expect(await get(h.port, `http://${HOST}:8443/v1/${MARKER}`)).toMatch(/^HTTP\/1.1 200/);
      expect(h.trail.at(-1)!.data).toMatchObject({ endpoint: "api", decision: "allow", scopeBefore: "USER_PRIVATE" });
      expect(JSON.stringify(h.trail.at(-1))).not.toContain(MARKER);
      expect(h.trail.at(-1)!.data).not.toHaveProperty("bytesIn");
    } finally {
      h.close();
    }
  });

  it("refuses, with a reason, and sends nothing for: another host, a method, a path, CONNECT, smuggled framing, a header, a body over its limit", async () => {
    const h = await proxyWith([real, real, plain, plain]);
    try {
      const before = real.received.length + plain.received.length;
      const cases: [string, Promise<string>, RegExp][] = [
        ["a host not listed", get(h.port, `http://evil.example.test/${MARKER}`), /^HTTP\/1.1 403[\s\S]*no egress entry/],
        ["a method not allowed", raw(h.port, `DELETE http://${HOST}:8443/v1/x HTTP/1.1\r\nhost: x\r\n\r\n`), /^HTTP\/1.1 405/],
        ["a method not allowed, the client's side closed", raw(h.port, `DELETE http://${HOST}:8443/v1/x HTTP/1.1\r\nhost: x\r\n\r\n`, true), /^HTTP\/1.1 405/],
        ["a path outside the prefix", get(h.port, `http://${HOST}:8443/admin/${MARKER}`), /^HTTP\/1.1 403/],
        ["a path climbing out", get(h.port, `http://${HOST}:8443/v1/%2e%2e/admin`), /^HTTP\/1.1 (403|400)/],
        ["CONNECT", raw(h.port, `CONNECT ${HOST}:8443 HTTP/1.1\r\nhost: ${HOST}:8443\r\n\r\n`), /^HTTP\/1.1 405/],
        ["Content-Length with Transfer-Encoding", raw(h.port, `POST http://${HOST}:8443/v1/x HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/smuggled HTTP/1.1\r\n\r\n`), /^HTTP\/1.1 400/],
        ["a header outside the allow-list", get(h.port, `http://${HOST}:8443/v1/x`, `x-leak: ${MARKER}\r\n`), /^HTTP\/1.1 403/],
        ["a body over its limit", post(h.port, `http://${HOST}:8443/v1/x`, "x".repeat(2000)), /^HTTP\/1.1 413/],
      ];
      for (const [what, answer, expected] of cases) expect(await answer, what).toMatch(expected);
      expect(real.received.length + plain.received.length).toBe(before);
      const refusals = h.trail.filter((r) => r.data.decision === "refuse");
      expect(refusals.length).toBeGreaterThanOrEqual(cases.length);
      expect(JSON.stringify(h.trail)).not.toContain(MARKER);
      expect(h.scope.current).toBe("PUBLIC");
    } finally {
      h.close();
    }
  });

  it("open mode: checks the body's format, schema and deny patterns, and is refused once the scope is above DOMAIN_OWNED", async () => {
    const h = await proxyWith([real, real, plain, plain]);
    try {
      const before = plain.received.length;
      expect(await post(h.port, "http://stats.example.test/in/count", '{"count":3}')).toMatch(/^HTTP\/1.1 200/);
      expect(await post(h.port, "http://stats.example.test/in/count", `{"count":3,"extra":"${MARKER}"}`)).toMatch(/^HTTP\/1.1 403/);
      expect(await post(h.port, "http://stats.example.test/in/count", '{"count":"three"}')).toMatch(/^HTTP\/1.1 403/);
      expect(await post(h.port, "http://stats.example.test/in/count", "not json")).toMatch(/^HTTP\/1.1 403/);
      expect(plain.received.length).toBe(before + 1);
      // Reading USER_PRIVATE data closes open egress for the rest of the run.
      expect(await get(h.port, `http://${HOST}:8443/v1/hello`)).toMatch(/^HTTP\/1.1 200/);
      expect(h.scope.current).toBe("USER_PRIVATE");
      const receipts = h.trail.length;
      expect(await post(h.port, "http://stats.example.test/in/count", '{"count":4}')).toMatch(/^HTTP\/1.1 403[\s\S]*DOMAIN_OWNED/);
      expect(plain.received.length).toBe(before + 1);
      // A refusal above DOMAIN_OWNED is the workload's choice: counted for after the run, no live receipt.
      expect(h.trail.length).toBe(receipts);
      expect(h.counted).toBe(1);
    } finally {
      h.close();
    }
  });

  it("refuses an endpoint that presents another certificate, whether the pin is a CA or a key", async () => {
    const h = await proxyWith([fake, fake, plain, plain]);
    try {
      const before = fake.received.length;
      expect(await get(h.port, `http://${HOST}:8443/v1/x`)).toMatch(/^HTTP\/1.1 502[\s\S]*not the one the manifest pins/);
      expect(await get(h.port, `http://${HOST}:9443/v1/x`)).toMatch(/^HTTP\/1.1 502[\s\S]*not the one the manifest pins/);
      expect(fake.received.length).toBe(before);
      expect(h.trail.filter((r) => /pins/.test(String(r.data.reason)))).toHaveLength(2);
      expect(h.scope.current).toBe("PUBLIC");
    } finally {
      h.close();
    }
  });

  it("cuts an answer over the endpoint's limit, and says so in the trail", async () => {
    const h = await proxyWith([real, real, plain, plain]);
    try {
      const answer = await get(h.port, `http://${HOST}:8443/v1/bytes/${200 * 1024}`);
      expect(answer.length).toBeLessThan(100 * 1024);
      expect(h.trail.at(-1)!.data).toMatchObject({ endpoint: "api", decision: "refuse", reason: expect.stringMatching(/over the endpoint's limit/) });
      // The answer began: its scope is the sandbox's now, cut or not.
      expect(h.scope.current).toBe("USER_PRIVATE");
    } finally {
      h.close();
    }
  });

  it("a key pin accepts the right key", async () => {
    const h = await proxyWith([real, real, plain, plain]);
    try {
      expect(await get(h.port, `http://${HOST}:9443/v1/x`)).toMatch(/^HTTP\/1.1 200/);
      expect(h.scope.current).toBe("DOMAIN_OWNED");
    } finally {
      h.close();
    }
  });

  it("secure mode: the body leaves sealed to the room, readable only with the room's identity", async () => {
    const h = await proxyWith([real, real, plain, plain]);
    try {
      const before = plain.received.length;
      expect(await post(h.port, "http://vault.example.test/blobs/b1", `{"secret":"${MARKER}"}`, "PUT")).toMatch(/^HTTP\/1.1 200/);
      const got = plain.received[before]!;
      expect(got.body.toString("latin1")).not.toContain(MARKER);
      expect(got.body.subarray(0, 22).toString()).toBe("age-encryption.org/v1\n");
      const parts: Buffer[] = [];
      for await (const c of decrypt([got.body], [room])) parts.push(c);
      expect(Buffer.concat(parts).toString()).toContain(MARKER);
      expect(h.scope.current).toBe("SEALED");
    } finally {
      h.close();
    }
  });
});
