// Issue 2's figures: how long the pair takes to be ready (both guests' programs running) against
// the boot of a minimal VM (same kernel, busybox-only initrd, to init) under the same accelerator,
// in the same run; and image build time, cold and cached. Issue 12, point 1: beside them, the same
// minimal boot but with node's first start (the sandbox image's initrd, with an /init that runs
// `node -e` and nothing of airlock): under TCG node's first start is ~2 s of translating its code
// (a second start in the same guest takes ~0.3 s), a floor no airlock guest program avoids.
import { copyFileSync, createWriteStream, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { finished } from "node:stream/promises";
import { writeCpio } from "../../host-tools/src/images/cpio.ts";
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

/** Start (paused) → checks skipped → resume → the init's line `marker`, through the launcher's own Vm class. */
async function bootMinimal(accel: Accel, dir: string, image?: { dir: string; cmdline: string }, marker = "airlock-guest: minimal init"): Promise<number> {
  let minimal = image;
  if (!minimal) {
    const built = await buildImage("minimal");
    minimal = { dir: built.dir, cmdline: built.info.cmdline };
  }
  const vm = new Vm({ pair: "bench", role: "minimal", imageDir: minimal.dir, cmdline: minimal.cmdline, memoryMiB: 1024, vcpus: 1, accel, qmpSocket: path.join(dir, "minimal.qmp"), console: "stdio" }, silentLogger);
  const t0 = performance.now();
  const seen = new Promise<void>((resolve) => vm.on("line", (l) => l.includes(marker) && resolve()));
  await vm.start();
  await vm.resume();
  await seen;
  const ms = performance.now() - t0;
  await vm.stop();
  return ms;
}

const NODE_MARKER = "airlock-guest: node ran";

/** The sandbox image with an /init that starts node once and says so (an overlay archive on its initrd). */
async function nodeOnlyImage(sandbox: { dir: string; info: { cmdline: string } }, dir: string): Promise<{ dir: string; cmdline: string }> {
  const out = path.join(dir, "node-only");
  mkdirSync(out);
  symlinkSync(path.join(sandbox.dir, "vmlinuz"), path.join(out, "vmlinuz"));
  copyFileSync(path.join(sandbox.dir, "initrd.img"), path.join(out, "initrd.img"));
  const overlay = createWriteStream(path.join(out, "initrd.img"), { flags: "a" });
  const init = `#!/bin/sh\n/bin/node -e 'console.log("${NODE_MARKER}")'\npoweroff -f\n`;
  await writeCpio(overlay, [{ path: "init", type: "file", mode: 0o755, data: Buffer.from(init) }]);
  overlay.end();
  await finished(overlay);
  return { dir: out, cmdline: sandbox.info.cmdline };
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
  const nodeOnly: number[] = [];
  const ready: number[] = [];
  const withNode = await nodeOnlyImage(await buildImage("sandbox", { workloadDir }), state);
  for (let i = 0; i < RUNS; i++) {
    minimal.push(await bootMinimal(accel, state));
    nodeOnly.push(await bootMinimal(accel, state, withNode, NODE_MARKER));
    const pair = new Pair({ name: `bench-${i}`, manifestPath: HELLO, accel, debug: false, hold: true, log: silentLogger });
    await pair.start();
    ready.push(pair.current.readyMs!);
    await pair.stop("benchmark done");
    pair.dir.remove();
    report.log(`run ${i + 1}: minimal VM ${(minimal[i]! / 1000).toFixed(2)} s, node's first line ${(nodeOnly[i]! / 1000).toFixed(2)} s, pair ready ${(ready[i]! / 1000).toFixed(2)} s`);
  }
  report.figure(`minimal VM boot to init (${accel})`, median(minimal) / 1000, "s", `median of ${RUNS}`);
  report.figure(`same boot to node's first line, sandbox initrd (${accel})`, median(nodeOnly) / 1000, "s", `median of ${RUNS}`);
  report.figure(`pair ready, both programs running (${accel})`, median(ready) / 1000, "s", `median of ${RUNS}`);
  report.ratio("pair ready / minimal VM boot", median(ready) / median(minimal), "≤ 1.3");
  report.ratio("node's first line / minimal VM boot (the floor for a node guest)", median(nodeOnly) / median(minimal));
  report.ratio("pair ready / node's first line", median(ready) / median(nodeOnly));
  rmSync(state, { recursive: true, force: true });
}
