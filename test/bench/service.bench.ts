// Issue 11's figures, inside a pair under TCG: unary calls to test/rooms/service's Node server
// through the firewall's EzPublicApi (TLS on the host's forwarded port, the firewall's decision,
// the attested agent channel, the agent's stream to the server), against the same calls made to
// the same server from inside the sandbox (its Inside method: a Node client beside the server, each
// call on its own connection as the firewall's are), alternated in rounds within one run.
// Latency p50/p99 of sequential calls, calls per second with 8 in flight, and the time of a reset
// (the firewall's own record: service.reset to the new instance's service.ready; and as the
// resetting call's caller sees it).
import { readFileSync } from "node:fs";
import path from "node:path";
import { X25519Identity } from "../../proto/src/age/index.ts";
import { RoomClient } from "../../host-tools/src/service/client.ts";
import { airlock, killQemus, repoRoot, testStateDir } from "../helpers.ts";
import type { Reporter } from "./harness.ts";

const NAME = "bench-svc";
const quick = process.env.AIRLOCK_BENCH_QUICK === "1";
const ROUNDS = quick ? 1 : 3;
const SEQ = quick ? 30 : 100;
const PAR = quick ? 60 : 200;
const CONCURRENCY = 8;
const RESETS = quick ? 1 : 3;

const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;
const median = (xs: number[]): number => pct(xs, 50);

export default async function bench(report: Reporter): Promise<void> {
  const state = testStateDir();
  const env = { AIRLOCK_STATE: state };
  const up = await airlock(["up", path.join(repoRoot, "test/rooms/service/room.yaml"), "--name", NAME, "--json"], env, 300_000);
  if (up.code !== 0) throw new Error(`airlock up failed: ${up.stderr}`);
  try {
    const s = JSON.parse((await airlock(["status", NAME, "--json"], env)).stdout) as { manifestDigest: string; service: { endpoint: string } };
    const client = await RoomClient.connect({ endpoint: s.service.endpoint, digest: s.manifestDigest, trustRoots: [readFileSync(path.join(state, "psp/ark.pem"), "latin1")] });
    const body = Buffer.alloc(16, 0x62);
    const echo = async (): Promise<number> => {
      const t0 = performance.now();
      await client.call("demo.Echo", "Echo", body);
      return performance.now() - t0;
    };
    const inside = async (n: number, c: number): Promise<{ times: number[]; wallMs: number }> => JSON.parse((await client.call("demo.Echo", "Inside", Buffer.from(JSON.stringify({ n, c })))).output!.toString()) as { times: number[]; wallMs: number };
    for (let i = 0; i < 20; i++) await echo(); // warm up both paths
    await inside(20, 1);
    const fw = { p50: [] as number[], p99: [] as number[], rate: [] as number[] };
    const sb = { p50: [] as number[], p99: [] as number[], rate: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) {
      const times: number[] = [];
      for (let i = 0; i < SEQ; i++) times.push(await echo());
      fw.p50.push(pct(times, 50));
      fw.p99.push(pct(times, 99));
      const local = await inside(SEQ, 1);
      sb.p50.push(pct(local.times, 50));
      sb.p99.push(pct(local.times, 99));
      const t0 = performance.now();
      let next = 0;
      await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
        while (next < PAR) {
          next++;
          await echo();
        }
      }));
      fw.rate.push(PAR / ((performance.now() - t0) / 1000));
      const par = await inside(PAR, CONCURRENCY);
      sb.rate.push(PAR / (par.wallMs / 1000));
      report.log(`round ${round + 1}: firewall p50 ${fw.p50.at(-1)!.toFixed(1)} ms, inside p50 ${sb.p50.at(-1)!.toFixed(1)} ms`);
    }
    report.figure("unary p50 through the firewall", median(fw.p50), "ms", `${SEQ} sequential calls × ${ROUNDS} rounds, TCG`);
    report.figure("unary p50 inside the sandbox", median(sb.p50), "ms", "same server, same run");
    report.ratio("p50 inside ÷ through the firewall", median(sb.p50) / median(fw.p50));
    report.figure("unary p99 through the firewall", median(fw.p99), "ms");
    report.figure("unary p99 inside the sandbox", median(sb.p99), "ms");
    report.figure("calls/s through the firewall", median(fw.rate), "calls/s", `${CONCURRENCY} in flight`);
    report.figure("calls/s inside the sandbox", median(sb.rate), "calls/s", `${CONCURRENCY} in flight`);
    report.ratio("calls/s through the firewall ÷ inside", median(fw.rate) / median(sb.rate));

    // Resets: Alice's USER_PRIVATE call, then Bob's, whose answer Alice's data would keep from him.
    const seen: number[] = [];
    for (let i = 0; i < RESETS; i++) {
      await client.call("demo.Echo", "Echo", body, { scope: "USER_PRIVATE", identity: X25519Identity.generate() });
      const t0 = performance.now();
      await client.call("demo.Echo", "Echo", body, { scope: "USER_PRIVATE", identity: X25519Identity.generate() });
      seen.push(performance.now() - t0);
    }
    client.close();
    const records = readFileSync(path.join(state, "pairs", NAME, "outputs/audit.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { kind: string; time: string; data: { generation?: number } });
    const resets = records.filter((r) => r.kind === "service.reset").map((r) => {
      const ready = records.find((x) => x.kind === "service.ready" && x.data.generation === r.data.generation! + 1)!;
      return Date.parse(ready.time) - Date.parse(r.time);
    });
    report.figure("reset (firewall: reset to the new sandbox serving)", median(resets) / 1000, "s", `median of ${resets.length}; a new sandbox VM booted, attested and listening`);
    report.figure("reset as the caller sees it (the resetting call)", median(seen) / 1000, "s");
  } finally {
    await airlock(["down", NAME], env);
    killQemus(NAME);
  }
}
