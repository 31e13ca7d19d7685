// `npm run fuzz [-- options]`: mutation fuzzing of the vhost-user ring fuzzer and of every decoder
// that reads guest- or user-supplied bytes (test/fuzz/targets/). Deterministic from --seed: decoder
// case i of a target is a function of (seed, target, i) alone (--replay i runs it again); the ring
// fuzzer is one stream of episodes from the seed. The cases run in a worker thread; this thread
// watches its heartbeat, so a case that never returns is reported with its input (and the worker is
// restarted for the remaining targets).
//
//   --seed N          run seed (default 0x5eed; decimal or 0x hex)
//   --cases N         cases per group: N ring cases, and N decoder cases split evenly across the
//                     decoder targets (default 100000)
//   --ring-cases N    override the ring group's count
//   --decoder-cases N override the decoder group's count
//   --only A,B        targets by name or name prefix ("ring", "age", "vsock-packet", ...)
//   --timeout MS      per-case bound; a case that takes longer fails as a hang (default 2000)
//   --replay I        run decoder case I of the one --only target, print its input and outcome
//   --list            list the targets
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Worker } from "node:worker_threads";
import { caseInput, runCase, type CaseFailure } from "./engine.ts";
import { hexDump } from "./mutate.ts";
import { DECODER_TARGETS, RING_TARGET, RING_WHAT } from "./targets/index.ts";
import { ringSnapshotLayout } from "../../host-tools/src/fabric/ring-fuzz.ts";
import { HEARTBEAT_SLOTS, INPUT_CAPACITY, INPUT_OFFSET, type PlanItem, type TargetResult, type WorkerInput, type WorkerMessage } from "./worker-protocol.ts";

interface Options {
  seed: number;
  cases: number;
  ringCases?: number;
  decoderCases?: number;
  only?: string[];
  timeoutMs: number;
  replay?: number;
  list: boolean;
}

