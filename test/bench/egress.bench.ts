// Issue 10's figures: the firewall's HTTP egress proxy (the proxy code alone, on loopback) against
// direct requests to the same HTTPS server (in a thread of its own), in the same run, alternated: throughput of 4 MiB
// answers, and the latency of small requests (p50/p99) — each request through the proxy opens its
// own pinned TLS connection from the "firewall", as a direct request here does too (no keep-alive
// either way). Inside a pair under TCG the figure is reported by the egress room test's timings.
import https from "node:https";
import http from "node:http";
import net from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { silentLogger } from "../../proto/src/log.ts";
import { ScopeTracker } from "../../firewall-vm/src/policy/index.ts";
import { HttpEgressProxy } from "../../firewall-vm/src/proxies/http/index.ts";
import { Worker } from "node:worker_threads";
import { makePki } from "../egress/server.ts";
import type { Reporter } from "./harness.ts";

const HOST = "api.example.test";
const BIG = 4 * 1024 * 1024;
const ROUNDS = 9;
const SMALL = 300;

function fetchAll(make: () => http.ClientRequest): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = make();
    req.on("response", (res) => {
      let n = 0;
      res.on("data", (c: Buffer) => (n += c.length));
      res.on("end", () => resolve(n));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;

export default async function bench(report: Reporter): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), "airlock-bench-egress-"));
  const pki = makePki(dir, HOST);
  const tsx = JSON.stringify(import.meta.resolve("tsx/esm/api"));
  const entry = JSON.stringify(new URL("./egress-server.worker.ts", import.meta.url).href);
  const worker = new Worker(`import(${tsx}).then((api) => { api.register(); return import(${entry}); })`, { eval: true, workerData: pki });
  const server = { port: await new Promise<number>((resolve) => worker.once("message", resolve)) };
  const proxy = new HttpEgressProxy({
    entries: [{ name: "api", url: `https://${HOST}/v1/`, methods: ["GET"], mode: "trusted", scope: "USER_PRIVATE", tls: { caPem: pki.caPem }, rules: { maxRequestBytes: 1024, maxResponseBytes: 64 << 20, headers: [] } }],
    scope: new ScopeTracker("PUBLIC"),
    audit: { append: async () => undefined },
    log: silentLogger,
    upstream: () => ({ host: "127.0.0.1", port: server.port }),
  });
  // The agent's side (here a loopback listener) sends as soon as it has bytes, as a vsock stream does.
  const front = net.createServer({ noDelay: true }, (s) => proxy.handle(s, 3128));
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  const frontPort = (front.address() as net.AddressInfo).port;
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const direct = (p: string) => () => fetchAll(() => https.request({ host: "127.0.0.1", port: server.port, path: p, servername: HOST, ca: [pki.caPem], agent: false }));
  const proxied = (p: string) => () => fetchAll(() => http.request({ host: "127.0.0.1", port: frontPort, path: `http://${HOST}${p}`, agent: keepAlive }));
  try {
    const times: [number[], number[]] = [[], []];
    const lat: [number[], number[]] = [[], []];
    for (const f of [direct, proxied]) await f(`/v1/bytes/${BIG}`)();
    for (let i = 0; i < ROUNDS; i++) {
      for (const which of i % 2 ? [1, 0] : [0, 1]) {
        const t0 = performance.now();
        const n = await (which === 0 ? direct : proxied)(`/v1/bytes/${BIG}`)();
        if (n !== BIG) throw new Error(`got ${n} bytes`);
        times[which]!.push(performance.now() - t0);
      }
    }
    for (let i = 0; i < SMALL; i++) {
      for (const which of i % 2 ? [1, 0] : [0, 1]) {
        const t0 = performance.now();
        await (which === 0 ? direct : proxied)("/v1/hello")();
        lat[which]!.push(performance.now() - t0);
      }
    }
    const mbps = (ms: number) => BIG / 1e6 / (ms / 1000);
    const [d, p] = [pct(times[0], 50), pct(times[1], 50)];
    report.figure("direct throughput, 4 MiB answers over TLS", mbps(d), "MB/s", `median of ${ROUNDS}`);
    report.figure("through the egress proxy (loopback)", mbps(p), "MB/s", `median of ${ROUNDS}`);
    report.ratio("egress proxy ÷ direct throughput", d / p, "≥ 0.8");
    report.figure("direct latency p50 / p99, small GET", pct(lat[0], 50), "ms", `p99 ${pct(lat[0], 99).toFixed(2)} ms, ${SMALL} requests`);
    report.figure("through the proxy p50 / p99", pct(lat[1], 50), "ms", `p99 ${pct(lat[1], 99).toFixed(2)} ms`);
    report.figure("added by the proxy at p99", pct(lat[1], 99) - pct(lat[0], 99), "ms", "aim < 1 ms");
  } finally {
    keepAlive.destroy();
    proxy.stop();
    front.close();
    worker.postMessage("stop");
    await new Promise((r) => worker.once("exit", r));
    rmSync(dir, { recursive: true, force: true });
  }
}
