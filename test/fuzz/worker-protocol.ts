// What the fuzz runner (run.ts) and its worker thread (worker.ts) exchange.
import type { CaseFailure } from "./engine.ts";

export interface PlanItem {
  target: string;
  cases: number;
}

export interface WorkerInput {
  seed: number;
  caseTimeoutMs: number;
  plan: PlanItem[];
  /** Index in the plan of the first item to run (after a restart). */
  first: number;
  shared: SharedArrayBuffer;
}

export interface TargetResult {
  type: "result";
  plan: number;
  target: string;
  cases: number;
  accepted: number;
  ms: number;
  note?: string;
  failures: CaseFailure[];
}

export type WorkerMessage = { type: "start"; plan: number; target: string } | TargetResult | { type: "done" };

/** Heartbeat layout: [plan index, case index, case start (ms since epoch), input length], then the input. */
export const HEARTBEAT_SLOTS = 4;
export const INPUT_OFFSET = 8 * HEARTBEAT_SLOTS;
export const INPUT_CAPACITY = 1 << 20;
