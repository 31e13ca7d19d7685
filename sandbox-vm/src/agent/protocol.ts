// The agent's side of the run: the firewall's Run message (proto/airlock/v1/agent.proto, whose
// declared bounds wire.ts has checked already), checked for what a declaration cannot say, and
// what the agent sends back once the workload is over, in the order agent.proto gives: Console
// (when Run.console is set) and its data, each output's Output / File + data, Stray, Exit. Data
// frames carry at most PIECE_BYTES (1 MiB).
import type { Writable } from "node:stream";
import { AirlockError } from "../../../proto/src/errors.ts";
import { sendBytes } from "../../../proto/src/control.ts";
import { num } from "../../../proto/src/wire.ts";
import type { Run } from "../../../proto/gen/airlock/v1/agent_pb.ts";
import { toFirewall } from "./link.ts";
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
  /** The canonical room's bytes: their digest must be our host_data, its pins name the firewall we accept. */
  room: Buffer;
  outputs: RunOutput[];
  console: { maxBytes: number } | null;
  /** The egress endpoints to surface while the workload runs (none: no listener). */
  egress: { host: string; port: number }[];
  /** A service room: the workload's server port and how long it may take to listen. */
  service?: { port: number; readyTimeoutSeconds: number };
}

function bad(what: string): never {
  throw new AirlockError("GUEST_PROTOCOL", `run message: ${what}`);
}

/** Checks what agent.proto's bounds cannot say of the firewall's Run message. */
export function parseRun(m: Run): RunSpec {
  if (m.command.length === 0 || m.command[0] === "") bad("command must name a program");
  if (m.padToSeconds !== undefined && m.padToSeconds > m.timeoutSeconds) bad("padToSeconds is past timeoutSeconds");
  const outputs = m.outputs.map((o, i): RunOutput => {
    if (o.name === "console") bad(`outputs[${i}].name must be a name other than console`);
    // agent.proto's FORMAT_OUTPUT_MOUNT has checked the mount (wire.ts).
    return { name: o.name, mount: o.mount, maxBytes: num(o.maxBytes) };
  });
  outputs.forEach((o, i) => {
    if (outputs.some((p, j) => j !== i && p.name === o.name)) bad(`output name ${o.name} twice`);
    if (outputs.some((p, j) => j !== i && (p.mount === o.mount || o.mount.startsWith(`${p.mount}/`)))) bad(`output mount ${o.mount} overlaps another`);
  });
  return {
    command: m.command,
    env: { ...m.env },
    timeoutSeconds: m.timeoutSeconds,
    ...(m.padToSeconds !== undefined ? { padToSeconds: m.padToSeconds } : {}),
    room: Buffer.from(m.roomCanonicalJson),
    outputs,
    console: m.console ? { maxBytes: num(m.console.maxBytes) } : null,
    egress: m.egress.map((e) => ({ host: e.host, port: e.port })),
    ...(m.service ? { service: { port: m.service.port, readyTimeoutSeconds: m.service.readyTimeoutSeconds } } : {}),
  };
}

/** Sends the run's results (console, outputs, stray count, exit status), in that order. */
export async function sendResults(link: Writable, run: RunSpec, result: WorkloadResult, strayRoots: string[] = ["/"]): Promise<void> {
  // Nothing is read while a process of the workload user may still be alive.
  if (result.survivors > 0) throw new Error(`${result.survivors} workload processes survived the kill: no output is collected`);
  if (run.console) {
    const data = result.console.subarray(0, run.console.maxBytes);
    await toFirewall(link, { case: "console", value: { bytes: BigInt(data.length), truncated: result.consoleTruncated || data.length < result.console.length } });
    await sendBytes(link, data, PIECE_BYTES);
  }
  for (const o of run.outputs) await sendOutput(link, o.name, scanOutput(o.mount, o.maxBytes));
  await toFirewall(link, { case: "stray", value: { count: BigInt(strayCount(strayRoots, run.outputs.map((o) => o.mount))) } });
  await toFirewall(link, { case: "exit", value: { code: Math.min(255, Math.max(0, result.code)) } });
}
