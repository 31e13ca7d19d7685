// serveAgent over real Unix sockets, without guests: the test plays the host (serving an age file
// when asked, collecting reports and files) and the sandbox agent (placing the input, sending
// outputs, including hostile ones). The age format, the policy, the audit log and GNU tar (to
// open the sealed archives) are the real ones.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { generateKeyPairSync } from "node:crypto";
import type net from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { decrypt, encrypt, X25519Identity } from "../../../proto/src/age/index.ts";
import { AuditLog, signerFromPrivateKey } from "../../../proto/src/audit/index.ts";
import { bodyOf, readMessages, sendBytes, sendMessage, type Incoming, type Outgoing } from "../../../proto/src/control.ts";
import { plain, plainMessage } from "../../../proto/src/test-wire.ts";
import { AgentToFirewallSchema, FirewallToAgentSchema, InputRefused_Fault, type AgentToFirewall, type FirewallToAgent } from "../../../proto/gen/airlock/v1/agent_pb.ts";
import { PayloadOpener } from "../../../proto/src/age/stream.ts";
import { FirewallToHostSchema, HostToFirewallSchema } from "../../../proto/gen/airlock/v1/control_pb.ts";
import { silentLogger } from "../../../proto/src/log.ts";
import type { RoomPlan } from "../../../proto/src/room.ts";
import { socketPair } from "../../../proto/src/channel/test-sockets.ts";
import { HostChannel } from "./host-channel.ts";
import { serveAgent, type SessionOptions } from "./session.ts";
import { Violations } from "./violations.ts";
import { archiveEntryCost } from "../../../proto/src/archive.ts";
import { AirlockError } from "../../../proto/src/errors.ts";

