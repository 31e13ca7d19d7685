// One run of the room, as the enforcer sees it: the sandbox agent connects; the enforcer streams
// it each input (decrypted here, authenticated by age, never in clear outside the two VMs), tells
// it what to run, serves its egress through the HTTP proxy while it runs (../proxies/http), and
// receives its outputs (through the files proxy, ../proxies/files) and exit status. Everything the
// agent sends after the workload started is data at the sandbox's scope (README § Leakage budget), so:
//   - outputs leave as their mode allows at that scope: sealed and padded, or checked and released
//     at DOMAIN_OWNED or below (../proxies/files);
//   - the exit status reaches the host exactly only at DOMAIN_OWNED or below, else success/failure
//     (the exact status is sealed in the console output, when the room declares one);
//   - violations are capped counters written after the workload; reasons quote only the manifest;
//   - nothing reaches the host before `workload.padTo` has passed, when the room sets it;
//   - the whole post-run exchange has a deadline (timeout + collection bound), outside the sandbox.
import type { Duplex } from "node:stream";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { bodyOf, expectMessage, readMessages, sendMessage, type CaseOf, type Incoming, type Outgoing, type ValueOf } from "../../../proto/src/control.ts";
import { num } from "../../../proto/src/wire.ts";
import { AgentToFirewallSchema, FirewallToAgentSchema, type AgentToFirewall, type FirewallToAgent } from "../../../proto/gen/airlock/v1/agent_pb.ts";
import type { AgeIdentity } from "../../../proto/src/age/index.ts";
import { openHeader, payloadPlaintextLength } from "../../../proto/src/age/stream.ts";
import { InputTiming } from "./input-timing.ts";
import { faultText, forwardPayload } from "./input-payload.ts";
import { AUDIT_KINDS } from "../../../proto/src/audit/index.ts";
import { collectionBoundSeconds, roomBytes, type RoomPlan } from "../../../proto/src/room.ts";
import type { DataScope } from "../../../proto/src/manifest/schema.ts";
import type { AuditSink } from "./audit-ship.ts";
import { scopeRank, ScopeTracker, stricter, type OutputDecision } from "../policy/index.ts";
import type { HostChannel } from "./host-channel.ts";
import type { Violations } from "./violations.ts";
import { startHttpEgress, type HttpEgress } from "../proxies/http/index.ts";
import { FilesProxy } from "../proxies/files/index.ts";
import type { AuditAppend } from "../proxies/http/proxy.ts";
import { parseEgressUrl, sandboxPort } from "../../../proto/src/egress.ts";

/** The agent's frames; each message's own bounds are declared in proto/airlock/v1/agent.proto. */
const MAX_AGENT_FRAME = 1024 * 1024 + 64;

export interface SessionResult {
  exitCode: number;
  scope: DataScope;
  decisions: { output: string; decision: OutputDecision["decision"] }[];
}

export interface SessionOptions {
  hold?: boolean;
  /** The room's own recipient (secure outputs), when the key broker released the room identity. */
  roomRecipient?: string;
  /** Each input's identities, released by the key broker. */
  identities: Map<string, AgeIdentity[]>;
  /** Each input's scope as its owner granted it (the broker's signed release); the stricter applies. */
  ownerScopes?: Map<string, DataScope>;
  audit: AuditSink;
  /** Counters shared with the firewall's listeners (extra agent connections, the PSP relay). */
  violations: Violations;
  /** Overrides the collection bound (tests). */
  collectionBoundMs?: number;
  /** The room's identity: secure egress unseals answers sealed to the room with it. */
  roomIdentity?: AgeIdentity;
  /** Where the firewall reaches egress entry i (default: its NIC's forwarding address; tests: loopback). */
  egressUpstream?: (index: number) => { host: string; port: number };
}

/** The exit status as the host may see it: exact only while the scope allows clear data out. */
export function exitForHost(code: number, scope: DataScope): { succeeded: boolean; code?: number } {
  return scopeRank(scope) <= scopeRank("DOMAIN_OWNED") ? { succeeded: code === 0, code } : { succeeded: code === 0 };
}

