// A real pair on a "remote" host reached only through SSH (a throwaway Debian sshd on loopback,
// the remote airlock being this checkout with its own state and cache folders): up, status, logs,
// down, then run with --out brought back.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { airlock, killQemus, repoRoot } from "../helpers.ts";
import { scratchDir } from "../scratch.ts";
import { startSshd, type TestSshd } from "./sshd.ts";

let sshd: TestSshd;
const work = scratchDir("airlock-remote-pair-");
const hello = path.join(repoRoot, "examples/hello/room.yaml");
const hosts = path.join(work, "hosts.yaml");
const env = { AIRLOCK_HOSTS: hosts, AIRLOCK_STATE: path.join(work, "local-state"), SSH_AUTH_SOCK: "" };

beforeAll(async () => {
  sshd = await startSshd();
  writeFileSync(
    hosts,
    `hosts:\n  lab:\n    url: ssh://root@127.0.0.1:${sshd.port}\n    identity: ${sshd.userKey}\n    knownHosts: ${sshd.knownHosts}\n    airlock: ${repoRoot}\n    env: {AIRLOCK_STATE: ${path.join(work, "remote-state")}, AIRLOCK_CACHE: ${path.join(work, "remote-cache")}}\n`,
  );
});
afterAll(async () => {
  killQemus("rh-");
  await sshd?.stop();
});

describe("a pair on a remote host over SSH", () => {
  it("goes up there (images uploaded, the broker relayed), shows in status, survives the SSH session, and goes down", async () => {
    const up = await airlock(["up", hello, "--name", "rh-a", "--host", "lab", "--json"], env, 400_000);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toMatch(/upload done: .* every file verified/);
    const state = JSON.parse(up.stdout) as { status: string; supervisorPid: number };
    expect(state.status).toBe("running");
    // The SSH session is over; the remote supervisor is not.
    const st = await airlock(["status", "rh-a", "--host", "lab", "--json"], env);
    expect(st.code, st.stderr).toBe(0);
    expect(JSON.parse(st.stdout)).toMatchObject({ name: "rh-a", status: "running" });
    const all = await airlock(["status", "--all-hosts", "--json"], env);
    expect(all.code, all.stderr).toBe(0);
    expect(JSON.parse(all.stdout)).toEqual([{ host: "local", pairs: [] }, { host: "lab", pairs: [expect.objectContaining({ name: "rh-a" })] }]);
    const logs = await airlock(["logs", "rh-a", "--host", "lab"], env);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout.length).toBeGreaterThan(0);
    const down = await airlock(["down", "rh-a", "--host", "lab"], env);
    expect(down.code, down.stderr).toBe(0);
    expect(existsSync(path.join(work, "remote-state/pairs/rh-a"))).toBe(false);
  }, 450_000);

  it("runs there and brings --out back, verified", async () => {
    const out = path.join(work, "out");
    const r = await airlock(["run", hello, "--out", out, "--name", "rh-run", "--host", "lab"], env, 400_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/upload done: 0\.0 MiB sent/);
    expect(r.stderr).toMatch(/remote: .*workload/);
    expect(r.stderr).toMatch(/brought back \d+ file\(s\)/);
    expect(readFileSync(path.join(out, "greeting/greeting.txt"), "utf8")).toMatch(/hello/);
    expect(JSON.parse(readFileSync(path.join(out, "summary.json"), "utf8"))).toMatchObject({ completed: true });
  }, 450_000);
});
