// serveAgent over real Unix sockets, without guests: the test plays the host (serving an age file
// when asked, collecting reports and files) and the sandbox agent (placing the input, sending
// outputs). The age format, the policy and the audit log are the real ones.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { generateKeyPairSync } from "node:crypto";
import type net from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { decrypt, encrypt, X25519Identity } from "../../../proto/src/age/index.ts";
import { AuditLog, signerFromPrivateKey } from "../../../proto/src/audit/index.ts";
import { readMessages, sendBytes, sendMessage, type Incoming } from "../../../proto/src/control.ts";
import { silentLogger } from "../../../proto/src/log.ts";
import type { RoomPlan } from "../../../proto/src/room.ts";
import { socketPair } from "../../../proto/src/channel/test-sockets.ts";
import { HostChannel } from "./host-channel.ts";
import { serveAgent } from "./session.ts";

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
    { name: "counts", mount: "/data/out/counts", mode: "trusted", recipient: analyst.recipient.toString(), maxBytes: 1000, format: "csv" },
    { name: "leak", mount: "/data/out/leak", mode: "open", maxBytes: 1000, format: "text" },
    { name: "dump", mount: "/data/out/dump", mode: "secure", maxBytes: 10, format: "bytes" },
  ],
  collaborators: [],
  governance: {},
};

/** The host's side: serves the encrypted input, keeps every message and released file. */
function playHost(sock: net.Socket, encrypted: Buffer): { messages: Record<string, unknown>[]; files: Map<string, Buffer> } {
  const messages: Record<string, unknown>[] = [];
  const files = new Map<string, Buffer>();
  void (async () => {
    let current: string | undefined;
    try {
      for await (const m of readMessages(sock)) {
        if (m.kind === "data") {
          if (current) files.set(current, Buffer.concat([files.get(current) ?? Buffer.alloc(0), m.data]));
          continue;
        }
        messages.push(m.value);
        if (m.value.type === "input-request") {
          await sendMessage(sock, { type: "input-file", name: m.value.name, size: encrypted.length });
          await sendBytes(sock, encrypted, 1000);
        }
        current = m.value.type === "output-file" ? `${String(m.value.output)}/${String(m.value.path)}` : undefined;
      }
    } catch {
      // closed
    }
  })();
  return { messages, files };
}

/** The agent's side, up to the run message; returns the placed input and the run message. */
async function playAgent(sock: net.Socket): Promise<{ input: Buffer; messages: AsyncGenerator<Incoming>; aborted?: string }> {
  const messages = readMessages(sock);
  await sendMessage(sock, { type: "hello", agent: "test" });
  const parts: Buffer[] = [];
  for (;;) {
    const m = await messages.next();
    if (m.done) throw new Error("closed");
    const v = m.value;
    if (v.kind === "data") parts.push(v.data);
    else if (v.value.type === "input-end") await sendMessage(sock, { type: "input-placed", name: v.value.name });
    else if (v.value.type === "abort") return { input: Buffer.concat(parts), messages, aborted: String(v.value.reason) };
    else if (v.value.type === "run") return { input: Buffer.concat(parts), messages };
  }
}

async function setup(encrypted: Buffer, name: string) {
  const hostPair = await socketPair(dir);
  const agentPair = await socketPair(dir);
  const audit = await AuditLog.create(path.join(dir, `${name}.log`), { signer: signerFromPrivateKey(generateKeyPairSync("ed25519").privateKey), checkpointIntervalMs: 0 });
  const host = playHost(hostPair.server, encrypted);
  return { hostPair, agentPair, audit, host };
}

describe("serveAgent", () => {
  const corpusId = X25519Identity.generate();
  const plaintext = Buffer.from("the cat and the dog\n".repeat(5000));

  it("streams the decrypted input to the agent, then releases each output only in the form its mode allows", async () => {
    const encrypted = await collect(encrypt([plaintext], [corpusId.recipient]));
    const { hostPair, agentPair, audit, host } = await setup(encrypted, "ok");
    const session = serveAgent(agentPair.server, new HostChannel(hostPair.client), room, silentLogger, { identities: new Map([["corpus", [corpusId]]]), audit });
    const agent = await playAgent(agentPair.client);
    expect(agent.input.equals(plaintext)).toBe(true);
    const send = async (output: string, p: string, data: Buffer): Promise<void> => {
      await sendMessage(agentPair.client, { type: "file", output, path: p, size: data.length });
      await sendBytes(agentPair.client, data);
    };
    await send("console", "console.log", Buffer.from("hi"));
    await send("counts", "counts.csv", Buffer.from("word,count\ncat,5000\n"));
    await send("leak", "leak.txt", Buffer.from("the cat and the dog\n"));
    await sendMessage(agentPair.client, { type: "output-note", output: "dump", skipped: [], overLimit: true });
    await sendMessage(agentPair.client, { type: "stray-files", count: 1, paths: ["/tmp/x"] });
    await sendMessage(agentPair.client, { type: "exit", code: 0 });
    const result = await session;
    expect(result.exitCode).toBe(0);
    expect(Object.fromEntries(result.decisions.map((d) => [d.output, d.decision.decision]))).toEqual({ console: "withhold", counts: "encrypt", leak: "withhold", dump: "withhold" });
    // Only the trusted output reached the host, and only the analyst can read it.
    await new Promise((r) => setTimeout(r, 50));
    expect([...host.files.keys()]).toEqual(["counts/counts.csv.age"]);
    expect((await collect(decrypt([host.files.get("counts/counts.csv.age")!], [analyst]))).toString()).toBe("word,count\ncat,5000\n");
    await audit.close();
    const kinds = readFileSync(audit.path, "utf8").split("\n").filter(Boolean).map((l) => (JSON.parse(l) as { kind: string }).kind);
    expect(kinds.filter((k) => k === "violation")).toHaveLength(2);
    expect(kinds).toEqual(expect.arrayContaining(["input.served", "workload.started", "workload.exited", "output.decision"]));
    await hostPair.close();
    await agentPair.close();
  });

  it("aborts before the workload starts when the input was tampered with", async () => {
    const encrypted = await collect(encrypt([plaintext], [corpusId.recipient]));
    encrypted[encrypted.length - 100]! ^= 1;
    const { hostPair, agentPair, audit, host } = await setup(encrypted, "bad");
    const session = serveAgent(agentPair.server, new HostChannel(hostPair.client), room, silentLogger, { identities: new Map([["corpus", [corpusId]]]), audit });
    const failed = session.then(
      () => new Error("the session did not fail"),
      (e: unknown) => e as Error,
    );
    const agent = await playAgent(agentPair.client);
    expect(agent.aborted).toMatch(/input corpus refused/);
    const err = await failed;
    expect(err.message).toMatch(/input corpus: .*fails authentication/);
    expect(host.messages.some((m) => m.type === "workload-started")).toBe(false);
    await audit.close();
    await hostPair.close();
    await agentPair.close();
  });
});
