// One run of the room, as the enforcer sees it: the sandbox agent connects; the enforcer streams
// it each input (decrypted here, authenticated by age, never in clear outside the two VMs), tells
// it what to run, and receives its outputs and exit status. Each output goes to the host only in
// the form its mode allows (policy/decide.ts); everything the agent says is checked, and every
// privileged act is in the audit trail.
import type { Duplex } from "node:stream";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { checkRelativePath, field, readMessages, sendData, sendMessage } from "../../../proto/src/control.ts";
import { decrypt, encrypt, X25519Recipient, type AgeIdentity } from "../../../proto/src/age/index.ts";
import { AUDIT_KINDS } from "../../../proto/src/audit/index.ts";
import type { AuditSink } from "./audit-ship.ts";
import type { RoomPlan } from "../../../proto/src/room.ts";
import { decideOutput, ScopeTracker, type OutputDecision } from "../policy/index.ts";
import type { HostChannel } from "./host-channel.ts";

/** The workload's stdout and stderr: an output like any other, secure by default. */
export const CONSOLE_OUTPUT = { name: "console", mount: "/", mode: "secure" as const, maxBytes: 8 * 1024 * 1024, format: "bytes" as const };

interface Collected {
  files: { path: string; content: Buffer }[];
  notes: string[];
  overLimit?: boolean;
}

export interface SessionResult {
  exitCode: number;
  decisions: { output: string; decision: OutputDecision }[];
}

export interface SessionOptions {
  hold?: boolean;
  /** The room's own recipient (secure outputs), when the key broker released the room identity. */
  roomRecipient?: string;
  /** Each input's identities, released by the key broker. */
  identities: Map<string, AgeIdentity[]>;
  audit: AuditSink;
}

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of gen) out.push(c);
  return Buffer.concat(out);
}

