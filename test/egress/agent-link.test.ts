// HTTP egress through both ends of the agent link, on the host: the agent's loopback listeners
// (sandbox-vm/src/agent/egress.ts) and the firewall's proxy (firewall-vm/src/proxies/http), joined
// by the link's framed messages inside the secure channel (test evidence in place of SNP reports)
// over a real socket pair, to a real HTTPS server. What the guests run, minus the VMs.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { bodyOf, readMessages, sendMessage } from "../../proto/src/control.ts";
import { socketPair } from "../../proto/src/channel/test-sockets.ts";
import { secureClient, secureServer } from "../../proto/src/channel/index.ts";
import { testAttest, testIdentity, testVerifyPeer } from "../../proto/src/channel/test-evidence.ts";
import { silentLogger } from "../../proto/src/log.ts";
import { AgentToFirewallSchema, FirewallToAgentSchema } from "../../proto/gen/airlock/v1/agent_pb.ts";
import { ScopeTracker } from "../../firewall-vm/src/policy/index.ts";
import { startHttpEgress } from "../../firewall-vm/src/proxies/http/index.ts";
import { startEgress } from "../../sandbox-vm/src/agent/egress.ts";
import { makePki, startServer } from "./server.ts";

const dir = mkdtempSync(path.join(tmpdir(), "airlock-egress-link-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

function get(port: number, target: string, headers: Record<string, string> = {}, body?: Buffer): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: target, method: body ? "POST" : "GET", headers: { ...headers, ...(body ? { "content-length": String(body.length) } : {}) }, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("egress across the agent link", () => {
  it("carries requests and answers through the agent's listeners and the firewall's proxy, both ways, many at once", async () => {
    const pki = makePki(dir, "api.example.test");
    const server = await startServer(pki);
    const sp = await socketPair(dir);
    const [agentEnd, enforcerEnd] = [testIdentity("sandbox agent"), testIdentity("enforcer")];
    const [a, f] = await Promise.all([
      secureClient(sp.client, { attest: testAttest(agentEnd), verifyPeer: testVerifyPeer(enforcerEnd), timeoutMs: 5000 }),
      secureServer(sp.server, { attest: testAttest(enforcerEnd), verifyPeer: testVerifyPeer(agentEnd), timeoutMs: 5000 }),
    ]);
    const [agentSide, firewallSide] = [a.stream, f.stream];
    for (const x of [agentSide, firewallSide]) x.on("error", () => undefined);
    const close = async () => {
      agentSide.destroy();
      firewallSide.destroy();
      await sp.close();
    };
    const scope = new ScopeTracker("PUBLIC");
    // The endpoint's port as the manifest names it (the agent listens on it); the proxy reaches the server.
    const port = await freePort();
    const trail: Record<string, unknown>[] = [];
    const egress = startHttpEgress({
      entries: [{ name: "api", url: `https://api.example.test:${port}/v1/`, methods: ["GET", "POST"], mode: "trusted", scope: "USER_PRIVATE", tls: { caPem: pki.caPem }, rules: { maxRequestBytes: 1 << 20, maxResponseBytes: 8 << 20, headers: ["content-type"] } }],
      scope,
      audit: { append: async (_k, d) => void trail.push(d) },
      log: silentLogger,
      upstream: () => ({ host: "127.0.0.1", port: server.port }),
      send: (m) => sendMessage(firewallSide, FirewallToAgentSchema, m),
    });
    // The firewall's reader: egress messages from the agent to the proxy.
    void (async () => {
      for await (const m of readMessages(firewallSide, AgentToFirewallSchema, "the agent")) {
        if (m.kind !== "message") continue;
        const b = bodyOf(m.message);
        if (b.case === "egressOpen" || b.case === "egressData" || b.case === "egressClose" || b.case === "egressAck") egress.receive(b);
      }
    })().catch(() => undefined);
    const proxyPort = await freePort();
    const agent = (await startEgress(agentSide, [{ host: "api.example.test", port }], path.join(dir, "hosts"), proxyPort))!;
    // The agent's reader: the firewall's egress messages to the streams.
    void (async () => {
      for await (const m of readMessages(agentSide, FirewallToAgentSchema, "the firewall")) {
        if (m.kind !== "message") continue;
        const b = bodyOf(m.message);
        if (b.case === "egressData" || b.case === "egressClose" || b.case === "egressAck") agent.receive(b);
      }
    })().catch(() => undefined);
    try {
      expect(readFileSync(path.join(dir, "hosts"), "utf8")).toContain("127.0.0.1 api.example.test");
      expect(agent.env.http_proxy).toBe(`http://127.0.0.1:${proxyPort}`);
      const echo = await get(proxyPort, `http://api.example.test:${port}/v1/echo`);
      expect(echo.status).toBe(200);
      expect(JSON.parse(echo.body.toString())).toMatchObject({ method: "GET", url: "/v1/echo" });
      // Through the hosts entry: origin-form on the endpoint's own port.
      const direct = await get(port, "/v1/direct", { host: `api.example.test:${port}` });
      expect(direct.status).toBe(200);
      // Bigger than a window each way, several at once.
      const big = Buffer.alloc(700 * 1024, 0x42);
      const results = await Promise.all([get(proxyPort, `http://api.example.test:${port}/v1/bytes/${3 << 20}`), get(proxyPort, `http://api.example.test:${port}/v1/echo`, { "content-type": "text/plain" }, big), get(proxyPort, `http://api.example.test:${port}/v1/bytes/100`)]);
      expect(results.map((r) => [r.status, r.body.length])).toEqual([
        [200, 3 << 20],
        [200, expect.any(Number)],
        [200, 100],
      ]);
      expect(JSON.parse(results[1].body.toString())).toMatchObject({ method: "POST", bodyLength: big.length });
      expect(scope.current).toBe("USER_PRIVATE");
    } finally {
      await agent.stop();
      egress.stop();
      await close();
      await server.close();
    }
  }, 30_000);
});
