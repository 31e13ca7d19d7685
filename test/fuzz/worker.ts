// The worker thread of `npm run fuzz`: runs the planned targets one after the other and reports
// each one's figures and failures. Before every case it writes a heartbeat (target, case index,
// start time) and the case's input into shared memory, so the main thread can name and dump a case
// that never returns (an endless loop cannot be caught from inside this thread).
import { parentPort, workerData } from "node:worker_threads";
import { RingFuzzer, prng } from "../../host-tools/src/fabric/ring-fuzz.ts";
import { checkSeeds, runDecoder, type CaseFailure } from "./engine.ts";
import { DECODER_TARGETS, RING_TARGET } from "./targets/index.ts";
import { HEARTBEAT_SLOTS, INPUT_CAPACITY, INPUT_OFFSET, type WorkerInput, type WorkerMessage } from "./worker-protocol.ts";

/** Each kind of process warning once (the yaml package warns on every mapping key that is a collection). */
function quietWarnings(): void {
  const seen = new Set<string>();
  const emit = process.emitWarning.bind(process);
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const key = (typeof warning === "string" ? warning : warning.message).slice(0, 40);
    if (seen.has(key)) return;
    seen.add(key);
    (emit as (w: string | Error, ...r: unknown[]) => void)(warning, ...rest);
  }) as typeof process.emitWarning;
}

async function main(): Promise<void> {
  quietWarnings();
  const input = workerData as WorkerInput;
  const beat = new Float64Array(input.shared, 0, HEARTBEAT_SLOTS);
  const bytes = new Uint8Array(input.shared, INPUT_OFFSET, INPUT_CAPACITY);
  const post = (m: WorkerMessage): void => parentPort!.postMessage(m);
  const heartbeat = (plan: number, index: number, data?: Uint8Array): void => {
    beat[0] = plan;
    beat[1] = index;
    if (data) {
      const n = Math.min(data.length, INPUT_CAPACITY);
      bytes.set(data.subarray(0, n));
      beat[3] = data.length;
    }
    beat[2] = Date.now();
  };

  for (let p = input.first; p < input.plan.length; p++) {
    const item = input.plan[p]!;
    post({ type: "start", plan: p, target: item.target });
    if (item.target === RING_TARGET) {
      const fz = new RingFuzzer(prng(input.seed));
      const failures: CaseFailure[] = [];
      const t0 = performance.now();
      let lastYield = t0;
      while (fz.cases < item.cases) {
        const f = fz.episode({ caseStart: (i) => heartbeat(p, i - 1, new Uint8Array(0)), caseInput: (snap) => heartbeat(p, fz.cases - 1, snap()) });
        if (f) {
          failures.push({ target: RING_TARGET, seed: input.seed, index: f.case - 1, kind: "crash", message: `episode ${f.episode}, action ${f.action}: ${f.message}`, input: f.input });
          break;
        }
        if (performance.now() - lastYield > 50) {
          await new Promise((resolve) => setImmediate(resolve));
          lastYield = performance.now();
        }
      }
      beat[2] = 0;
      post({ type: "result", plan: p, target: RING_TARGET, cases: fz.cases, accepted: fz.cases, ms: performance.now() - t0, note: `${fz.episodes} episodes, ${fz.cutOff} ended with the hostile guest cut off`, failures });
      continue;
    }
    const factory = DECODER_TARGETS.find((t) => t.name === item.target)!;
    const target = await factory.create();
    try {
      await checkSeeds(target, input.caseTimeoutMs);
      const r = await runDecoder(target, { seed: input.seed, cases: item.cases, caseTimeoutMs: input.caseTimeoutMs, onCase: (i, data) => heartbeat(p, i, data) });
      beat[2] = 0;
      post({ type: "result", plan: p, target: item.target, cases: r.cases, accepted: r.accepted, ms: r.ms, failures: r.failures });
    } finally {
      await target.close?.();
    }
  }
  post({ type: "done" });
}

await main();
