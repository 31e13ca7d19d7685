// Issue 13's figures for fleets. Pairs per hour on one host: N pairs of a small room started at
// once with the real CLI (`airlock up` × N), timed from the first start to all ready and to all
// down, against one pair alone (up, ready, down) as the yardstick, the two alternated in this
// process so both see the same machine load. Extrapolated as if batches ran back to back:
// pairs/hour = N × 3600 s ÷ the batch's wall time (one pair alone: 3600 s ÷ its wall time).
// AIRLOCK_BENCH_FLEET_PAIRS sets N (default 8); AIRLOCK_BENCH_QUICK runs one round instead of two.
import path from "node:path";
import { airlock, killQemus, repoRoot, testStateDir } from "../helpers.ts";
import type { Bench, Reporter } from "./harness.ts";

const room = path.join(repoRoot, "test/fleet/rooms/small/room.yaml");
/** Per pair: 2 × 512 MiB guests + 2 × 128 MiB QEMU overhead, 2 vCPUs (fleet/capacity.ts). */
const PAIR_MIB = 1280;

async function batch(names: string[], env: NodeJS.ProcessEnv): Promise<{ readyMs: number; wallMs: number }> {
  const t0 = Date.now();
  const ups = await Promise.all(names.map((n) => airlock(["up", room, "--name", n, "--accel", "tcg"], env, 600_000)));
  const readyMs = Date.now() - t0;
  const downs = await Promise.all(names.map((n) => airlock(["down", n], env, 60_000)));
  const wallMs = Date.now() - t0;
  const bad = ups.findIndex((u) => u.code !== 0);
  if (bad >= 0 || downs.some((d) => d.code !== 0)) throw new Error(`${names[Math.max(bad, 0)]}: ${ups[Math.max(bad, 0)]!.stderr}${ups[Math.max(bad, 0)]!.stdout}`);
  return { readyMs, wallMs };
}

export async function pairsPerHour(report: Reporter): Promise<void> {
  const n = Number(process.env.AIRLOCK_BENCH_FLEET_PAIRS ?? 8);
  const rounds = process.env.AIRLOCK_BENCH_QUICK ? 1 : 2;
  const env = { AIRLOCK_STATE: testStateDir(), AIRLOCK_HOST_MEMORY_MIB: String(n * PAIR_MIB), AIRLOCK_HOST_VCPUS: String(n * 2) };
  const built = await airlock(["images", "build", "--manifest", room], env, 600_000);
  if (built.code !== 0) throw new Error(built.stderr);
  const alone: { readyMs: number; wallMs: number }[] = [];
  const many: { readyMs: number; wallMs: number }[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      report.log(`round ${r + 1}/${rounds}: one pair alone, then ${n} at once`);
      alone.push(await batch([`fleetb-one-${r}`], env));
      many.push(await batch(Array.from({ length: n }, (_, i) => `fleetb-${r}-${i}`), env));
    }
  } finally {
    killQemus("fleetb-");
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const note = `median of ${rounds}, alternated, TCG`;
  const aloneWall = median(alone.map((x) => x.wallMs));
  const manyWall = median(many.map((x) => x.wallMs));
  report.figure("one pair: up to ready", median(alone.map((x) => x.readyMs)) / 1000, "s", note);
  report.figure("one pair: up, ready, down", aloneWall / 1000, "s", note);
  report.figure(`${n} pairs at once: all ready`, median(many.map((x) => x.readyMs)) / 1000, "s", note);
  report.figure(`${n} pairs at once: all ready and down`, manyWall / 1000, "s", note);
  const serial = 3600_000 / aloneWall;
  const concurrent = (n * 3600_000) / manyWall;
  report.figure("pairs per hour, one at a time", serial, "pairs/h", "3600 s ÷ one pair's up-ready-down");
  report.figure(`pairs per hour, ${n} at a time`, concurrent, "pairs/h", `${n} × 3600 s ÷ the batch's wall time`);
  report.ratio(`pairs per hour: ${n} at a time ÷ one at a time`, concurrent / serial);
}

const bench: Bench = async (report) => {
  await pairsPerHour(report);
};
export default bench;
