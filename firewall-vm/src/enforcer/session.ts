// One run of the room, as the enforcer sees it: the host has sent the room; the sandbox agent
// connects, gets its command, runs, and sends its outputs and exit status. Each output goes to the
// host only in the form its mode allows (policy/decide.ts); everything the agent says is checked.
import type { Duplex } from "node:stream";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { checkRelativePath, field, readMessages, sendBytes, sendMessage } from "../../../proto/src/control.ts";
import { encrypt, X25519Recipient } from "../../../proto/src/age/index.ts";
import type { RoomPlan } from "../../../proto/src/room.ts";
import { decideOutput, ScopeTracker, type OutputDecision } from "../policy/index.ts";

/** The workload's stdout and stderr: an output like any other, secure by default. */
export const CONSOLE_OUTPUT = { name: "console", mount: "/", mode: "secure" as const, maxBytes: 8 * 1024 * 1024, format: "bytes" as const };

interface Collected {
  files: { path: string; content: Buffer }[];
  notes: string[];
}

export interface SessionResult {
  exitCode: number;
  decisions: { output: string; decision: OutputDecision }[];
}

async function collect<T>(gen: AsyncIterable<T>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const c of gen) out.push(c as unknown as Buffer);
  return out;
}

/** Serves one agent connection to its end, reporting to the host over `host`. */
export async function serveAgent(agent: Duplex, host: Duplex, room: RoomPlan, log: Logger, options: { hold?: boolean; roomRecipient?: string } = {}): Promise<SessionResult> {
  const { roomRecipient } = options;
  const messages = readMessages(agent);
  const next = async () => {
    const m = await messages.next();
    if (m.done) throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent closed the link early");
    return m.value;
  };
  const hello = await next();
  if (hello.kind !== "json" || hello.value.type !== "hello") throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent did not say hello");
  await sendMessage(host, { type: "sandbox-ready" });

  const scope = new ScopeTracker("PUBLIC");
  for (const input of room.inputs) scope.observe(input.scope, `input ${input.name}`);
  await sendMessage(agent, {
    type: "run",
    command: room.workload.command,
    env: room.workload.env,
    timeoutSeconds: room.workload.timeoutSeconds,
    outputs: room.outputs.map((o) => ({ name: o.name, mount: o.mount, maxBytes: o.maxBytes })),
  });

  const outputs = new Map<string, Collected>();
  const known = new Map<string, number>([[CONSOLE_OUTPUT.name, CONSOLE_OUTPUT.maxBytes], ...room.outputs.map((o) => [o.name, o.maxBytes] as [string, number])]);
  let exitCode: number | undefined;
  while (exitCode === undefined) {
    const m = await next();
    if (m.kind !== "json") throw new AirlockError("GUEST_PROTOCOL", "data from the agent outside a file");
    const msg = m.value;
    if (msg.type === "file") {
      const output = field.string(msg, "output", 64);
      const limit = known.get(output);
      if (limit === undefined) throw new AirlockError("GUEST_PROTOCOL", `the agent sent a file for unknown output ${JSON.stringify(output)}`);
      const path = checkRelativePath(field.string(msg, "path", 1024));
      const size = field.int(msg, "size", 0, limit);
      const parts: Buffer[] = [];
      let got = 0;
      while (got < size) {
        const d = await next();
        if (d.kind !== "data" || got + d.data.length > size) throw new AirlockError("GUEST_PROTOCOL", `file ${output}/${path}: data does not match its declared size`);
        parts.push(Buffer.from(d.data));
        got += d.data.length;
      }
      const c = outputs.get(output) ?? { files: [], notes: [] };
      c.files.push({ path, content: Buffer.concat(parts) });
      outputs.set(output, c);
    } else if (msg.type === "output-note") {
      const output = field.string(msg, "output", 64);
      const c = outputs.get(output) ?? { files: [], notes: [] };
      if (msg.overLimit === true) c.notes.push("files over the size limit were left behind");
      outputs.set(output, c);
    } else if (msg.type === "exit") {
      exitCode = field.int(msg, "code", 0, 255);
    } else {
      throw new AirlockError("GUEST_PROTOCOL", `unexpected message ${JSON.stringify(String(msg.type)).slice(0, 40)} from the agent`);
    }
  }
  await sendMessage(host, { type: "workload-exit", code: exitCode });

  const decisions: SessionResult["decisions"] = [];
  for (const spec of [CONSOLE_OUTPUT, ...room.outputs]) {
    const c = outputs.get(spec.name) ?? { files: [], notes: [] };
    const recipient = "recipient" in spec ? spec.recipient : undefined;
    let decision = decideOutput(
      { name: spec.name, mode: spec.mode, maxBytes: spec.maxBytes, format: spec.format, ...(recipient ? { recipient } : {}), files: c.files.map((f) => ({ path: f.path, size: f.content.length, content: f.content })) },
      scope.current,
    );
    if (decision.decision === "encrypt" && decision.to === "room" && !roomRecipient) {
      decision = { decision: "withhold", reason: `${decision.reason}; no room recipient was released to this firewall, so it stays inside` };
    }
    decisions.push({ output: spec.name, decision });
    log.info({ output: spec.name, decision: decision.decision, reason: decision.reason }, "output decision");
    await sendMessage(host, { type: "output", output: spec.name, decision: decision.decision, reason: decision.reason, files: c.files.length });
    if (decision.decision === "withhold") continue;
    for (const f of c.files) {
      let data = f.content;
      let path = f.path;
      if (decision.decision === "encrypt") {
        const to = X25519Recipient.parse(decision.to === "room" ? roomRecipient! : decision.recipient!);
        data = Buffer.concat(await collect(encrypt((async function* () { yield f.content; })(), [to])));
        path = `${f.path}.age`;
      }
      await sendMessage(host, { type: "output-file", output: spec.name, path, size: data.length });
      await sendBytes(host, data);
    }
  }
  // Holding: the agent waits for its bye, so the sandbox stays up until the pair is stopped.
  if (!options.hold) await sendMessage(agent, { type: "bye" });
  return { exitCode, decisions };
}
