// The files proxy: what the workload leaves in its output folders (/data/out/...), and its console,
// once the workload has ended. Each output leaves as its mode allows at the sandbox's scope
// (policy/decide.ts):
//   - a sealed (secure/trusted) output leaves as one archive (names, sizes, modes inside), padded
//     to a size bucket and streamed through age to the host, never held whole here;
//   - an open output is checked whole (safe names, format) and released only at DOMAIN_OWNED or
//     below; counts and sizes are reported only for what is released;
//   - the console, when the room declares one, is sealed with the exact exit status inside.
// The agent's account of each output (agent.proto Output, File + data) is checked before a byte of
// it is read: its names, its sizes against its own total, its total against the manifest's bound.
import { encrypt, X25519Recipient } from "../../../../proto/src/age/index.ts";
import { ARCHIVE_TRAILER, archiveBucket, archiveEntryCost, archiveEntryHeader, archiveEntryPadding, checkArchiveName } from "../../../../proto/src/archive.ts";
import { AUDIT_KINDS } from "../../../../proto/src/audit/index.ts";
import { AirlockError } from "../../../../proto/src/errors.ts";
import type { CaseOf, ValueOf } from "../../../../proto/src/control.ts";
import { num } from "../../../../proto/src/wire.ts";
import { CONSOLE_OUTPUT, type ConsoleOutput } from "../../../../proto/src/manifest/schema.ts";
import type { RoomPlan } from "../../../../proto/src/room.ts";
import type { AgentToFirewall } from "../../../../proto/gen/airlock/v1/agent_pb.ts";
import { Decision } from "../../../../proto/gen/airlock/v1/control_pb.ts";
import { decideOutput, inspectOpenOutput, type OutputDecision } from "../../policy/index.ts";
import type { HostChannel } from "../../enforcer/host-channel.ts";
import type { PrivacyProxy, ProxyContext } from "../proxy.ts";

/** Plaintext pieces fed to age: its chunks are 64 KiB, so the host sees equal-sized frames. */
const PAD_PIECE = 1024 * 1024;
/** Sealed bytes per data frame to the host (its frames may be up to 8 MiB). */
const SEAL_FRAME = 1024 * 1024;

/** How the proxy reads the agent's account: its next message of a kind, and `size` bytes of data. */
export interface AgentReader {
  takeOf<K extends CaseOf<AgentToFirewall>>(kind: K): Promise<ValueOf<AgentToFirewall, K>>;
  dataOf(size: number): AsyncGenerator<Buffer>;
}

interface AgentFile {
  name: Buffer;
  mode: number;
  size: number;
  /** The file's bytes as they arrive; must be read to the end before the next file. */
  chunks: AsyncGenerator<Buffer>;
}

/** What the host learns of a decided output: counts of what was released, or the sealed size. */
type Released = { files?: number; bytes?: number; sealedBytes?: number };
const wireCounts = (r: Released): { files?: bigint; bytes?: bigint; sealedBytes?: bigint } => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, BigInt(v as number)]));

const WIRE_DECISIONS = { release: Decision.RELEASE, encrypt: Decision.ENCRYPT, withhold: Decision.WITHHOLD } as const satisfies Record<OutputDecision["decision"], Decision>;

export class FilesProxy implements PrivacyProxy {
  readonly surfaces = "files in the output folders under /data/out/, collected once the workload has ended";
  readonly decisions: { output: string; decision: OutputDecision["decision"] }[] = [];

  constructor(
    private readonly ctx: ProxyContext,
    private readonly agent: AgentReader,
  ) {}

