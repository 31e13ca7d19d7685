// The agent link's trust checks (proto/src/agent-link.ts) with the real pieces over Unix sockets:
// the emulated PSP serving each VM's launch, the guest provider, the channel handshake. The
// firewall pins the sandbox's measurement and the room; the sandbox holds the firewall to its own
// root and its own host_data.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EmulatedPsp, listenPsp } from "../../host-tools/src/attestation/emulated-psp.ts";
import type { GuestLaunch, PspListener } from "../../host-tools/src/attestation/emulated-psp.ts";
import { EmulatedPspProvider } from "../../proto/src/attestation/provider.ts";
import { encodePolicy } from "../../proto/src/attestation/report.ts";
import { secureClient, secureServer } from "../../proto/src/channel/index.ts";
import { connect, socketPair } from "../../proto/src/channel/test-sockets.ts";
import { roomChannelOptions } from "../../proto/src/agent-link.ts";

const psp = EmulatedPsp.createInMemory({ product: "milan" });
const otherPsp = EmulatedPsp.createInMemory({ product: "milan" });
const room = randomBytes(32);
const firewallImage = randomBytes(48);
const sandboxImage = randomBytes(48);
const launch = (measurement: Buffer, hostData = room): GuestLaunch => ({ measurement, hostData, policy: encodePolicy({ smt: true }), reportId: randomBytes(32) });

let dir: string;
const listeners: PspListener[] = [];
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), "airlock-agent-link-"));
});
afterAll(async () => {
  for (const l of listeners) await l.close();
  rmSync(dir, { recursive: true, force: true });
});

async function provider(l: GuestLaunch, from = psp): Promise<EmulatedPspProvider> {
  const listener = await listenPsp(path.join(dir, `psp-${listeners.length}.sock`), from, l, { idleTimeoutMs: 5000 });
  listeners.push(listener);
  return new EmulatedPspProvider({ connect: () => connect(listener.path), timeoutMs: 5000 });
}

/** The enforcer (expects sandboxImage in this room) and the agent (expects nothing given). */
async function pair(firewall: EmulatedPspProvider, sandbox: EmulatedPspProvider) {
  const sockets = await socketPair(dir);
  const server = secureServer(sockets.server, roomChannelOptions(firewall, { peer: "sandbox", measurement: sandboxImage, hostData: room, timeoutMs: 10_000 }));
  const client = secureClient(sockets.client, roomChannelOptions(sandbox, { peer: "firewall", timeoutMs: 10_000 }));
  const [s, c] = await Promise.allSettled([server, client]);
  await sockets.close();
  return { server: s, client: c };
}

function reason(r: PromiseSettledResult<unknown>): string {
  return r.status === "rejected" ? String((r.reason as Error).message) : "opened";
}

describe("agent link trust", () => {
  it("opens between the expected sandbox and a firewall of the same room and root", async () => {
    const sockets = await socketPair(dir);
    const [s, c] = await Promise.all([
      secureServer(sockets.server, roomChannelOptions(await provider(launch(firewallImage)), { peer: "sandbox", measurement: sandboxImage, hostData: room })),
      secureClient(sockets.client, roomChannelOptions(await provider(launch(sandboxImage)), { peer: "firewall" })),
    ]);
    expect(s.peer).toEqual({ name: "sandbox", measurement: sandboxImage.toString("hex"), hostData: room.toString("hex") });
    expect(c.peer).toEqual({ name: "firewall", measurement: firewallImage.toString("hex"), hostData: room.toString("hex") });
    const got = new Promise<Buffer>((resolve) => s.stream.once("data", resolve));
    c.stream.write(Buffer.from("hello through the channel"));
    expect((await got).toString()).toBe("hello through the channel");
    s.stream.destroy();
    c.stream.destroy();
    await sockets.close();
  });

  it("the firewall refuses a sandbox launched from another image", async () => {
    const r = await pair(await provider(launch(firewallImage)), await provider(launch(randomBytes(48))));
    expect(reason(r.server)).toMatch(/sandbox's attestation report rejected: measurement/);
    expect(reason(r.client)).toMatch(/refused the handshake/);
  });

  it("the sandbox refuses a firewall launched for another room", async () => {
    const r = await pair(await provider(launch(firewallImage, randomBytes(32))), await provider(launch(sandboxImage)));
    expect(reason(r.client)).toMatch(/firewall's attestation report rejected: host-data/);
    expect(r.server.status).toBe("rejected");
  });

  it("the sandbox refuses a firewall whose report chains to another root", async () => {
    const r = await pair(await provider(launch(firewallImage), otherPsp), await provider(launch(sandboxImage)));
    expect(reason(r.client)).toMatch(/firewall's attestation report rejected: root/);
    expect(r.server.status).toBe("rejected");
  });
});