const dir = mkdtempSync(path.join(tmpdir(), "airlock-session-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const collect = async (g: AsyncIterable<Buffer>): Promise<Buffer> => {
  const parts: Buffer[] = [];
  for await (const c of g) parts.push(c);
  return Buffer.concat(parts);
};

const analyst = X25519Identity.generate();
const room: RoomPlan = {
  name: "t",
  digest: "00".repeat(32),
  workload: { command: ["/bin/true"], env: {}, timeoutSeconds: 10 },
  inputs: [{ name: "corpus", mount: "/data/in/corpus", mode: "trusted", scope: "USER_PRIVATE" }],
  outputs: [
    { name: "counts", mount: "/data/out/counts", mode: "trusted", recipient: analyst.recipient.toString(), maxBytes: 100_000, format: "csv" },
    { name: "leak", mount: "/data/out/leak", mode: "open", maxBytes: 4096, format: "text" },
    { name: "dump", mount: "/data/out/dump", mode: "secure", maxBytes: 10, format: "bytes" },
  ],
  collaborators: [],
  governance: {},
  attestation: { firewall: "11".repeat(48), sandbox: "22".repeat(48), broker: "33".repeat(32) },
  canonical: { apiVersion: "airlock/v1", name: "t" },
  egress: [],
};

/** The host's side: serves the encrypted input, keeps every message and what each output sent. */
function playHost(sock: net.Socket, encrypted: Buffer): { messages: Record<string, unknown>[]; files: Map<string, Buffer>; frames: number[] } {
  const messages: Record<string, unknown>[] = [];
  const files = new Map<string, Buffer>();
  const frames: number[] = [];
  void (async () => {
    let current: string | undefined;
    try {
      for await (const m of readMessages(sock, FirewallToHostSchema, "the firewall")) {
        if (m.kind === "data") {
          if (current) files.set(current, Buffer.concat([files.get(current) ?? Buffer.alloc(0), m.data]));
          frames.push(m.data.length);
          continue;
        }
        const v = plainMessage(m.message);
        messages.push(v);
        if (v.type === "inputRequest") {
          await sendMessage(sock, HostToFirewallSchema, { case: "inputFile", value: { name: String(v.name), size: BigInt(encrypted.length) } });
          await sendBytes(sock, encrypted, 1000);
        }
        current = v.type === "sealedData" ? `${String(v.output)}.tar.age` : v.type === "openFile" ? `${String(v.output)}/${String(v.path)}` : undefined;
      }
    } catch {
      // closed
    }
  })();
  return { messages, files, frames };
}

/**
 * The agent's side, up to the run message, as sandbox-vm/src/agent/inputs.ts does it: each input's
 * payload opened with the key the firewall sent; returns the plaintext and the run message.
 */
async function playAgent(sock: net.Socket): Promise<{ input: Buffer; messages: AsyncGenerator<Incoming<FirewallToAgent>>; run?: Record<string, unknown>; aborted?: string }> {
  const messages = readMessages(sock, FirewallToAgentSchema, "the firewall", undefined, true);
  await say(sock, { case: "hello", value: { agent: "test" } });
  const parts: Buffer[] = [];
  let opener: PayloadOpener | undefined;
  const open = (chunks: () => Iterable<Buffer>): void => {
    try {
      for (const c of chunks()) parts.push(c);
    } catch (err) {
      if (!opener?.fault) throw err;
    }
  };
  for (;;) {
    const m = await messages.next();
    if (m.done) throw new Error("closed");
    const v = m.value;
    if (v.kind === "data") {
      expect(v.clear).toBe(true);
      if (!opener?.fault) open(() => opener!.push(v.data));
      continue;
    }
    const body = bodyOf(v.message);
    if (body.case === "input") opener = new PayloadOpener(Buffer.from(body.value.payloadKey));
    else if (body.case === "inputEnd") {
      if (!opener!.fault) open(() => opener!.end());
      const fault = opener!.fault;
      if (fault) await say(sock, { case: "inputRefused", value: { name: body.value.name, fault: fault.kind === "truncated" ? InputRefused_Fault.TRUNCATED : InputRefused_Fault.TAMPERED, chunk: BigInt(fault.chunk) } });
      else await say(sock, { case: "inputPlaced", value: { name: body.value.name } });
    } else if (body.case === "abort") return { input: Buffer.concat(parts), messages, aborted: body.value.reason };
    else if (body.case === "run") return { input: Buffer.concat(parts), messages, run: plain(body.value) as Record<string, unknown> };
  }
}

/** What the (fake) agent sends. */
const say = (sock: net.Socket, message: Outgoing<AgentToFirewall>): Promise<void> => sendMessage(sock, AgentToFirewallSchema, message);

interface FakeFile {
  name: string | Buffer;
  data: Buffer;
  mode?: number;
}

/** Sends one output as the agent does: its account (archive sizing), then each file. */
async function sendOutput(sock: net.Socket, output: string, files: FakeFile[], extra: { refused?: Partial<Record<"special" | "symlinks" | "badNames" | "unreadable", number>> } = {}): Promise<void> {
  const names = files.map((f) => (typeof f.name === "string" ? Buffer.from(f.name) : f.name));
  const bytes = files.reduce((n, f, i) => n + archiveEntryCost(names[i]!, f.data.length), 0);
  await say(sock, { case: "output", value: { output, files: files.length, bytes: BigInt(bytes), overLimit: false, refused: extra.refused ?? {} } });
  for (const [i, f] of files.entries()) {
    await say(sock, { case: "file", value: { output, name: names[i]!, mode: f.mode ?? 0o644, size: BigInt(f.data.length) } });
    await sendBytes(sock, f.data);
  }
}

async function setup(encrypted: Buffer, name: string) {
  const hostPair = await socketPair(dir);
  const agentPair = await socketPair(dir);
  const audit = await AuditLog.create(path.join(dir, `${name}.log`), { signer: signerFromPrivateKey(generateKeyPairSync("ed25519").privateKey), checkpointIntervalMs: 0 });
  const host = playHost(hostPair.server, encrypted);
  return { hostPair, agentPair, audit, host };
}

const records = (file: string): { kind: string; data: Record<string, unknown> }[] =>
  readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { kind: string; data: Record<string, unknown> });

/** GNU tar's listing of an archive: the recipient's view. */
function tarList(archive: Buffer): string[] {
  const f = path.join(dir, `list-${Math.random()}.tar`);
  writeFileSync(f, archive);
  return execFileSync("tar", ["-tf", f]).toString().trim().split("\n");
}

const MARKER = "SIDE-CHANNEL-MARKER-5e1f";

