// Issue 2's figures: how long the pair takes to be ready (both guests' programs running) against
// the boot of a minimal VM (same kernel, busybox-only initrd, to init) under the same accelerator,
// in the same run; and image build time, cold and cached.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { buildImage } from "../../host-tools/src/images/build.ts";
import { chooseAccel } from "../../host-tools/src/launch/accel.ts";
import { Pair } from "../../host-tools/src/launch/pair.ts";
import type { Accel } from "../../host-tools/src/launch/qemu-args.ts";
import { Vm } from "../../host-tools/src/launch/vm.ts";
import { loadManifest } from "../../proto/src/manifest/index.ts";
import { silentLogger } from "../../proto/src/log.ts";
import type { Reporter } from "./harness.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const HELLO = path.join(ROOT, "examples/hello/room.yaml");
const RUNS = Number(process.env.AIRLOCK_BENCH_RUNS ?? 3);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Start (paused) → checks skipped → resume → the minimal init's first line, through the launcher's own Vm class. */
async function bootMinimal(accel: Accel, dir: string): Promise<number> {
  const image = await buildImage("minimal");
  const vm = new Vm({ pair: "bench", role: "minimal", imageDir: image.dir, cmdline: image.info.cmdline, memoryMiB: 1024, vcpus: 1, accel, qmpSocket: path.join(dir, "minimal.qmp"), console: "stdio" }, silentLogger);
  const t0 = performance.now();
  const seen = new Promise<void>((resolve) => vm.on("line", (l) => l.includes("airlock-guest: minimal init") && resolve()));
  await vm.start();
  await vm.resume();
  await seen;
  const ms = performance.now() - t0;
  await vm.stop();
  return ms;
}

export default async function bench(report: Reporter): Promise<void> {
  const workloadDir = loadManifest(HELLO).workload.bundle;
  const savedCache = process.env.AIRLOCK_CACHE;
  const coldCache = mkdtempSync(path.join(tmpdir(), "airlock-bench-cache-"));
  process.env.AIRLOCK_CACHE = coldCache;
  const build = () => Promise.all([buildImage("firewall"), buildImage("sandbox", { workloadDir })]);
  const cold = await timeIt(build);
  const cached = await timeIt(build);
  report.figure("image build, cold (firewall + sandbox)", cold / 1000, "s");
  report.figure("image build, cached", cached, "ms");
  rmSync(coldCache, { recursive: true, force: true });
  if (savedCache === undefined) delete process.env.AIRLOCK_CACHE;
  else process.env.AIRLOCK_CACHE = savedCache;

  const state = mkdtempSync(path.join(tmpdir(), "airlock-bench-state-"));
  process.env.AIRLOCK_STATE = state;
  const accel = await chooseAccel("auto", silentLogger);
  report.log(`accelerator: ${accel}`);

  const minimal: number[] = [];
  const ready: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    minimal.push(await bootMinimal(accel, state));
    const pair = new Pair({ name: `bench-${i}`, manifestPath: HELLO, accel, debug: false, hold: true, log: silentLogger });
    await pair.start();
    ready.push(pair.current.readyMs!);
    await pair.stop("benchmark done");
    pair.dir.remove();
    report.log(`run ${i + 1}: minimal VM ${(minimal[i]! / 1000).toFixed(2)} s, pair ready ${(ready[i]! / 1000).toFixed(2)} s`);
  }
  report.figure(`minimal VM boot to init (${accel})`, median(minimal) / 1000, "s", `median of ${RUNS}`);
  report.figure(`pair ready, both programs running (${accel})`, median(ready) / 1000, "s", `median of ${RUNS}`);
  report.ratio("pair ready / minimal VM boot", median(ready) / median(minimal), "≤ 1.5");
  rmSync(state, { recursive: true, force: true });
}
