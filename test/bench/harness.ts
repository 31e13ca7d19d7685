// Benchmarks are programs, not tests: each file in this folder named *.bench.ts exports a default
// function that measures and reports figures through a Reporter. `npm run bench` runs them all
// (or those whose name contains an argument: `npm run bench -- fabric`) and prints one table.
import { Worker } from "node:worker_threads";

export interface Figure {
  name: string;
  value: number;
  unit: string;
  /** How it was obtained, e.g. "median of 5". */
  note?: string;
}

export interface Reporter {
  figure(name: string, value: number, unit: string, note?: string): void;
  /** A ratio of two figures measured in the same run, with the aim the issue sets. */
  ratio(name: string, value: number, aim?: string): void;
  log(message: string): void;
}

export type Bench = (report: Reporter) => Promise<void>;

/** Runs fn `runs` times after `warmup` runs and returns the median duration in milliseconds. */
export async function medianMs(fn: () => unknown, runs = 5, warmup = 1): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** Bytes per second given a size and a duration in ms. */
export function throughput(bytes: number, ms: number): number {
  return (bytes / ms) * 1000;
}

/**
 * Runs `yardstick` and `subject` alternately (`runs` times each, after `warmup` rounds of both) so
 * that both see the same machine load, and returns their median durations in milliseconds.
 */
export async function sideBySideMs(yardstick: () => unknown, subject: () => unknown, runs = 9, warmup = 1): Promise<{ yardstick: number; subject: number }> {
  const [y, s] = await alternatedMs([yardstick, subject], runs, warmup);
  return { yardstick: y!, subject: s! };
}

/** As sideBySideMs for any number of functions: their median durations in milliseconds, in order. */
export async function alternatedMs(fns: (() => unknown)[], runs = 9, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) for (const fn of fns) await fn();
  const times: number[][] = fns.map(() => []);
  const order = fns.map((_, i) => i);
  for (let i = 0; i < runs; i++) {
    // Reverse the order every round too, so that none always runs right after another.
    for (const which of i % 2 === 0 ? order : [...order].reverse()) {
      const t0 = process.hrtime.bigint();
      await fns[which]!();
      times[which]!.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  return times.map(median);
}

/** A worker thread running a TypeScript module of this tree (tsx registered in the thread first). */
export function tsWorker(entry: URL, workerData: unknown): Worker {
  const tsx = JSON.stringify(import.meta.resolve("tsx/esm/api"));
  return new Worker(`import(${tsx}).then((api) => { api.register(); return import(${JSON.stringify(entry.href)}); })`, { eval: true, workerData });
}

/**
 * The environment the `airlock` launcher (host-tools/bin/airlock) starts node with: without
 * NODE_EXTRA_CA_CERTS, which Node 20 would parse at every start. A `node -e 0` yardstick started
 * with it differs from the command only by what airlock itself does.
 */
export function launcherEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}