describe("serveAgent", () => {
  const corpusId = X25519Identity.generate();
  const roomId = X25519Identity.generate();
  const plaintext = Buffer.from("the cat and the dog\n".repeat(5000));

  async function run(name: string, r: RoomPlan, agentPart: (sock: net.Socket) => Promise<void>, extra: Partial<SessionOptions> = {}, onHost?: (h: ReturnType<typeof playHost>) => void) {
    const encrypted = await collect(encrypt([plaintext], [corpusId.recipient]));
    const { hostPair, agentPair, audit, host } = await setup(encrypted, name);
    onHost?.(host);
    const violations = new Violations();
    const session = serveAgent(agentPair.server, new HostChannel(hostPair.client), r, silentLogger, { identities: new Map([["corpus", [corpusId]]]), audit, violations, ...extra });
    const outcome = session.then(
      (v) => ({ result: v, error: undefined }),
      (e: unknown) => ({ result: undefined, error: e as AirlockError }),
    );
    const agent = await playAgent(agentPair.client);
    await agentPart(agentPair.client);
    const o = await outcome;
    await new Promise((res) => setTimeout(res, 50));
    await audit.close();
    await hostPair.close();
    await agentPair.close();
    return { ...o, host, agent, trail: records(audit.path), auditText: readFileSync(audit.path, "utf8") };
  }

  it("streams the decrypted input; each output leaves as its mode allows, sealed ones as one padded archive", async () => {
    const r = { ...room, console: { mode: "secure" as const, maxBytes: 4096 } };
    const out = await run("ok", r, async (sock) => {
      await say(sock, { case: "console", value: { bytes: 2n, truncated: false } });
      await sendBytes(sock, Buffer.from("hi"));
      await sendOutput(sock, "counts", [{ name: "counts.csv", data: Buffer.from("word,count\ncat,5000\n") }, { name: `dir/${MARKER}.csv`, data: Buffer.from("word,count\n") }]);
      await sendOutput(sock, "leak", [{ name: "leak.txt", data: Buffer.from("the cat\n") }]);
      await say(sock, { case: "output", value: { output: "dump", files: 0, bytes: 0n, overLimit: true, refused: { special: 2 } } });
      await say(sock, { case: "stray", value: { count: 1n } });
      await say(sock, { case: "exit", value: { code: 7 } });
    }, { roomRecipient: roomId.recipient.toString() });
    expect(out.error).toBeUndefined();
    expect(out.agent.input.equals(plaintext)).toBe(true);
    expect(out.agent.run).toMatchObject({ console: { maxBytes: 4096 }, outputs: [{ name: "counts" }, { name: "leak" }, { name: "dump" }] });
    expect(out.result!.exitCode).toBe(7);
    expect(Object.fromEntries(out.result!.decisions.map((d) => [d.output, d.decision]))).toEqual({ counts: "encrypt", leak: "withhold", dump: "withhold", console: "encrypt" });
    // The host got two sealed objects, named by the manifest; nothing else.
    expect([...out.host.files.keys()].sort()).toEqual(["console.tar.age", "counts.tar.age"]);
    const counts = await collect(decrypt([out.host.files.get("counts.tar.age")!], [analyst]));
    expect(counts.length).toBe(16 * 1024); // the smallest bucket
    expect(tarList(counts)).toEqual(["counts.csv", `dir/${MARKER}.csv`]);
    const consoleTar = await collect(decrypt([out.host.files.get("console.tar.age")!], [roomId]));
    expect(tarList(consoleTar)).toEqual(["console.log", "status.json"]);
    expect(consoleTar.toString()).toContain('{"exitStatus":7,"consoleTruncated":false}');
    // USER_PRIVATE: the host hears success or failure, never the status; names never in clear.
    expect(out.host.messages.find((m) => m.type === "workloadExit")).toEqual({ type: "workloadExit", succeeded: false });
    expect(JSON.stringify(out.host.messages)).not.toContain(MARKER);
    expect(out.auditText).not.toContain(MARKER);
    const exited = out.trail.find((x) => x.kind === "workload.exited")!;
    expect(exited.data).toEqual({ succeeded: false, sandboxScope: "USER_PRIVATE" });
    // Withheld outputs report no counts; violations are capped counters, written after the workload.
    const dump = out.trail.find((x) => x.kind === "output.decision" && x.data.output === "dump")!.data;
    expect(dump).not.toHaveProperty("files");
    expect(out.trail.filter((x) => x.kind === "violation").map((x) => x.data)).toEqual([
      { what: "output over its size limit: withheld", count: 1, cap: 3 },
      { what: "special files or symlinks in an output folder: not shipped", count: 2, cap: 3 },
      { what: "files written outside the output folders: not shipped", count: 1, cap: 3 },
    ]);
    expect(out.host.messages.at(-1)).toEqual({ type: "outputsComplete" });
  });

  it("the host sees the same sizes and frames whatever the names, sizes and counts inside a bucket", async () => {
    const shapes: FakeFile[][] = [
      [{ name: "a.csv", data: Buffer.from("word,count\n") }],
      Array.from({ length: 6 }, (_, i) => ({ name: `${MARKER}-${i}-${"x".repeat(120)}.csv`, data: Buffer.alloc(300 + i * 17, 0x41) })),
    ];
    const seen: { sizes: number[]; frames: number[] }[] = [];
    for (const [i, files] of shapes.entries()) {
      const out = await run(`bucket-${i}`, room, async (sock) => {
        await sendOutput(sock, "counts", files);
        await sendOutput(sock, "leak", []);
        await sendOutput(sock, "dump", []);
        await say(sock, { case: "stray", value: { count: 0n } });
        await say(sock, { case: "exit", value: { code: 0 } });
      });
      expect(out.error).toBeUndefined();
      seen.push({ sizes: [...out.host.files.values()].map((b) => b.length), frames: out.host.frames });
    }
    expect(seen[0]).toEqual(seen[1]);
  });

  it("counts violations up to a cap and quotes nothing the workload chose", async () => {
    const out = await run("capped", room, async (sock) => {
      await sendOutput(sock, "counts", [], { refused: { badNames: 1000, unreadable: 2 } });
      await sendOutput(sock, "leak", []);
      await sendOutput(sock, "dump", []);
      await say(sock, { case: "stray", value: { count: 123456n } });
      await say(sock, { case: "exit", value: { code: 0 } });
    });
    expect(out.error).toBeUndefined();
    const v = Object.fromEntries(out.trail.filter((x) => x.kind === "violation").map((x) => [x.data.what, x.data.count]));
    expect(v).toEqual({ "file names that are not valid UTF-8: not shipped": 3, "files that changed while they were collected: not shipped": 2, "files written outside the output folders: not shipped": 3 });
    expect(out.auditText).not.toContain("123456");
  });

  it("open outputs at DOMAIN_OWNED or below: released with safe names only, the exact status shown", async () => {
    const open: RoomPlan = { ...room, inputs: [{ ...room.inputs[0]!, scope: "PUBLIC" }] };
    const good = await run("open-good", open, async (sock) => {
      await sendOutput(sock, "counts", []);
      await sendOutput(sock, "leak", [{ name: "a.txt", data: Buffer.from("hello\n") }, { name: "sub/b.txt", data: Buffer.from("world\n") }]);
      await sendOutput(sock, "dump", []);
      await say(sock, { case: "stray", value: { count: 0n } });
      await say(sock, { case: "exit", value: { code: 3 } });
    });
    expect(good.error).toBeUndefined();
    expect(good.host.files.get("leak/a.txt")!.toString()).toBe("hello\n");
    expect(good.host.files.get("leak/sub/b.txt")!.toString()).toBe("world\n");
    expect(good.host.messages.find((m) => m.type === "workloadExit")).toEqual({ type: "workloadExit", succeeded: false, code: 3 });
    expect(good.trail.find((x) => x.kind === "output.decision" && x.data.output === "leak")!.data).toMatchObject({ decision: "release", files: 2, bytes: 12 });

    const hostile = await run("open-names", open, async (sock) => {
      await sendOutput(sock, "counts", []);
      await sendOutput(sock, "leak", [{ name: `\u001b[2J${MARKER}`, data: Buffer.from("x\n") }]);
      await sendOutput(sock, "dump", []);
      await say(sock, { case: "stray", value: { count: 0n } });
      await say(sock, { case: "exit", value: { code: 0 } });
    });
    expect(hostile.error).toBeUndefined();
    expect([...hostile.host.files.keys()]).toEqual(["counts.tar.age"]); // an empty sealed output still leaves, so emptiness is no signal
    expect(JSON.stringify(hostile.host.messages)).not.toContain(MARKER);
    expect(hostile.auditText).not.toContain(MARKER);
    expect(hostile.trail.find((x) => x.kind === "output.decision" && x.data.output === "leak")!.data).toMatchObject({ decision: "withhold" });
  });

  it("the owner's scope applies when it is stricter than the manifest's label", async () => {
    const lying: RoomPlan = { ...room, inputs: [{ ...room.inputs[0]!, scope: "PUBLIC" }] };
    const out = await run("owner", lying, async (sock) => {
      await sendOutput(sock, "counts", []);
      await sendOutput(sock, "leak", [{ name: "leak.txt", data: Buffer.from("the cat\n") }]);
      await sendOutput(sock, "dump", []);
      await say(sock, { case: "stray", value: { count: 0n } });
      await say(sock, { case: "exit", value: { code: 0 } });
    }, { ownerScopes: new Map([["corpus", "USER_PRIVATE"]]) });
    expect(out.error).toBeUndefined();
    expect([...out.host.files.keys()]).toEqual(["counts.tar.age"]);
    expect(out.trail.find((x) => x.kind === "input.served")!.data).toMatchObject({ scope: "USER_PRIVATE", manifestScope: "PUBLIC", ownerScope: "USER_PRIVATE" });
  });

  it("a hostile agent that lies about its files stops the run, and the error quotes none of it", async () => {
    const out = await run("liar", room, async (sock) => {
      await say(sock, { case: "output", value: { output: "counts", files: 1, bytes: 1024n, overLimit: false, refused: {} } });
      await say(sock, { case: "file", value: { output: "counts", name: Buffer.from(MARKER), mode: 0o644, size: 100n } });
      await sendBytes(sock, Buffer.alloc(200, 1));
    });
    expect(out.error).toBeInstanceOf(AirlockError);
    expect(out.error!.code).toBe("GUEST_PROTOCOL");
    expect(out.error!.message).not.toContain(MARKER);
  });

  it("with padTo, the host hears nothing after the start until the padded time", async () => {
    const padded: RoomPlan = { ...room, workload: { ...room.workload, padToSeconds: 2 } };
    let quietAfterOneSecond: Record<string, unknown>[] = [];
    let host: { messages: Record<string, unknown>[] } | undefined;
    const t0 = Date.now();
    const out = await run("padto", padded, async (sock) => {
      await sendOutput(sock, "counts", []);
      await sendOutput(sock, "leak", []);
      await sendOutput(sock, "dump", []);
      await say(sock, { case: "stray", value: { count: 0n } });
      await say(sock, { case: "exit", value: { code: 0 } });
      await new Promise((r) => setTimeout(r, 1000));
      quietAfterOneSecond = host ? [...host.messages] : [];
    }, {}, (h) => (host = h));
    expect(out.error).toBeUndefined();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2000);
    const started = quietAfterOneSecond.findIndex((m) => m.type === "workloadStarted");
    expect(started).toBeGreaterThanOrEqual(0);
    expect(quietAfterOneSecond.slice(started + 1).filter((m) => m.type !== "auditLines")).toEqual([]);
    expect(out.agent.run).toMatchObject({ padToSeconds: 2 });
  });

  it("a workload that never lets the run end is stopped at the deadline, outside the sandbox", async () => {
    const short: RoomPlan = { ...room, workload: { ...room.workload, timeoutSeconds: 1 } };
    const t0 = Date.now();
    const out = await run("deadline", short, async () => {}, { collectionBoundMs: 500 });
    expect(out.error?.code).toBe("TIMEOUT");
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(out.host.messages.some((m) => m.type === "outputsComplete")).toBe(false);
  });

  it("aborts before the workload starts when the input was tampered with", async () => {
    const encrypted = await collect(encrypt([plaintext], [corpusId.recipient]));
    encrypted[encrypted.length - 100]! ^= 1;
    const { hostPair, agentPair, audit, host } = await setup(encrypted, "bad");
    const session = serveAgent(agentPair.server, new HostChannel(hostPair.client), room, silentLogger, { identities: new Map([["corpus", [corpusId]]]), audit, violations: new Violations() });
    const failed = session.then(
      () => new Error("the session did not fail"),
      (e: unknown) => e as Error,
    );
    const agent = await playAgent(agentPair.client);
    expect(agent.aborted).toMatch(/input corpus refused/);
    const err = await failed;
    expect(err.message).toMatch(/input corpus: tampered: .*fails authentication.* at payload chunk \d+ \(found by the sandbox's agent/);
    expect(host.messages.some((m) => m.type === "workloadStarted")).toBe(false);
    expect(agent.input.length).toBeLessThan(plaintext.length);
    await audit.close();
    await hostPair.close();
    await agentPair.close();
  });
});