/** Serves one agent connection to its end, reporting to the host. */
export async function serveAgent(agent: Duplex, host: HostChannel, room: RoomPlan, log: Logger, options: SessionOptions): Promise<SessionResult> {
  const { roomRecipient, audit } = options;
  const violation = (what: string, data: Record<string, string | number> = {}): Promise<unknown> => audit.append(AUDIT_KINDS.violation, { what, ...data });
  const messages = readMessages(agent);
  const next = async () => {
    const m = await messages.next();
    if (m.done) throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent closed the link early");
    return m.value;
  };
  const hello = await next();
  if (hello.kind !== "json" || hello.value.type !== "hello") throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent did not say hello");
  await host.send({ type: "sandbox-ready" });

  // Inputs: decrypted as they stream in from the host, sent on to the agent. The agent places a
  // file only when its input-end arrives, which is sent only after age has authenticated the last
  // chunk: a truncated or tampered file stops the run before the workload starts.
  const scope = new ScopeTracker("PUBLIC");
  for (const input of room.inputs) {
    const ids = options.identities.get(input.name);
    if (!ids) throw new AirlockError("KEY_RELEASE", `no identity for input ${input.name}`);
    await sendMessage(agent, { type: "input", name: input.name, mount: input.mount });
    let bytes = 0;
    try {
      for await (const chunk of decrypt(host.input(input.name), ids)) {
        bytes += chunk.length;
        await sendData(agent, chunk);
      }
    } catch (err) {
      const e = AirlockError.from(err, "CRYPTO");
      await audit.append(AUDIT_KINDS.inputServed, { input: input.name, served: false, reason: e.message.slice(0, 500) });
      await sendMessage(agent, { type: "abort", reason: `input ${input.name} refused` });
      throw new AirlockError(e.code, `input ${input.name}: ${e.message}`);
    }
    await sendMessage(agent, { type: "input-end", name: input.name, bytes });
    const placed = await next();
    if (placed.kind !== "json" || placed.value.type !== "input-placed" || placed.value.name !== input.name) throw new AirlockError("GUEST_PROTOCOL", `the agent did not place input ${input.name}`);
    const raise = scope.observe(input.scope, `input ${input.name}`);
    await audit.append(AUDIT_KINDS.inputServed, { input: input.name, served: true, bytes, mount: input.mount, scope: input.scope, sandboxScope: scope.current, raised: raise !== null });
    log.info({ input: input.name, bytes }, "input served");
  }

  await sendMessage(agent, {
    type: "run",
    command: room.workload.command,
    env: room.workload.env,
    timeoutSeconds: room.workload.timeoutSeconds,
    outputs: room.outputs.map((o) => ({ name: o.name, mount: o.mount, maxBytes: o.maxBytes })),
  });
  await audit.append(AUDIT_KINDS.workloadStarted, { command: room.workload.command.join(" ").slice(0, 500), sandboxScope: scope.current });
  await host.send({ type: "workload-started" });

  const outputs = new Map<string, Collected>();
  const known = new Map<string, number>([[CONSOLE_OUTPUT.name, CONSOLE_OUTPUT.maxBytes], ...room.outputs.map((o) => [o.name, o.maxBytes] as [string, number])]);
  const collected = (name: string): Collected => {
    const c = outputs.get(name) ?? { files: [], notes: [] };
    outputs.set(name, c);
    return c;
  };
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
      if (msg.truncated === true) {
        collected(output).notes.push("the workload's console exceeded its bound and was cut");
        await violation("console over its bound: cut", { output });
      }
      collected(output).files.push({ path, content: Buffer.concat(parts) });
    } else if (msg.type === "output-note") {
      const output = field.string(msg, "output", 64);
      if (!known.has(output)) throw new AirlockError("GUEST_PROTOCOL", "output-note for an unknown output");
      const c = collected(output);
      if (msg.overLimit === true) {
        c.overLimit = true;
        await violation("output over its size limit: files left inside", { output, maxBytes: known.get(output)! });
      }
      const skipped = Array.isArray(msg.skipped) ? msg.skipped.slice(0, 20).map((s) => String(s).slice(0, 200)) : [];
      if (skipped.length) await violation("special files or symlinks in an output folder: not shipped", { output, files: skipped.join(", ") });
    } else if (msg.type === "stray-files") {
      // Files the workload left outside its output folders: never shipped, recorded.
      const paths = Array.isArray(msg.paths) ? msg.paths.slice(0, 50).map((s) => String(s).slice(0, 200)) : [];
      if (paths.length) await violation("files written outside the output folders: not shipped", { count: field.int(msg, "count", 0, 1e9), files: paths.join(", ") });
    } else if (msg.type === "exit") {
      exitCode = field.int(msg, "code", 0, 255);
    } else {
      throw new AirlockError("GUEST_PROTOCOL", `unexpected message ${JSON.stringify(String(msg.type)).slice(0, 40)} from the agent`);
    }
  }
  await audit.append(AUDIT_KINDS.workloadExited, { code: exitCode });
  await host.send({ type: "workload-exit", code: exitCode });

  const decisions: SessionResult["decisions"] = [];
  for (const spec of [CONSOLE_OUTPUT, ...room.outputs]) {
    const c = outputs.get(spec.name) ?? { files: [], notes: [] };
    const recipient = "recipient" in spec ? spec.recipient : undefined;
    let decision = decideOutput(
      { name: spec.name, mode: spec.mode, maxBytes: spec.maxBytes, format: spec.format, ...(recipient ? { recipient } : {}), files: c.files.map((f) => ({ path: f.path, size: f.content.length, content: f.content })) },
      scope.current,
    );
    if (c.overLimit) {
      // Part of it was left behind: a partial output could mislead, and its size is itself a signal.
      decision = { decision: "withhold", reason: `output ${spec.name} exceeded its size limit of ${spec.maxBytes} bytes` };
    } else if (decision.decision === "encrypt" && decision.to === "room" && !roomRecipient) {
      decision = { decision: "withhold", reason: `${decision.reason}; no room recipient was released to this firewall, so it stays inside` };
    }
    const reason = [decision.reason, ...c.notes].join("; ");
    decisions.push({ output: spec.name, decision });
    await audit.append(AUDIT_KINDS.outputDecision, { output: spec.name, mode: spec.mode, decision: decision.decision, reason, files: c.files.length, sandboxScope: scope.current });
    log.info({ output: spec.name, decision: decision.decision, reason }, "output decision");
    await host.send({ type: "output", output: spec.name, decision: decision.decision, reason, files: c.files.length });
    if (decision.decision === "withhold") continue;
    for (const f of c.files) {
      let data = f.content;
      let path = f.path;
      if (decision.decision === "encrypt") {
        const to = X25519Recipient.parse(decision.to === "room" ? roomRecipient! : decision.recipient!);
        data = await collect(encrypt((async function* () { yield f.content; })(), [to]));
        path = `${f.path}.age`;
      }
      await host.exclusive(async (send, bytes) => {
        await send({ type: "output-file", output: spec.name, path, size: data.length });
        await bytes(data);
      });
    }
  }
  // Holding: the agent waits for its bye, so the sandbox stays up until the pair is stopped.
  if (!options.hold) await sendMessage(agent, { type: "bye" });
  return { exitCode, decisions };
}
