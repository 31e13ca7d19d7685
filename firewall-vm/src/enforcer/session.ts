// One run of the room, as the enforcer sees it: the sandbox agent connects; the enforcer streams
// it each input (decrypted here, authenticated by age, never in clear outside the two VMs), tells
// it what to run, and receives its outputs and exit status. Everything the agent sends after the
// workload started is data at the sandbox's scope (README § Leakage budget), so:
//   - a sealed (secure/trusted) output leaves as one archive (names, sizes, modes inside), padded
//     to a size bucket and streamed through age to the host, never held whole here;
//   - an open output is checked whole (safe names, format) and released only at DOMAIN_OWNED or
//     below; counts and sizes are reported only for what is released;
//   - the exit status reaches the host exactly only at DOMAIN_OWNED or below, else success/failure
//     (the exact status is sealed in the console output, when the room declares one);
//   - violations are capped counters written after the workload; reasons quote only the manifest;
//   - nothing reaches the host before `workload.padTo` has passed, when the room sets it;
//   - the whole post-run exchange has a deadline (timeout + collection bound), outside the sandbox.
import type { Duplex } from "node:stream";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { bodyOf, expectMessage, readMessages, sendData, sendMessage, type CaseOf, type Incoming, type Outgoing, type ValueOf } from "../../../proto/src/control.ts";
import { num } from "../../../proto/src/wire.ts";
import { AgentToFirewallSchema, FirewallToAgentSchema, type AgentToFirewall, type FirewallToAgent } from "../../../proto/gen/airlock/v1/agent_pb.ts";
import { Decision } from "../../../proto/gen/airlock/v1/control_pb.ts";
import { decrypt, encrypt, X25519Recipient, type AgeIdentity } from "../../../proto/src/age/index.ts";
import { AUDIT_KINDS } from "../../../proto/src/audit/index.ts";
import { ARCHIVE_TRAILER, archiveBucket, archiveEntryCost, archiveEntryHeader, archiveEntryPadding, checkArchiveName } from "../../../proto/src/archive.ts";
import { collectionBoundSeconds, roomBytes, type RoomPlan } from "../../../proto/src/room.ts";
import { CONSOLE_OUTPUT, type DataScope } from "../../../proto/src/manifest/schema.ts";
import type { AuditSink } from "./audit-ship.ts";
import { decideOutput, inspectOpenOutput, scopeRank, ScopeTracker, stricter, type OutputDecision } from "../policy/index.ts";
import type { HostChannel } from "./host-channel.ts";
import type { Violations } from "./violations.ts";
import { startHttpEgress, type HttpEgress } from "../proxies/http/index.ts";
import type { AuditAppend } from "../proxies/http/proxy.ts";
import { parseEgressUrl, sandboxPort } from "../../../proto/src/egress.ts";

/** The agent's frames; each message's own bounds are declared in proto/airlock/v1/agent.proto. */
const MAX_AGENT_FRAME = 1024 * 1024 + 64;
/** Plaintext pieces fed to age: its chunks are 64 KiB, so the host sees equal-sized frames. */
const PAD_PIECE = 1024 * 1024;

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

interface AgentFile {
  name: Buffer;
  mode: number;
  size: number;
  /** The file's bytes as they arrive; must be read to the end before the next file. */
  chunks: AsyncGenerator<Buffer>;
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
  await nextOf("hello");
  await host.send({ case: "sandboxReady", value: {} });