/** Serves one agent connection to its end, reporting to the host. */
export async function serveAgent(agent: Duplex, host: HostChannel, room: RoomPlan, log: Logger, options: SessionOptions): Promise<SessionResult> {
  const { roomRecipient, audit, violations } = options;
  const toAgent = (message: Outgoing<FirewallToAgent>): Promise<void> => sendMessage(agent, FirewallToAgentSchema, message);
  // Egress streams run while the workload does; their messages never reach the steps below.
  const scope = new ScopeTracker("PUBLIC");
  let egress: HttpEgress | undefined;
  const messages = (async function* (): AsyncGenerator<Incoming<AgentToFirewall>> {
    for await (const m of readMessages(agent, AgentToFirewallSchema, "the sandbox agent", MAX_AGENT_FRAME)) {
      const body = m.kind === "message" ? bodyOf(m.message) : undefined;
      if (body?.case === "egressOpen" || body?.case === "egressData" || body?.case === "egressClose" || body?.case === "egressAck") {
        if (!egress) throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent sent egress outside the workload's run, or in a room without egress");
        egress.receive(body);
        continue;
      }
      yield m;
    }
  })();
  let deadline = Number.POSITIVE_INFINITY;
  const next = async (): Promise<Incoming<AgentToFirewall>> => {
    const left = deadline - Date.now();
    if (left <= 0) throw deadlineError(room);
    let timer: NodeJS.Timeout | undefined;
    try {
      const m = await Promise.race([messages.next(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(deadlineError(room)), Math.min(left, 2 ** 31 - 1))))]);
      if (m.done) throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent closed the link early");
      return m.value;
    } finally {
      clearTimeout(timer);
    }
  };
  // The agent is the sandbox's: its messages are checked, and errors about them never quote them.
  const nextOf = async <K extends CaseOf<AgentToFirewall>>(kind: K): Promise<ValueOf<AgentToFirewall, K>> => expectMessage(await next(), kind, "the sandbox agent");
  /** An input that did not open (here or in the agent): on record, the run aborted, the error to throw. */
  const refuseInput = async (name: string, e: AirlockError): Promise<AirlockError> => {
    await audit.append(AUDIT_KINDS.inputServed, { input: name, served: false, reason: e.message.slice(0, 500) });
    await toAgent({ case: "abort", value: { reason: `input ${name} refused` } });
    return new AirlockError(e.code, `input ${name}: ${e.message}`);
  };
  await nextOf("hello");
  await host.send({ case: "sandboxReady", value: {} });

  // Inputs: each one's age header is opened here (the identities stay in the firewall); its payload
  // goes on to the agent as it streams in from the host, still sealed, with the payload key, and
  // the agent opens it (issue 12: one cipher pass per byte, in the sandbox, instead of three). The
  // agent places a file only once its final chunk authenticated: a truncated or tampered file
  // stops the run before the workload starts.
  for (const input of room.inputs) {
    const ids = options.identities.get(input.name);
    if (!ids) throw new AirlockError("KEY_RELEASE", `no identity for input ${input.name}`);
    const timing = new InputTiming();
    let bytes: number;
    try {
      const { key, payload } = await openHeader(timing.fromHost(host.input(input.name)), ids);
      await toAgent({ case: "input", value: { name: input.name, mount: input.mount, payloadKey: key } });
      key.fill(0);
      const sealed = await timing.toAgent(forwardPayload(agent, payload.rest()));
      bytes = payloadPlaintextLength(sealed);
      if (bytes < 0) throw new AirlockError("CRYPTO", `truncated: its payload of ${sealed} bytes cannot end in a whole final chunk`);
      await toAgent({ case: "inputEnd", value: { name: input.name, bytes: BigInt(bytes) } });
    } catch (err) {
      throw await refuseInput(input.name, AirlockError.from(err, "CRYPTO"));
    }
    const reply = await timing.toAgent(next());
    const body = reply.kind === "message" ? bodyOf(reply.message) : undefined;
    if (body?.case === "inputRefused" && body.value.name === input.name) {
      throw await refuseInput(input.name, new AirlockError("CRYPTO", `${faultText(body.value.fault)} at payload chunk ${num(body.value.chunk)} (found by the sandbox's agent as it opened the payload)`));
    }
    const placed = expectMessage<AgentToFirewall, "inputPlaced">(reply, "inputPlaced", "the sandbox agent");
    if (placed.name !== input.name) throw new AirlockError("GUEST_PROTOCOL", `the agent did not place input ${input.name}`);
    const owner = options.ownerScopes?.get(input.name);
    const effective = owner ? stricter(owner, input.scope) : input.scope;
    const raise = scope.observe(effective, `input ${input.name}`);
    await audit.append(AUDIT_KINDS.inputServed, { input: input.name, served: true, bytes, mount: input.mount, scope: effective, manifestScope: input.scope, ...(owner ? { ownerScope: owner } : {}), sandboxScope: scope.current, raised: raise !== null, timing: timing.report(placed) });
    log.info({ input: input.name }, "input served");
  }

  // Egress starts before the run message (its rules compiled: a bad one refuses the run now).
  if (room.egress.length > 0) {
    egress = startHttpEgress({
      entries: room.egress,
      scope,
      audit: audit as AuditAppend,
      log,
      send: (m) => toAgent(m),
      ...(roomRecipient ? { roomRecipient } : {}),
      ...(options.roomIdentity ? { roomIdentity: options.roomIdentity } : {}),
      ...(options.egressUpstream ? { upstream: options.egressUpstream } : {}),
      countRefused: () => violations.note("egressRefused"),
    });
  }
  await toAgent({ case: "run", value: {
    command: room.workload.command,
    env: room.workload.env,
    timeoutSeconds: room.workload.timeoutSeconds,
    ...(room.workload.padToSeconds ? { padToSeconds: room.workload.padToSeconds } : {}),
    // The agent checks this room's digest against its own host_data and our measurement against its pin.
    roomCanonicalJson: roomBytes(room.canonical),
    outputs: room.outputs.map((o) => ({ name: o.name, mount: o.mount, maxBytes: BigInt(o.maxBytes) })),
    ...(room.console ? { console: { maxBytes: BigInt(room.console.maxBytes) } } : {}),
    egress: room.egress.map((e) => ({ host: parseEgressUrl(e.url).host, port: sandboxPort(e) })),
  } });
  const startedAt = Date.now();
  deadline = startedAt + (room.workload.timeoutSeconds + (room.workload.padToSeconds ?? 0)) * 1000 + (options.collectionBoundMs ?? collectionBoundSeconds(room) * 1000);
  await audit.append(AUDIT_KINDS.workloadStarted, { command: room.workload.command.join(" ").slice(0, 500), sandboxScope: scope.current });
  await host.send({ case: "workloadStarted", value: {} });

  // The first word from the agent after the start says the workload ended: with padTo, the host
  // hears nothing until the padded time (the agent waits too, so the fabric carries nothing either).
  const first = await next();
  // The workload is over (the agent closed its egress first): no stream may outlive it.
  egress?.stop();
  egress = undefined;
  const padUntil = startedAt + (room.workload.padToSeconds ?? 0) * 1000;
  if (Date.now() < padUntil) await new Promise((r) => setTimeout(r, padUntil - Date.now()));
  let pending: Incoming<AgentToFirewall> | undefined = first;
  const take = async (): Promise<Incoming<AgentToFirewall>> => {
    const m = pending ?? (await next());
    pending = undefined;
    return m;
  };
  const takeOf = async <K extends CaseOf<AgentToFirewall>>(kind: K): Promise<ValueOf<AgentToFirewall, K>> => expectMessage(await take(), kind, "the sandbox agent");
  const takeData = async (): Promise<Buffer> => {
    const m = await take();
    if (m.kind !== "data") throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent sent a message inside a file's data");
    return m.data;
  };
  /** `size` bytes of data frames, as they come. */
  async function* dataOf(size: number): AsyncGenerator<Buffer> {
    let got = 0;
    while (got < size) {
      const d = await takeData();
      if (got + d.length > size) throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent sent more data than it declared");
      got += d.length;
      yield d;
    }
  }

  // 1. The console (only when declared): held until the exit status, which is sealed with it.
  const consoleData: Buffer[] = [];
  let consoleTruncated = false;
  if (room.console) {
    const head = await takeOf("console");
    const size = num(head.bytes);
    if (size > room.console.maxBytes) throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent's console is over its limit");
    consoleTruncated = head.truncated;
    if (consoleTruncated) violations.note("consoleCut");
    for await (const d of dataOf(size)) consoleData.push(Buffer.from(d));
  }

  // 2. The outputs, in the manifest's order, through the files proxy.
  const files = new FilesProxy({ scope, audit, violations, host, log, ...(roomRecipient ? { roomRecipient } : {}) }, { takeOf, dataOf });
  for (const spec of room.outputs) await files.collect(spec);

  // 3. Stray files: a count, never names.
  const stray = await takeOf("stray");
  violations.note("stray", num(stray.count));

  // 4. The exit status: exact to the host only at DOMAIN_OWNED or below; sealed in the console.
  const exitCode = (await takeOf("exit")).code;
  const shown = exitForHost(exitCode, scope.current);
  await audit.append(AUDIT_KINDS.workloadExited, { ...shown, sandboxScope: scope.current });
  await host.send({ case: "workloadExit", value: shown });

  if (room.console) await files.releaseConsole(room.console, Buffer.concat(consoleData), { exitStatus: exitCode, consoleTruncated });
  await violations.flush(audit);
  // Everything the run releases has been sent: the host may now put it in place.
  await host.send({ case: "outputsComplete", value: {} });
  // Holding: the agent waits for its bye, so the sandbox stays up until the pair is stopped.
  if (!options.hold) await toAgent({ case: "bye", value: {} });
  return { exitCode, scope: scope.current, decisions: files.decisions };

}

function deadlineError(room: RoomPlan): AirlockError {
  return new AirlockError("TIMEOUT", `the run did not end within the workload's timeout (${room.workload.timeoutSeconds} s) plus the collection bound (${collectionBoundSeconds(room)} s): the run was stopped and nothing more was released`);
}
