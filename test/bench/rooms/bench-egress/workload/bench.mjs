// The egress bench's workload (test/bench/egress.bench.ts): inside the sandbox, times GETs to the
// trusted endpoint through the agent's HTTP proxy on 127.0.0.1:3128 (proxy-form requests, one
// keep-alive connection to the agent; the firewall opens a pinned TLS connection per request), and
// writes the times as JSON to the open output. Times are on the guest's clock.
import http from "node:http";
import { writeFileSync } from "node:fs";

const PORT = process.env.API_PORT;
const SMALL = Number(process.env.SMALL);
const BIG = Number(process.env.BIG);
const BIG_ROUNDS = Number(process.env.BIG_ROUNDS);
const OUT = "/data/out/figures/figures.json";
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function get(path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: 3128, path: `http://api.example.test:${PORT}/v1/${path}`, agent }, (res) => {
      let n = 0;
      res.on("data", (c) => (n += c.length));
      res.on("end", () => (res.statusCode === 200 ? resolve(n) : reject(new Error(`${path}: HTTP ${res.statusCode}`))));
      res.on("error", reject);
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`${path}: no answer within 60 s`)));
    req.on("error", reject);
    req.end();
  });
}

async function timed(path) {
  const t0 = performance.now();
  const n = await get(path);
  return [performance.now() - t0, n];
}

const figures = { small: [], big: [], bigBytes: BIG };
try {
  await get("hello");
  for (let i = 0; i < SMALL; i++) figures.small.push((await timed("hello"))[0]);
  await get(`bytes/${BIG}`);
  for (let i = 0; i < BIG_ROUNDS; i++) {
    const [ms, n] = await timed(`bytes/${BIG}`);
    if (n !== BIG) throw new Error(`bytes/${BIG}: got ${n} bytes`);
    figures.big.push(ms);
  }
} catch (err) {
  figures.error = String(err && err.message ? err.message : err).slice(0, 500);
}
agent.destroy();
writeFileSync(OUT, JSON.stringify(figures));
