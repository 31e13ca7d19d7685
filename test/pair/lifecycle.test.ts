// Issue 2 end to end, with real QEMU guests under the accelerator this host allows: the pair's
// lifecycle from another shell, the QMP view of the sandbox, fail-closed stops, clean teardown.
import { existsSync, mkdirSync, readFileSync, writeFileSync, cpSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { QmpClient } from "../../host-tools/src/qmp/client.ts";
import { airlock, killQemus, qemuPids, repoRoot, testStateDir, waitFor } from "../helpers.ts";
import { scratchDir } from "../scratch.ts";

const state = testStateDir();
const env = { AIRLOCK_STATE: state };
const hello = path.join(repoRoot, "examples/hello/room.yaml");

afterAll(() => killQemus("lc-"));

interface Status {
  status: string;
  reason?: string;
  workloadExitCode?: number;
  vms: Record<"firewall" | "sandbox", { pid: number; status: string; devices?: string[]; inspectQmp?: string }>;
}

async function status(name: string): Promise<Status> {
  const r = await airlock(["status", name, "--json"], env);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Status;
}

describe("a VM pair started with airlock up", () => {
  it("runs both VMs, shows the sandbox has no NIC, fails closed when the firewall dies, and goes down cleanly", async () => {
    const up = await airlock(["up", hello, "--name", "lc-a", "--json"], env);
    expect(up.code, up.stderr).toBe(0);
    const s = await status("lc-a");
    expect(s.status).toBe("running");
    expect(s.vms.firewall.status).toBe("running");
    expect(s.vms.sandbox.status).toBe("running");
    expect(qemuPids("lc-a")).toHaveLength(2);

    // What QEMU itself says about the sandbox, through the inspection QMP socket.
    const qmp = await QmpClient.connect(s.vms.sandbox.inspectQmp!);
    const buses = await qmp.execute<{ devices: { class_info: { class: number }; id: { vendor: number; device: number } }[] }[]>("query-pci");
    const devices = buses.flatMap((b) => b.devices);
    expect(devices.filter((d) => d.class_info.class >> 8 === 0x02)).toEqual([]);
    expect(devices.filter((d) => d.class_info.class === 0x0c03)).toEqual([]);
    expect(devices.some((d) => d.id.vendor === 0x1af4 && d.id.device === 0x1053)).toBe(true);
    expect(await qmp.execute("query-block")).toEqual([]);
    expect(await qmp.execute("query-status")).toMatchObject({ running: true });
    qmp.close();

    // Kill the firewall's QEMU: the sandbox must be gone within 5 s and status must say why.
    process.kill(s.vms.firewall.pid, "SIGKILL");
    const ms = await waitFor("sandbox QEMU stopped", () => !existsSync(`/proc/${s.vms.sandbox.pid}`), 5_000);
    expect(ms).toBeLessThan(5_000);
    await waitFor("state written", () => readFileSync(path.join(state, "pairs/lc-a/state.json"), "utf8").includes('"failed"'), 5_000);
    const after = await status("lc-a");
    expect(after.status).toBe("failed");
    expect(after.reason).toMatch(/firewall VM: QEMU killed by SIGKILL.*fail closed/);

    expect((await airlock(["down", "lc-a"], env)).code).toBe(0);
    expect(qemuPids("lc-a")).toEqual([]);
    expect((await airlock(["down", "lc-a"], env)).code).toBe(0);
    expect((await airlock(["status", "lc-a"], env)).code).toBe(2);
  });

  it("refuses a second pair of the same name, keeps the logs readable, and down stops a running pair", async () => {
    const up = await airlock(["up", hello, "--name", "lc-b"], env);
    expect(up.code, up.stderr).toBe(0);
    const again = await airlock(["up", hello, "--name", "lc-b"], env);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("already running");
    const logs = await airlock(["logs", "lc-b"], env);
    expect(logs.stdout).toContain("airlock-guest: firewall init");
    const sandboxLogs = await airlock(["logs", "lc-b", "--vm", "sandbox"], env);
    expect(sandboxLogs.code).toBe(2);
    expect(sandboxLogs.stderr).toContain("not captured");
    const down = await airlock(["down", "lc-b"], env);
    expect(down.code).toBe(0);
    expect(qemuPids("lc-b")).toEqual([]);
  });

  it("takes its VMs with it when the supervisor is killed", async () => {
    const up = await airlock(["up", hello, "--name", "lc-c"], env);
    expect(up.code, up.stderr).toBe(0);
    const pid = Number(readFileSync(path.join(state, "pairs/lc-c/supervisor.pid"), "utf8"));
    process.kill(pid, "SIGKILL");
    await waitFor("QEMUs gone with their supervisor", () => qemuPids("lc-c").length === 0, 5_000);
    expect((await status("lc-c")).status).toBe("failed");
    expect((await airlock(["down", "lc-c"], env)).code).toBe(0);
  });
});

describe("airlock run", () => {
  it("runs the hello example to its end and writes its released output", async () => {
    const out = scratchDir("airlock-out-");
    const r = await airlock(["run", hello, "--out", out, "--name", "lc-run"], env);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(path.join(out, "greeting/greeting.txt"), "utf8")).toMatch(/^hello from the sandbox\nLinux 6\.1/);
    // The workload's stdout/stderr are data: the room declares a secure console, sealed to the room.
    expect(r.stderr).toContain("output console: encrypt (secure");
    expect(readFileSync(path.join(out, "console.tar.age")).subarray(0, 21).toString()).toBe("age-encryption.org/v1");
    expect(qemuPids("lc-run")).toEqual([]);
    expect(existsSync(path.join(state, "pairs/lc-run"))).toBe(false);
  });

  it("exits with the workload's status", async () => {
    const dir = scratchDir("airlock-room-");
    cpSync(path.join(repoRoot, "examples/hello"), dir, { recursive: true });
    writeFileSync(path.join(dir, "workload/run.sh"), "#!/bin/sh\necho failing on purpose\nexit 7\n");
    const out = path.join(dir, "out");
    mkdirSync(out);
    const r = await airlock(["run", path.join(dir, "room.yaml"), "--out", out, "--name", "lc-exit"], env);
    expect(r.code, r.stderr).toBe(7);
    expect(qemuPids("lc-exit")).toEqual([]);
  });

  it("leaves no QEMU behind when interrupted while booting", async () => {
    const out = scratchDir("airlock-out-");
    const { spawn } = await import("node:child_process");
    const child = spawn(process.execPath, [path.join(repoRoot, "host-tools/bin/airlock.mjs"), "run", hello, "--out", out, "--name", "lc-int"], { env: { ...process.env, ...env }, stdio: "ignore" });
    await waitFor("both QEMUs started", () => qemuPids("lc-int").length === 2, 120_000);
    child.kill("SIGINT");
    const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
    expect(code).not.toBe(0);
    await waitFor("no QEMU left", () => qemuPids("lc-int").length === 0, 5_000);
  });
});

describe("bad input", () => {
  it("names the manifest file, the field and what was expected", async () => {
    const dir = scratchDir("airlock-room-");
    cpSync(path.join(repoRoot, "examples/hello"), dir, { recursive: true });
    const file = path.join(dir, "room.yaml");
    writeFileSync(file, readFileSync(file, "utf8").replace('command: ["/bin/sh", "/workload/run.sh"]', "command: 42"));
    const r = await airlock(["up", file], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(file);
    expect(r.stderr).toContain("workload.command: expected a non-empty list of non-empty strings");
    expect(r.stderr).toContain("got 42");
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
