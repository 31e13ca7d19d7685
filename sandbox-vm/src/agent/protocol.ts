// The agent's side of the run: the firewall's run message, checked field by field, and what the
// agent sends back once the workload is over, in this order:
//   1. only when run.console is not null: {type:"console", bytes: N, truncated} then data frames
//      totalling exactly N bytes (N <= console.maxBytes);
//   2. for each output of run.outputs, in order: {type:"output", output, files, bytes, overLimit,
//      refused: {special, symlinks, badNames, unreadable}}, then, unless overLimit, for each file
//      {type:"file", output, name: base64 of the path bytes, mode: 0o644|0o755, size} then data
//      frames totalling exactly size bytes;
//   3. {type:"stray", count}: entries the workload user left outside the output folders (a count,
//      never names);
//   4. {type:"exit", code} (0..255).
// Data frames carry at most PIECE_BYTES (1 MiB).
import type { Writable } from "node:stream";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import { sendBytes, sendMessage } from "../../../proto/src/control.ts";
import { MAX_CONSOLE_BYTES } from "../../../proto/src/manifest/schema.ts";
import { PIECE_BYTES, scanOutput, sendOutput } from "./outputs.ts";
import { strayCount, type WorkloadResult } from "./workload.ts";

export interface RunOutput {
  name: string;
  mount: string;
  maxBytes: number;
}

export interface RunSpec {
  command: string[];
  env: Record<string, string>;
  timeoutSeconds: number;
  /** Nothing is sent before this many seconds after the start (hides the run's duration). */
  padToSeconds?: number;
  /** The canonical room: its digest must be our host_data, its pins name the firewall we accept. */
  room: Record<string, unknown>;
  outputs: RunOutput[];
  console: { maxBytes: number } | null;
}

const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,255}$/;
const MAX_OUTPUT_BYTES = 2 ** 40;

function bad(what: string): never {
  throw new AirlockError("GUEST_PROTOCOL", `run message: ${what}`);
}
const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);
function onlyKeys(o: Record<string, unknown>, keys: string[], at: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) bad(`${at}: unexpected field ${JSON.stringify(k.slice(0, 40))}`);
}
function text(v: unknown, at: string, max: number): string {
  if (typeof v !== "string" || v.length > max || v.includes("\0")) bad(`${at} must be a string of at most ${max} characters without NUL`);
  return v;
}

function int(v: unknown, at: string, min: number, max: number): number {
  if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) bad(`${at} must be an integer from ${min} to ${max}`);
  return v as number;
}

/** A folder under /data/out/ in normal form (no empty, "." or ".." parts, no trailing slash). */
export function outputMount(v: unknown, at: string): string {
  const p = text(v, at, 1024);
  if (!p.startsWith("/data/out/") || path.posix.normalize(p) !== p || p.endsWith("/") || p.split("/").some((s) => s === "." || s === "..")) bad(`${at} must be a normalized folder under /data/out/`);
  return p;
}

/** Checks every field of the firewall's run message; unknown fields are refused too. */
export function parseRun(m: Record<string, unknown>): RunSpec {
  if (m.type !== "run") bad("not a run message");
  onlyKeys(m, ["type", "command", "env", "timeoutSeconds", "padToSeconds", "room", "outputs", "console"], "run");
  const command = Array.isArray(m.command) && m.command.length > 0 && m.command.length <= 4096 ? m.command.map((c, i) => text(c, `command[${i}]`, 65_536)) : bad("command must be a list of 1 to 4096 strings");
  if (command[0] === "") bad("command[0] is empty");
  if (!isObj(m.env)) bad("env must be an object");
  const entries = Object.entries(m.env);
  if (entries.length > 1024) bad("env has more than 1024 variables");
  const env = Object.fromEntries(entries.map(([k, v]) => [ENV_NAME_RE.test(k) ? k : bad(`env: ${JSON.stringify(k.slice(0, 40))} is not a variable name`), text(v, `env.${k}`, 65_536)]));
  const timeoutSeconds = int(m.timeoutSeconds, "timeoutSeconds", 1, 7 * 24 * 3600);
  const padToSeconds = m.padToSeconds === undefined ? undefined : int(m.padToSeconds, "padToSeconds", 1, timeoutSeconds);
  const room = isObj(m.room) ? m.room : bad("room must be the canonical manifest");
  if (!Array.isArray(m.outputs) || m.outputs.length > 256) bad("outputs must be a list of at most 256");
  const outputs = m.outputs.map((x: unknown, i): RunOutput => {
    const o = isObj(x) ? x : bad(`outputs[${i}] must be an object`);
    onlyKeys(o, ["name", "mount", "maxBytes"], `outputs[${i}]`);
    const name = text(o.name, `outputs[${i}].name`, 63);
    if (!NAME_RE.test(name) || name === "console") bad(`outputs[${i}].name must be a lower-case name other than console`);
    return { name, mount: outputMount(o.mount, `outputs[${i}].mount`), maxBytes: int(o.maxBytes, `outputs[${i}].maxBytes`, 0, MAX_OUTPUT_BYTES) };
  });
  outputs.forEach((o, i) => {
    if (outputs.some((p, j) => j !== i && p.name === o.name)) bad(`output name ${o.name} twice`);
    if (outputs.some((p, j) => j !== i && (p.mount === o.mount || o.mount.startsWith(`${p.mount}/`)))) bad(`output mount ${o.mount} overlaps another`);
  });
  let consoleSpec: RunSpec["console"];
  if (m.console === null) consoleSpec = null;
  else if (isObj(m.console)) {
    onlyKeys(m.console, ["maxBytes"], "console");
    consoleSpec = { maxBytes: int(m.console.maxBytes, "console.maxBytes", 0, MAX_CONSOLE_BYTES) };
  } else bad("console must be null or {maxBytes}");
  return { command, env, timeoutSeconds, ...(padToSeconds !== undefined ? { padToSeconds } : {}), room, outputs, console: consoleSpec };
}

/** Sends the run's results (console, outputs, stray count, exit status), in that order. */
export async function sendResults(link: Writable, run: RunSpec, result: WorkloadResult, strayRoots: string[] = ["/"]): Promise<void> {
  // Nothing is read while a process of the workload user may still be alive.
  if (result.survivors > 0) throw new Error(`${result.survivors} workload processes survived the kill: no output is collected`);
  if (run.console) {
    const data = result.console.subarray(0, run.console.maxBytes);
    await sendMessage(link, { type: "console", bytes: data.length, truncated: result.consoleTruncated || data.length < result.console.length });
    await sendBytes(link, data, PIECE_BYTES);
  }
  for (const o of run.outputs) await sendOutput(link, o.name, scanOutput(o.mount, o.maxBytes));
  await sendMessage(link, { type: "stray", count: strayCount(strayRoots, run.outputs.map((o) => o.mount)) });
  await sendMessage(link, { type: "exit", code: Math.min(255, Math.max(0, result.code)) });
}
