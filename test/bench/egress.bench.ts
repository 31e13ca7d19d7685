// Issue 10's figures: the firewall's HTTP egress proxy (the proxy code alone, on loopback) against
// direct requests to the same HTTPS server (in a thread of its own), in the same run, alternated: throughput of 4 MiB
// answers, and the latency of small requests (p50/p99) — each request through the proxy opens its
// own pinned TLS connection from the "firewall", as a direct request here does too (no keep-alive
// either way).
// Then the same figures INSIDE a pair under TCG, as they are: the real CLI runs one room
// (rooms/bench-egress) whose node workload times GETs to the same server through the agent's
// loopback proxy, the attested channel, the firewall's proxy and its NIC, and releases its times
// through an open output; each is printed beside its ratio to the host-direct figure of this run.
// AIRLOCK_BENCH_QUICK=1 skips the pair (logged).
import https from "node:https";
import http from "node:http";
import net from "node:net";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { silentLogger } from "../../proto/src/log.ts";
import { ScopeTracker } from "../../firewall-vm/src/policy/index.ts";
import { HttpEgressProxy } from "../../firewall-vm/src/proxies/http/index.ts";
import { makePki, type TestPki } from "../egress/server.ts";
import { airlock, killQemus } from "../helpers.ts";
import { copyRoom, removeRoom } from "../room/room-setup.ts";
import { tsWorker } from "./harness.ts";
import type { Reporter } from "./harness.ts";

const HOST = "api.example.test";
const BIG = 4 * 1024 * 1024;
const ROUNDS = 9;
const SMALL = 300;
// Inside the pair (TCG): fewer, so that the whole bench stays near two minutes.
const PAIR_SMALL = 50;
const PAIR_BIG_ROUNDS = 4;
const PAIR_TIMEOUT_MS = 150_000;

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
  const worker = tsWorker(new URL("./egress-server.worker.ts", import.meta.url), pki);
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

    if (process.env.AIRLOCK_BENCH_QUICK) {
      report.log("AIRLOCK_BENCH_QUICK is set: the figures inside a pair under TCG are skipped");
      return;
    }
    const pair = await inPair(report, pki, server.port);
    const directMbps = mbps(d);
    const pairMbps = mbps(pct(pair.big, 50));
    report.figure("in a pair (TCG): sandbox → agent → channel → firewall → NIC, 4 MiB answers", pairMbps, "MB/s", `median of ${pair.big.length}, guest clock`);
    // A figure, not a ratio row: at three decimals this ratio would read 0.00x.
    report.figure("in pair ÷ host direct, throughput", pairMbps / directMbps, "ratio", `same run; reported as it is (host direct ${(directMbps / pairMbps).toFixed(0)}× faster)`);
    report.figure("in a pair (TCG): latency p50 / p99, small GET", pct(pair.small, 50), "ms", `p99 ${pct(pair.small, 99).toFixed(1)} ms (the slowest of ${pair.small.length}), guest clock`);
    report.ratio("in pair ÷ host direct, latency p50", pct(pair.small, 50) / pct(lat[0], 50), "reported as it is");
    report.ratio("in pair ÷ host direct, latency p99", pct(pair.small, 99) / pct(lat[0], 99), "reported as it is");
    report.figure("in a pair (TCG): the room run, end to end", pair.seconds, "s", "airlock run: images, boot, attestation, workload, outputs, teardown");
  } finally {
    keepAlive.destroy();
    proxy.stop();
    front.close();
    worker.postMessage("stop");
    await new Promise((r) => worker.once("exit", r));
    rmSync(dir, { recursive: true, force: true });
  }
}

interface PairFigures {
  small: number[];
  big: number[];
  seconds: number;
}

/** Runs rooms/bench-egress with the real CLI under TCG against the bench's server; returns the workload's times. */
async function inPair(report: Reporter, pki: TestPki, port: number): Promise<PairFigures> {
  const room = copyRoom(path.join(import.meta.dirname, "rooms/bench-egress"));
  let ok = false;
  try {
    const certs = path.join(room.dir, "room/certs");
    mkdirSync(certs, { recursive: true });
    writeFileSync(path.join(certs, "ca.pem"), pki.caPem);
    const vars: Record<string, number> = { API_PORT: port, SMALL: PAIR_SMALL, BIG, BIG_ROUNDS: PAIR_BIG_ROUNDS };
    let manifest = readFileSync(path.join(room.dir, "room/room.yaml.in"), "utf8");
    for (const [k, v] of Object.entries(vars)) manifest = manifest.replaceAll(`@${k}@`, String(v));
    writeFileSync(room.manifest, manifest);
    const out = path.join(room.dir, "out");
    report.log(`running rooms/bench-egress under TCG (${PAIR_SMALL} small GETs, ${PAIR_BIG_ROUNDS} × 4 MiB)`);
    const t0 = performance.now();
    // The host resolves the endpoint's name to its loopback, where the bench's server listens.
    const r = await airlock(["run", room.manifest, "--out", out, "--accel", "tcg"], { ...room.env, AIRLOCK_EGRESS_RESOLVE: `${HOST}=127.0.0.1` }, PAIR_TIMEOUT_MS);
    const seconds = (performance.now() - t0) / 1000;
    if (r.code !== 0) throw new Error(`airlock run exited ${r.code ?? r.signal}:\n${r.stderr.slice(-4000)}`);
    const figures = JSON.parse(readFileSync(path.join(out, "figures/figures.json"), "utf8")) as { small: number[]; big: number[]; bigBytes: number; error?: string };
    if (figures.error) throw new Error(`the workload failed: ${figures.error}`);
    if (figures.small.length !== PAIR_SMALL || figures.big.length !== PAIR_BIG_ROUNDS) throw new Error(`the workload reported ${figures.small.length} small and ${figures.big.length} large requests`);
    ok = true;
    return { small: figures.small, big: figures.big, seconds };
  } finally {
    // The room is named bench-egress so that no other test's killQemus("egress") matches its QEMUs.
    killQemus("bench-egress");
    if (!ok) report.log(`the failed run's room and pair logs are kept: ${room.dir}, ${room.state}`);
    else removeRoom(room);
  }
}