function usage(msg: string): never {
  console.error(`fuzz: ${msg}\nusage: npm run fuzz -- [--seed N] [--cases N] [--ring-cases N] [--decoder-cases N] [--only A,B] [--timeout MS] [--replay I] [--list]`);
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const o: Options = { seed: 0x5eed, cases: 100_000, timeoutMs: 2000, list: false };
  const num = (v: string | undefined, flag: string): number => {
    const n = v !== undefined && /^(0x[0-9a-f]+|\d+)$/i.test(v) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < 0) usage(`${flag} needs a non-negative integer, got ${JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = (): string => inline ?? argv[++i] ?? usage(`${flag} needs a value`);
    if (flag === "--seed") o.seed = num(value(), flag) >>> 0;
    else if (flag === "--cases") o.cases = num(value(), flag);
    else if (flag === "--ring-cases") o.ringCases = num(value(), flag);
    else if (flag === "--decoder-cases") o.decoderCases = num(value(), flag);
    else if (flag === "--only") o.only = value().split(",").map((s) => s.trim()).filter(Boolean);
    else if (flag === "--timeout") o.timeoutMs = Math.max(1, num(value(), flag));
    else if (flag === "--replay") o.replay = num(value(), flag);
    else if (flag === "--list") o.list = true;
    else usage(`unknown option ${a}`);
  }
  return o;
}

const ALL = [RING_TARGET, ...DECODER_TARGETS.map((t) => t.name)];

function selected(o: Options): string[] {
  if (!o.only) return ALL;
  const out = ALL.filter((n) => o.only!.some((s) => n === s || n.startsWith(s)));
  const unknown = o.only.filter((s) => !ALL.some((n) => n === s || n.startsWith(s)));
  if (unknown.length > 0) usage(`no target named ${unknown.join(", ")} (targets: ${ALL.join(", ")})`);
  return out;
}

function plan(o: Options): PlanItem[] {
  const names = selected(o);
  const items: PlanItem[] = [];
  if (names.includes(RING_TARGET)) items.push({ target: RING_TARGET, cases: o.ringCases ?? o.cases });
  const decoders = names.filter((n) => n !== RING_TARGET);
  const total = o.decoderCases ?? o.cases;
  decoders.forEach((n, i) => items.push({ target: n, cases: Math.floor(total / decoders.length) + (i < total % decoders.length ? 1 : 0) }));
  return items;
}

const failureDir = path.join(os.tmpdir(), "airlock-fuzz-failures");

function printFailure(f: CaseFailure): void {
  mkdirSync(failureDir, { recursive: true });
  const file = path.join(failureDir, `${f.target}-seed${f.seed}-case${f.index}.bin`);
  writeFileSync(file, f.input);
  const replay =
    f.index < 0
      ? `npm run fuzz -- --only ${f.target} --seed ${f.seed} (it failed before its first case)`
      : f.target === RING_TARGET
        ? `npm run fuzz -- --only ring --seed ${f.seed} --ring-cases ${f.index + 1}`
        : `npm run fuzz -- --only ${f.target} --seed ${f.seed} --replay ${f.index}`;
  console.log(`\nFAILURE  target ${f.target}  seed ${f.seed}  case ${f.index}  (${f.kind})`);
  console.log(f.message.split("\n").map((l) => `  ${l}`).join("\n"));
  console.log(`  input (${f.target === RING_TARGET ? `the hostile guest's rings: ${ringSnapshotLayout()}` : "the bytes the decoder got"}), saved to ${file}:`);
  console.log(hexDump(f.input).split("\n").map((l) => `  ${l}`).join("\n"));
  console.log(`  reproduce: ${replay}\n`);
}

function fmtRate(cases: number, ms: number): string {
  const r = ms > 0 ? (cases * 1000) / ms : 0;
  return r >= 100 ? r.toFixed(0) : r.toFixed(1);
}

async function replay(o: Options): Promise<void> {
  const names = selected(o).filter((n) => n !== RING_TARGET);
  if (names.length !== 1) usage("--replay needs --only naming exactly one decoder target");
  const t = await DECODER_TARGETS.find((x) => x.name === names[0])!.create();
  try {
    const { input, rng } = caseInput(t, o.seed, o.replay!);
    console.log(`target ${t.name}  seed ${o.seed}  case ${o.replay}`);
    console.log(hexDump(input, 1 << 20));
    const r = await runCase(t, input, rng, o.timeoutMs);
    if (r.failure) {
      printFailure({ target: t.name, seed: o.seed, index: o.replay!, input, ...r.failure });
      process.exitCode = 1;
    } else {
      console.log(r.accepted ? "accepted" : "refused, as documented");
    }
  } finally {
    await t.close?.();
  }
}

async function fuzz(o: Options): Promise<void> {
  const items = plan(o);
  const shared = new SharedArrayBuffer(INPUT_OFFSET + INPUT_CAPACITY);
  const beat = new Float64Array(shared, 0, HEARTBEAT_SLOTS);
  const bytes = new Uint8Array(shared, INPUT_OFFSET, INPUT_CAPACITY);
  const results = new Map<number, TargetResult>();
  const failures: CaseFailure[] = [];
  const started = Date.now();
  console.log(`fuzz: seed ${o.seed}, per-case bound ${o.timeoutMs} ms; ${items.map((i) => `${i.target} ${i.cases}`).join(", ")}`);

  let first = 0;
  while (first < items.length) {
    const outcome = await new Promise<{ restartAt: number | null }>((resolve) => {
      beat.fill(0);
      // The worker registers tsx's loader for its own thread, then loads the TypeScript entry.
      const entry = JSON.stringify(new URL("./worker.ts", import.meta.url).href);
      const tsx = JSON.stringify(import.meta.resolve("tsx/esm/api"));
      const w = new Worker(`import(${tsx}).then((api) => { api.register(); return import(${entry}); })`, { eval: true, workerData: { seed: o.seed, caseTimeoutMs: o.timeoutMs, plan: items, first, shared } satisfies WorkerInput });
      let current = first;
      let finished = false;
      let lastProgress = Date.now();
      const stop = (failure: Omit<CaseFailure, "target" | "seed" | "index" | "input">): void => {
        if (finished) return;
        finished = true;
        clearInterval(timer);
        // The heartbeat names the case running now (the worker's "start" message may still be in flight).
        if (beat[2] > 0) current = beat[0];
        const item = items[current]!;
        const index = beat[2] > 0 ? beat[1] : -1;
        const input = Buffer.from(bytes.subarray(0, Math.min(beat[3], INPUT_CAPACITY)));
        const f: CaseFailure = { target: item.target, seed: o.seed, index, input, ...failure };
        failures.push(f);
        printFailure(f);
        results.set(current, { type: "result", plan: current, target: item.target, cases: Math.max(0, index + 1), accepted: 0, ms: 0, failures: [f] });
        void w.terminate().then(() => resolve({ restartAt: current + 1 }));
      };
      const timer = setInterval(() => {
        const t = beat[2];
        if (t > 0 && Date.now() - t > o.timeoutMs + 1000) {
          stop({ kind: "hang", message: `no return from the case after ${Date.now() - t} ms (bound ${o.timeoutMs} ms): an endless loop or a stall` });
          return;
        }
        if (Date.now() - lastProgress >= 30_000) {
          lastProgress = Date.now();
          const item = items[current];
          if (item) console.log(`[${((Date.now() - started) / 1000).toFixed(0)} s] ${item.target}: case ${beat[1]} of ${item.cases}`);
        }
      }, 100);
      w.on("message", (m: WorkerMessage) => {
        if (m.type === "start") current = m.plan;
        else if (m.type === "result") {
          results.set(m.plan, m);
          for (const f of m.failures) {
            f.input = Buffer.from(f.input);
            failures.push(f);
            printFailure(f);
          }
          const rate = fmtRate(m.cases, m.ms);
          console.log(`done ${m.target}: ${m.cases} cases in ${(m.ms / 1000).toFixed(1)} s (${rate}/s)${m.failures.length ? `, ${m.failures.length} failure(s)` : ""}`);
        } else if (m.type === "done") {
          finished = true;
          clearInterval(timer);
          resolve({ restartAt: null });
        }
      });
      w.on("error", (err) => stop({ kind: "crash", message: `the worker died on an uncaught error (outside the decoder's own call, e.g. a late async throw): ${err.stack ?? String(err)}` }));
      w.on("exit", (code) => {
        if (!finished) stop({ kind: "crash", message: `the worker exited (code ${code}) in the middle of the target` });
      });
    });
    first = outcome.restartAt ?? items.length;
  }

  const wall = (Date.now() - started) / 1000;
  console.log(`\n${"target".padEnd(14)}${"cases".padStart(10)}${"seconds".padStart(10)}${"cases/s".padStart(10)}${"accepted".padStart(10)}  failures`);
  let ring = 0;
  let decoder = 0;
  items.forEach((item, i) => {
    const r = results.get(i);
    const cases = r?.cases ?? 0;
    if (item.target === RING_TARGET) ring += cases;
    else decoder += cases;
    const acc = r && r.cases > 0 ? `${((100 * r.accepted) / r.cases).toFixed(1)}%` : "-";
    console.log(`${item.target.padEnd(14)}${String(cases).padStart(10)}${((r?.ms ?? 0) / 1000).toFixed(1).padStart(10)}${fmtRate(cases, r?.ms ?? 0).padStart(10)}${acc.padStart(10)}  ${r?.failures.length ?? 0}${r?.note ? `  (${r.note})` : ""}`);
  });
  console.log(`wall time ${wall.toFixed(1)} s`);
  console.log(`ring cases: ${ring}, decoder cases: ${decoder}, failures: ${failures.length}`);
  process.exitCode = failures.length > 0 ? 1 : 0;
}

const o = parseArgs(process.argv.slice(2));
if (o.list) {
  console.log(`${RING_TARGET.padEnd(14)}${RING_WHAT}`);
  for (const t of DECODER_TARGETS) console.log(`${t.name.padEnd(14)}${t.what}`);
} else if (o.replay !== undefined) {
  await replay(o);
} else {
  await fuzz(o);
}