  // Inputs: decrypted as they stream in from the host, sent on to the agent. The agent places a
  // file only when its input-end arrives, which is sent only after age has authenticated the last
  // chunk: a truncated or tampered file stops the run before the workload starts.
  for (const input of room.inputs) {
    const ids = options.identities.get(input.name);
    if (!ids) throw new AirlockError("KEY_RELEASE", `no identity for input ${input.name}`);
    await toAgent({ case: "input", value: { name: input.name, mount: input.mount } });
    let bytes = 0;
    try {
      for await (const chunk of decrypt(host.input(input.name), ids)) {
        bytes += chunk.length;
        await sendData(agent, chunk);
      }
    } catch (err) {
      const e = AirlockError.from(err, "CRYPTO");
      await audit.append(AUDIT_KINDS.inputServed, { input: input.name, served: false, reason: e.message.slice(0, 500) });
      await toAgent({ case: "abort", value: { reason: `input ${input.name} refused` } });
      throw new AirlockError(e.code, `input ${input.name}: ${e.message}`);
    }
    await toAgent({ case: "inputEnd", value: { name: input.name, bytes: BigInt(bytes) } });
    const placed = await nextOf("inputPlaced");
    if (placed.name !== input.name) throw new AirlockError("GUEST_PROTOCOL", `the agent did not place input ${input.name}`);
    const owner = options.ownerScopes?.get(input.name);
    const effective = owner ? stricter(owner, input.scope) : input.scope;
    const raise = scope.observe(effective, `input ${input.name}`);
    await audit.append(AUDIT_KINDS.inputServed, { input: input.name, served: true, bytes, mount: input.mount, scope: effective, manifestScope: input.scope, ...(owner ? { ownerScope: owner } : {}), sandboxScope: scope.current, raised: raise !== null });
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
  let consoleData: Buffer[] = [];
  let consoleTruncated = false;
  if (room.console) {
    const head = await takeOf("console");
    const size = num(head.bytes);
    if (size > room.console.maxBytes) throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent's console is over its limit");
    consoleTruncated = head.truncated;
    if (consoleTruncated) violations.note("consoleCut");
    for await (const d of dataOf(size)) consoleData.push(Buffer.from(d));
  }

  // 2. The outputs, in the manifest's order.
  const decisions: SessionResult["decisions"] = [];
  for (const spec of room.outputs) {
    const head = await takeOf("output");
    if (head.output !== spec.name) throw new AirlockError("GUEST_PROTOCOL", `the sandbox agent sent outputs out of the manifest's order (expected ${spec.name})`);
    const files = head.files;
    const declared = num(head.bytes);
    const overLimit = head.overLimit;
    const refused = head.refused ?? { special: 0, symlinks: 0, badNames: 0, unreadable: 0 };
    violations.note("special", refused.special + refused.symlinks);
    violations.note("badNames", refused.badNames);
    violations.note("unreadable", refused.unreadable);
    if (overLimit) violations.note("overLimit");
    if (overLimit ? files !== 0 : declared > spec.maxBytes) throw new AirlockError("GUEST_PROTOCOL", `the sandbox agent's account of output ${spec.name} breaks its size limit`);

    const decision = decideOutput({ name: spec.name, mode: spec.mode, maxBytes: spec.maxBytes, overLimit, ...(spec.recipient ? { recipient: spec.recipient } : {}), ...(roomRecipient ? { roomRecipient } : {}) }, scope.current);
    const incoming = agentFiles(spec.name, files, declared);
    let final: OutputDecision = decision;
    let released: Released = {};
    if (decision.decision === "encrypt") {
      const sealedBytes = await sealToHost(host, spec.name, decision.recipient, spec.maxBytes, incoming);
      released = { sealedBytes };
    } else if (decision.decision === "release") {
      const got: { path: string; content: Buffer }[] = [];
      for await (const f of incoming) {
        const parts: Buffer[] = [];
        for await (const c of f.chunks) parts.push(Buffer.from(c));
        got.push({ path: f.name.toString("utf8"), content: Buffer.concat(parts) });
      }
      const why = inspectOpenOutput(spec.name, spec.format, got);
      if (why) {
        if (/safe set/.test(why)) violations.note("unsafeNames");
        final = { decision: "withhold", reason: why };
      } else {
        for (const f of got) {
          await host.exclusive(async (send, bytes) => {
            await send({ case: "openFile", value: { output: spec.name, path: f.path, size: BigInt(f.content.length) } });
            await bytes(f.content);
          });
        }
        released = { files: got.length, bytes: got.reduce((n, f) => n + f.content.length, 0) };
      }
    } else {
      for await (const f of incoming) for await (const _ of f.chunks) void _;
    }
    decisions.push({ output: spec.name, decision: final.decision });
    // Counts and sizes only for what was released; the host sees a sealed output's bucket anyway.
    await audit.append(AUDIT_KINDS.outputDecision, { output: spec.name, mode: spec.mode, decision: final.decision, reason: final.reason, sandboxScope: scope.current, ...released });
    await host.send({ case: "outputDecided", value: { output: spec.name, decision: WIRE_DECISIONS[final.decision], reason: final.reason, ...wireCounts(released) } });
    log.info({ output: spec.name, decision: final.decision }, "output decided");
  }

  // 3. Stray files: a count, never names.
  const stray = await takeOf("stray");
  violations.note("stray", num(stray.count));

  // 4. The exit status: exact to the host only at DOMAIN_OWNED or below; sealed in the console.
  const exitCode = (await takeOf("exit")).code;
  const shown = exitForHost(exitCode, scope.current);
  await audit.append(AUDIT_KINDS.workloadExited, { ...shown, sandboxScope: scope.current });
  await host.send({ case: "workloadExit", value: shown });

  if (room.console) {
    const c = room.console;
    const status = Buffer.from(`${JSON.stringify({ exitStatus: exitCode, consoleTruncated })}\n`);
    const log = Buffer.concat(consoleData);
    consoleData = [];
    const decision = decideOutput({ name: CONSOLE_OUTPUT, mode: c.mode, maxBytes: consoleArchiveLimit(c.maxBytes), overLimit: false, ...(c.recipient ? { recipient: c.recipient } : {}), ...(roomRecipient ? { roomRecipient } : {}) }, scope.current);
    let released: Released = {};
    if (decision.decision === "encrypt") {
      const entries = (async function* (): AsyncGenerator<AgentFile> {
        for (const [name, data] of [["console.log", log], ["status.json", status]] as const) {
          yield { name: Buffer.from(name), mode: 0o644, size: data.length, chunks: (async function* () { if (data.length) yield data; })() };
        }
      })();
      released = { sealedBytes: await sealToHost(host, CONSOLE_OUTPUT, decision.recipient, consoleArchiveLimit(c.maxBytes), entries) };
    }
    decisions.push({ output: CONSOLE_OUTPUT, decision: decision.decision });
    await audit.append(AUDIT_KINDS.outputDecision, { output: CONSOLE_OUTPUT, mode: c.mode, decision: decision.decision, reason: decision.reason, sandboxScope: scope.current, ...released });
    await host.send({ case: "outputDecided", value: { output: CONSOLE_OUTPUT, decision: WIRE_DECISIONS[decision.decision], reason: decision.reason, ...wireCounts(released) } });
  }
  await violations.flush(audit);
  // Everything the run releases has been sent: the host may now put it in place.
  await host.send({ case: "outputsComplete", value: {} });
  // Holding: the agent waits for its bye, so the sandbox stays up until the pair is stopped.
  if (!options.hold) await toAgent({ case: "bye", value: {} });
  return { exitCode, scope: scope.current, decisions };

  /** The files of one output, each checked before its bytes are read. */
  async function* agentFiles(output: string, files: number, declared: number): AsyncGenerator<AgentFile> {
    let cost = 0;
    for (let i = 0; i < files; i++) {
      const f = await takeOf("file");
      if (f.output !== output) throw new AirlockError("GUEST_PROTOCOL", `the sandbox agent sent a file of another output inside output ${output}`);
      const name = Buffer.from(f.name);
      if (!checkArchiveName(name)) throw new AirlockError("GUEST_PROTOCOL", `the sandbox agent sent a malformed file name in output ${output}`);
      const mode = f.mode & 0o111 ? 0o755 : 0o644;
      const size = num(f.size);
      if (size > declared) throw new AirlockError("GUEST_PROTOCOL", `the sandbox agent's files in output ${output} exceed its own account of them`);
      cost += archiveEntryCost(name, size);
      if (cost > declared) throw new AirlockError("GUEST_PROTOCOL", `the sandbox agent's files in output ${output} exceed its own account of them`);
      const chunks = dataOf(size);
      yield { name, mode, size, chunks };
      for await (const _ of chunks) void _; // whatever the consumer left unread
    }
  }
}

/** What the host learns of a decided output: counts of what was released, or the sealed size. */
type Released = { files?: number; bytes?: number; sealedBytes?: number };
const wireCounts = (r: Released): { files?: bigint; bytes?: bigint; sealedBytes?: bigint } =>
  Object.fromEntries(Object.entries(r).map(([k, v]) => [k, BigInt(v as number)]));

const WIRE_DECISIONS = { release: Decision.RELEASE, encrypt: Decision.ENCRYPT, withhold: Decision.WITHHOLD } as const satisfies Record<OutputDecision["decision"], Decision>;

/** The archive limit of a console of `maxBytes`: its log and the small status file. */
function consoleArchiveLimit(maxBytes: number): number {
  return archiveEntryCost(Buffer.from("console.log"), maxBytes) + archiveEntryCost(Buffer.from("status.json"), 512);
}

function deadlineError(room: RoomPlan): AirlockError {
  return new AirlockError("TIMEOUT", `the run did not end within the workload's timeout (${room.workload.timeoutSeconds} s) plus the collection bound (${collectionBoundSeconds(room)} s): the run was stopped and nothing more was released`);
}

/**
 * Streams one sealed output to the host: the files as a tar archive, padded with zero blocks to its
 * size bucket, encrypted with age to `recipient`. Returns the ciphertext's size (what the host saw).
 */
async function sealToHost(host: HostChannel, output: string, recipient: string, maxBytes: number, files: AsyncIterable<AgentFile>): Promise<number> {
  async function* archive(): AsyncGenerator<Buffer> {
    let size = 0;
    for await (const f of files) {
      const h = archiveEntryHeader(f.name, f.size, f.mode);
      size += h.length + f.size;
      yield h;
      yield* f.chunks;
      const pad = archiveEntryPadding(f.size);
      size += pad.length;
      if (pad.length) yield pad;
    }
    // The end-of-archive marker and the bucket's padding are both zero blocks.
    let zeros = archiveBucket(size + ARCHIVE_TRAILER, maxBytes) - size;
    while (zeros > 0) {
      const n = Math.min(zeros, PAD_PIECE);
      yield Buffer.alloc(n);
      zeros -= n;
    }
  }
  await host.send({ case: "sealedBegin", value: { output } });
  let sent = 0;
  for await (const c of encrypt(archive(), [X25519Recipient.parse(recipient)])) {
    await host.exclusive(async (send, bytes) => {
      await send({ case: "sealedData", value: { output, size: c.length } });
      await bytes(c);
    });
    sent += c.length;
  }
  await host.send({ case: "sealedEnd", value: { output, bytes: BigInt(sent) } });
  return sent;
}
