// `airlock kbs add-key`, `kbs serve` and `kbs list` as an operator runs them, with the firewall
// side's client attesting through the emulated PSP; then `airlock audit verify` on the broker's log.
import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { requestKey } from "../../proto/src/attestation/kbs-client.ts";
import { encodePolicy } from "../../proto/src/attestation/report.ts";
import { EmulatedPsp } from "../../host-tools/src/attestation/emulated-psp.ts";

const repo = path.resolve(import.meta.dirname, "../..");
const tmp = mkdtempSync(path.join(tmpdir(), "airlock-kbs-cli-"));
const state = path.join(tmp, "state");
let server: ChildProcess | undefined;
afterAll(() => {
  server?.kill("SIGKILL");
  rmSync(tmp, { recursive: true, force: true });
});

const cli = ["--import", "tsx", path.join(repo, "host-tools/src/main.ts")];
function airlock(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...cli, ...args], { cwd: repo, timeout: 30_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 99) : 0, stdout, stderr }));
  });
}

describe("airlock kbs", () => {
  it("registers a key, serves it to an attested VM only, and leaves a verifiable audit log", async () => {
    const psp = EmulatedPsp.open(path.join(tmpdir(), "airlock-test-emulated-psp"));
    const launch = { measurement: randomBytes(48), hostData: randomBytes(32), policy: encodePolicy({ smt: true }), reportId: randomBytes(32) };
    const secret = randomBytes(40);
    writeFileSync(path.join(tmp, "key.bin"), secret);
    writeFileSync(path.join(tmp, "ark.pem"), psp.arkPem);
    const add = await airlock("kbs", "add-key", "--state", state, "--id", "corpus", "--key-file", path.join(tmp, "key.bin"), "--measurement", launch.measurement.toString("hex"), "--host-data", launch.hostData.toString("hex"), "--trust-root", path.join(tmp, "ark.pem"));
    expect(add.stderr).toBe("");
    expect(add.code).toBe(0);
    const bad = await airlock("kbs", "add-key", "--state", state, "--id", "x", "--generate", "--measurement", "1234");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/96-hex-digit/);
    // A key bound to no room is refused unless asked for loudly.
    const anyRoom = ["kbs", "add-key", "--state", state, "--id", "shared", "--generate", "--measurement", launch.measurement.toString("hex"), "--trust-root", path.join(tmp, "ark.pem")];
    const noHost = await airlock(...anyRoom);
    expect(noHost.code).toBe(2);
    expect(noHost.stderr).toMatch(/no host data, so any room whose firewall matches a measurement would receive it; give --host-data DIGEST/);
    const both = await airlock(...anyRoom, "--any-room", "--host-data", launch.hostData.toString("hex"));
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--any-room contradicts the host data/);
    // A scope below USER_PRIVATE needs its own flag, on add-key as on manifest grant.
    const low = await airlock(...anyRoom, "--any-room", "--scope", "PUBLIC");
    expect(low.code).toBe(2);
    expect(low.stderr).toMatch(/scope PUBLIC is below USER_PRIVATE.*--allow-scope-below-user-private/s);
    const shared = await airlock(...anyRoom, "--any-room", "--scope", "DOMAIN_OWNED", "--allow-scope-below-user-private");
    expect(shared.code, shared.stderr).toBe(0);
    expect(shared.stderr).toMatch(/^WARNING: key "shared" is registered for ANY ROOM/);
    expect(shared.stdout).toMatch(/ANY ROOM, scope DOMAIN_OWNED/);
    // ...and a key bound to a room is not re-bound to another digest.
    const rebind = await airlock("kbs", "add-key", "--state", state, "--id", "corpus", "--generate", "--measurement", launch.measurement.toString("hex"), "--host-data", "00".repeat(32));
    expect(rebind.code).toBe(2);
    expect(rebind.stderr).toMatch(new RegExp(`key corpus is bound to room digest ${launch.hostData.toString("hex")}`));
    const list = await airlock("kbs", "list", "--state", state, "--json");
    expect(JSON.parse(list.stdout)).toEqual([
      { id: "corpus", measurements: [launch.measurement.toString("hex")] },
      { id: "shared", measurements: [launch.measurement.toString("hex")] },
    ]);

    server = spawn(process.execPath, [...cli, "kbs", "serve", "--state", state, "--listen", "127.0.0.1:0", "--json"], { cwd: repo, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, AIRLOCK_LOG: "warn" } });
    const { endpoint, publicKey } = await new Promise<{ endpoint: string; publicKey: string }>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`kbs serve did not start: ${out}`)), 30_000);
      server!.stdout!.on("data", (c: Buffer) => {
        out += c.toString();
        if (/^}\s*$/m.test(out)) {
          clearTimeout(timer);
          resolve(JSON.parse(out));
        }
      });
    });
    const provider = (l: typeof launch) => ({ kind: "emulated" as const, getReport: async (rd: Buffer) => psp.evidence(l, { reportData: rd, vmpl: 0 }) });
    const released = await requestKey({ endpoint, keyId: "corpus", provider: provider(launch), brokerPublicKey: publicKey });
    expect(released.key.equals(secret)).toBe(true);
    expect(released.scope).toBe("USER_PRIVATE");
    // The any-room key goes to a firewall of any room (another host_data), with its owner's scope.
    expect((await requestKey({ endpoint, keyId: "shared", provider: provider({ ...launch, hostData: randomBytes(32) }), brokerPublicKey: publicKey })).scope).toBe("DOMAIN_OWNED");
    await expect(requestKey({ endpoint, keyId: "corpus", provider: provider({ ...launch, measurement: randomBytes(48) }), brokerPublicKey: publicKey })).rejects.toThrow(/measurement/);

    const exited = new Promise<number | null>((resolve) => server!.on("exit", (code) => resolve(code)));
    server.kill("SIGTERM");
    expect(await exited).toBe(0);
    server = undefined;
    const [log] = readdirSync(path.join(state, "audit"));
    const audit = await airlock("audit", "verify", path.join(state, "audit", log!), "--no-attestation"); // the broker is not attested
    expect(audit.code).toBe(0);
    expect(audit.stdout).toMatch(/closed by a signed record/);
  });
});
