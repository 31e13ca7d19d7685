// The channel with SEV-SNP evidence: reports from the emulated PSP reached through the real
// guest provider over a Unix socket, checked by host-tools' ReportVerifier (emulated root trusted).
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EmulatedPsp, listenPsp } from "../../host-tools/src/attestation/emulated-psp.ts";
import type { GuestLaunch, PspListener } from "../../host-tools/src/attestation/emulated-psp.ts";
import { ReportVerifier } from "../../host-tools/src/attestation/verify.ts";
import { EmulatedPspProvider } from "../../proto/src/attestation/provider.ts";
import { encodePolicy } from "../../proto/src/attestation/report.ts";
import { secureClient, secureServer } from "../../proto/src/channel/index.ts";
import { snpAttest, snpVerifyPeer } from "../../proto/src/channel/snp-evidence.ts";
import { connect, socketPair } from "../../proto/src/channel/test-sockets.ts";

const psp = EmulatedPsp.createInMemory({ product: "milan" });
const verifier = new ReportVerifier({ trustRoots: [psp.arkPem] });
const room = randomBytes(32); // the manifest digest both VMs were launched with (host_data)
const launch = (measurement: Buffer, hostData = room): GuestLaunch => ({ measurement, hostData, policy: encodePolicy({ smt: true }), reportId: randomBytes(32) });
const firewallImage = randomBytes(48);
const sandboxImage = randomBytes(48);

let dir: string;
const psps: PspListener[] = [];
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), "airlock-channel-snp-"));
});
afterAll(async () => {
  for (const l of psps) await l.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A guest's report provider backed by the emulated PSP serving that guest's launch. */
async function provider(l: GuestLaunch): Promise<EmulatedPspProvider> {
  const listener = await listenPsp(path.join(dir, `psp-${psps.length}.sock`), psp, l, { idleTimeoutMs: 5000 });
  psps.push(listener);
  return new EmulatedPspProvider({ connect: () => connect(listener.path), timeoutMs: 5000 });
}

async function run(sandboxLaunch: GuestLaunch) {
  const sp = await socketPair(dir);
  try {
    const [client, server] = await Promise.allSettled([
      // The agent expects the firewall's image; the enforcer expects the sandbox's.
      secureClient(sp.client, { attest: snpAttest(await provider(sandboxLaunch)), verifyPeer: snpVerifyPeer(verifier, { name: "firewall", measurement: firewallImage, hostData: room }), timeoutMs: 5000 }),
      secureServer(sp.server, { attest: snpAttest(await provider(launch(firewallImage))), verifyPeer: snpVerifyPeer(verifier, { name: "sandbox", measurement: sandboxImage, hostData: room }), timeoutMs: 5000 }),
    ]);
    return { client, server };
  } finally {
    await sp.close();
  }
}

describe("secure channel with SEV-SNP evidence (emulated PSP)", () => {
  it("opens between the expected images of the same room", async () => {
    const sp = await socketPair(dir);
    try {
      const [c, s] = await Promise.all([
        secureClient(sp.client, { attest: snpAttest(await provider(launch(sandboxImage))), verifyPeer: snpVerifyPeer(verifier, { name: "firewall", measurement: firewallImage, hostData: room }) }),
        secureServer(sp.server, { attest: snpAttest(await provider(launch(firewallImage))), verifyPeer: snpVerifyPeer(verifier, { name: "sandbox", measurement: sandboxImage, hostData: room }) }),
      ]);
      expect(c.peer).toEqual({ name: "firewall", measurement: firewallImage.toString("hex") });
      expect(s.peer).toEqual({ name: "sandbox", measurement: sandboxImage.toString("hex") });
      const got = new Promise<Buffer>((resolve) => s.stream.once("data", resolve));
      c.stream.write("ping");
      expect((await got).toString()).toBe("ping");
      c.stream.destroy();
      s.stream.destroy();
    } finally {
      await sp.close();
    }
  });

  it("refuses a sandbox running another image, on both sides", async () => {
    const { client, server } = await run(launch(randomBytes(48)));
    expect(server.status).toBe("rejected");
    expect((server as PromiseRejectedResult).reason).toMatchObject({ code: "REPORT_REJECTED", message: expect.stringMatching(/sandbox's attestation report rejected: measurement/) });
    expect((client as PromiseRejectedResult).reason).toMatchObject({ code: "REPORT_REJECTED" });
  });

  it("refuses malformed evidence and a genuine report bound to other report data", async () => {
    const check = snpVerifyPeer(verifier, { name: "sandbox", measurement: sandboxImage, hostData: room });
    await expect(check(Buffer.from("not evidence"), randomBytes(64))).rejects.toMatchObject({ code: "REPORT_INVALID" });
    const stale = await snpAttest(await provider(launch(sandboxImage)))(randomBytes(64));
    await expect(check(stale, randomBytes(64))).rejects.toMatchObject({ code: "REPORT_REJECTED", message: expect.stringMatching(/report-data/) });
  });

  it("refuses a sandbox launched for another room (host_data)", async () => {
    const { server } = await run(launch(sandboxImage, randomBytes(32)));
    expect((server as PromiseRejectedResult).reason).toMatchObject({ code: "REPORT_REJECTED", message: expect.stringMatching(/host-data/) });
  });
});
