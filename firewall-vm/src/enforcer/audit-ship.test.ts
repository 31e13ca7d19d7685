// The enforcer's audit records reach the host as they are acknowledged: over a real Unix socket,
// each append() resolves only after its line was sent, so when the enforcer dies abruptly the host
// holds every record it had acted on, and that log verifies (with its unsigned tail reported).
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AuditLog, signerFromPrivateKey, verifyAuditLog } from "../../../proto/src/audit/index.ts";
import { readMessages } from "../../../proto/src/control.ts";
import { FirewallToHostSchema } from "../../../proto/gen/airlock/v1/control_pb.ts";
import { HostChannel } from "./host-channel.ts";
import { ShippedAudit } from "./audit-ship.ts";

const dir = mkdtempSync(path.join(tmpdir(), "airlock-ship-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A host end that keeps what it is sent, as host-link.ts does. */
async function hostEnd(): Promise<{ socketPath: string; received: () => string; server: net.Server; closed: Promise<void> }> {
  const socketPath = path.join(dir, `h-${Math.random().toString(16).slice(2)}.sock`);
  let text = "";
  let onClosed!: () => void;
  const closed = new Promise<void>((r) => (onClosed = r));
  const server = net.createServer((c) => {
    c.on("error", () => {});
    void (async () => {
      let want = 0;
      try {
        for await (const m of readMessages(c, FirewallToHostSchema, "the firewall")) {
          if (m.kind === "message" && m.message.body.case === "auditLines") want = m.message.body.value.size;
          else if (m.kind === "data" && want > 0) {
            text += m.data.toString("utf8");
            want -= m.data.length;
          }
        }
      } catch {
        // the enforcer went away mid-frame
      }
      onClosed();
    })();
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  return { socketPath, received: () => text, server, closed };
}

describe("ShippedAudit", () => {
  it("puts every acknowledged record on the host before append() returns; the host's copy verifies after an abrupt end", async () => {
    const host = await hostEnd();
    const sock = net.connect(host.socketPath);
    await new Promise((r) => sock.once("connect", r));
    const log = await AuditLog.create(path.join(dir, "a.log"), { signer: signerFromPrivateKey(generateKeyPairSync("ed25519").privateKey), checkpointIntervalMs: 0, checkpointEvery: 3 });
    const audit = new ShippedAudit(log, new HostChannel(sock));
    for (let i = 0; i < 5; i++) await audit.append("input.served", { input: `in${i}` });
    // kill -9: the socket is torn down with no goodbye and no closing record.
    sock.destroy();
    await host.closed;
    const lines = host.received().trim().split("\n");
    const kinds = lines.map((l) => (JSON.parse(l) as { kind: string }).kind);
    expect(kinds.filter((k) => k === "input.served")).toHaveLength(5);
    expect(kinds).toContain("checkpoint");
    const v = verifyAuditLog(host.received(), { allowUnsignedTail: true });
    expect(v.valid).toBe(true);
    expect(v.records).toBe(lines.length);
    await log.abandon();
    host.server.close();
  });

  it("ends with the signed closed record when the run ends normally", async () => {
    const host = await hostEnd();
    const sock = net.connect(host.socketPath);
    await new Promise((r) => sock.once("connect", r));
    const log = await AuditLog.create(path.join(dir, "b.log"), { signer: signerFromPrivateKey(generateKeyPairSync("ed25519").privateKey), checkpointIntervalMs: 0 });
    const audit = new ShippedAudit(log, new HostChannel(sock));
    await audit.append("workload.started", {});
    await audit.close({ exitCode: 0 });
    sock.end();
    await host.closed;
    const v = verifyAuditLog(host.received(), { requireClosed: true });
    expect(v.end).toBe("closed");
    expect(v.valid).toBe(true);
    host.server.close();
  });
});