  /** One output of the manifest, as the agent accounts for it: decided, then sealed, released or withheld. */
  async collect(spec: RoomPlan["outputs"][number]): Promise<void> {
    const { scope, violations, host, roomRecipient } = this.ctx;
    const head = await this.agent.takeOf("output");
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
    const incoming = this.agentFiles(spec.name, files, declared);
    let final: OutputDecision = decision;
    let released: Released = {};
    if (decision.decision === "encrypt") {
      released = { sealedBytes: await sealToHost(host, spec.name, decision.recipient, spec.maxBytes, incoming) };
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
    await this.report(spec.name, spec.mode, final, released);
  }

  /** The console (held by the session until the exit status), sealed with the status inside. */
  async releaseConsole(c: ConsoleOutput, log: Buffer, status: { exitStatus: number; consoleTruncated: boolean }): Promise<void> {
    const statusFile = Buffer.from(`${JSON.stringify(status)}\n`);
    const limit = consoleArchiveLimit(c.maxBytes);
    const decision = decideOutput({ name: CONSOLE_OUTPUT, mode: c.mode, maxBytes: limit, overLimit: false, ...(c.recipient ? { recipient: c.recipient } : {}), ...(this.ctx.roomRecipient ? { roomRecipient: this.ctx.roomRecipient } : {}) }, this.ctx.scope.current);
    let released: Released = {};
    if (decision.decision === "encrypt") {
      const entries = (async function* (): AsyncGenerator<AgentFile> {
        for (const [name, data] of [["console.log", log], ["status.json", statusFile]] as const) {
          yield {
            name: Buffer.from(name),
            mode: 0o644,
            size: data.length,
            chunks: (async function* () {
              if (data.length) yield data;
            })(),
          };
        }
      })();
      released = { sealedBytes: await sealToHost(this.ctx.host, CONSOLE_OUTPUT, decision.recipient, limit, entries) };
    }
    await this.report(CONSOLE_OUTPUT, c.mode, decision, released);
  }

  /** The decision, to the trail and the host: counts and sizes only for what was released. */
  private async report(output: string, mode: string, decision: OutputDecision, released: Released): Promise<void> {
    const { audit, host, scope, log } = this.ctx;
    this.decisions.push({ output, decision: decision.decision });
    // The host sees a sealed output's bucket anyway.
    await audit.append(AUDIT_KINDS.outputDecision, { output, mode, decision: decision.decision, reason: decision.reason, sandboxScope: scope.current, ...released });
    await host.send({ case: "outputDecided", value: { output, decision: WIRE_DECISIONS[decision.decision], reason: decision.reason, ...wireCounts(released) } });
    log.info({ output, decision: decision.decision }, "output decided");
  }

  /** The files of one output, each checked before its bytes are read. */
  private async *agentFiles(output: string, files: number, declared: number): AsyncGenerator<AgentFile> {
    let cost = 0;
    for (let i = 0; i < files; i++) {
      const f = await this.agent.takeOf("file");
      if (f.output !== output) throw new AirlockError("GUEST_PROTOCOL", `the sandbox agent sent a file of another output inside output ${output}`);
      const name = Buffer.from(f.name);
      if (!checkArchiveName(name)) throw new AirlockError("GUEST_PROTOCOL", `the sandbox agent sent a malformed file name in output ${output}`);
      const mode = f.mode & 0o111 ? 0o755 : 0o644;
      const size = num(f.size);
      if (size > declared) throw new AirlockError("GUEST_PROTOCOL", `the sandbox agent's files in output ${output} exceed its own account of them`);
      cost += archiveEntryCost(name, size);
      if (cost > declared) throw new AirlockError("GUEST_PROTOCOL", `the sandbox agent's files in output ${output} exceed its own account of them`);
      const chunks = this.agent.dataOf(size);
      yield { name, mode, size, chunks };
      for await (const _ of chunks) void _; // whatever the consumer left unread
    }
  }
}

/** The archive limit of a console of `maxBytes`: its log and the small status file. */
function consoleArchiveLimit(maxBytes: number): number {
  return archiveEntryCost(Buffer.from("console.log"), maxBytes) + archiveEntryCost(Buffer.from("status.json"), 512);
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
  // age's pieces (64 KiB chunks and their tags) leave gathered in frames of SEAL_FRAME; where the
  // frames are cut depends only on the sealed size, which is the bucket's.
  let batch: Buffer[] = [];
  let batched = 0;
  const flush = async (): Promise<void> => {
    const parts = batch;
    const size = batched;
    batch = [];
    batched = 0;
    await host.exclusive(async (send, bytes) => {
      await send({ case: "sealedData", value: { output, size } });
      await bytes(parts);
    });
    sent += size;
  };
  for await (const c of encrypt(archive(), [X25519Recipient.parse(recipient)])) {
    batch.push(c);
    batched += c.length;
    if (batched >= SEAL_FRAME) await flush();
  }
  if (batched > 0) await flush();
  await host.send({ case: "sealedEnd", value: { output, bytes: BigInt(sent) } });
  return sent;
}
