// Issue 13 point 2 end to end: eight `airlock up`s of a small room at once on this one host, under
// TCG (sixteen guests on the shared cores), through the real CLI. All reach ready with no two
// sharing a slot, a socket or a QEMU; a ninth is refused for capacity while they run, a second
// start of a running name is refused; all go down cleanly and free their claims.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { airlock, killQemus, qemuPids, repoRoot, testStateDir } from "../helpers.ts";

const room = path.join(repoRoot, "test/fleet/rooms/small/room.yaml");
const state = testStateDir();
// Capacity from the operator's figures, not this machine's: room for eight of these pairs
// (8 × 1280 MiB, 8 × 2 vCPUs) and not for a ninth.
const env = { AIRLOCK_STATE: state, AIRLOCK_HOST_MEMORY_MIB: "11000", AIRLOCK_HOST_VCPUS: "16" };
const names = Array.from({ length: 8 }, (_, i) => `fleet8-${i}`);
/** Sixteen TCG guests share two cores with whatever else runs: bounds are generous, and still bounds. */
const UP_BOUND_MS = 420_000;

interface Status {
  status: string;
  supervisorPid: number;
  reservation?: { slot: number; ports: number[]; memoryMiB: number; vcpus: number };
  vms: Record<"firewall" | "sandbox", { pid: number; status: string }>;
}

beforeAll(async () => {
  const built = await airlock(["images", "build", "--manifest", room], env, 600_000);
  expect(built.code, built.stderr).toBe(0);
}, 600_000);

afterAll(async () => {
  await Promise.all(names.map((n) => airlock(["down", n], env, 60_000).catch(() => undefined)));
  killQemus("fleet8-");
}, 120_000);

describe("eight pairs on one host", () => {
  it("start at once without collisions, refuse a ninth for capacity, and all go down cleanly", async () => {
    const ups = await Promise.all(names.map((n) => airlock(["up", room, "--name", n, "--accel", "tcg", "--json"], env, UP_BOUND_MS)));
    for (const [i, up] of ups.entries()) expect(up.code, `${names[i]}: ${up.stderr}\n${up.stdout}`).toBe(0);
    const states = ups.map((u) => JSON.parse(u.stdout) as Status);
    expect(states.map((s) => s.status)).toEqual(Array(8).fill("running"));

    // No two pairs share a slot, a supervisor, a QEMU or a socket.
    expect(new Set(states.map((s) => s.reservation?.slot))).toEqual(new Set([0, 1, 2, 3, 4, 5, 6, 7]));
    expect(new Set(states.map((s) => s.supervisorPid)).size).toBe(8);
    const vmPids = states.flatMap((s) => [s.vms.firewall.pid, s.vms.sandbox.pid]);
    expect(new Set(vmPids).size).toBe(16);
    expect(qemuPids("fleet8-").sort()).toEqual([...vmPids].sort());
    const sockets = names.flatMap((n) => readdirSync(path.join(state, "pairs", n, "vsock")).map((f) => path.join(n, f)));
    expect(new Set(sockets).size).toBe(sockets.length);
    for (const [i, s] of states.entries()) {
      // Each QEMU is connected to its own pair's fabric socket.
      for (const role of ["firewall", "sandbox"] as const) {
        const cmdline = readFileSync(`/proc/${s.vms[role].pid}/cmdline`, "utf8").split("\0");
        expect(cmdline).toContain(`socket,id=vsock0,path=${path.join(state, "pairs", names[i]!, "vsock", `${role}.vhost`)}`);
      }
    }

    // A ninth is refused before anything starts, saying what it asks, what is free and who holds it.
    const ninth = await airlock(["up", room, "--name", "fleet8-ninth", "--accel", "tcg"], env, 60_000);
    expect(ninth.code).toBe(2);
    expect(ninth.stderr).toContain("[CAPACITY]");
    expect(ninth.stderr).toMatch(/needs 1280 MiB and 2 vCPUs; this host has 760 MiB and 0 vCPUs free/);
    expect(ninth.stderr).toContain("fleet8-0 (1280 MiB, 2 vCPUs)");
    expect(qemuPids("fleet8-ninth")).toEqual([]);
    // A running name is refused as such.
    const again = await airlock(["up", room, "--name", "fleet8-3", "--accel", "tcg"], env, 60_000);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("[PAIR_EXISTS]");

    const downs = await Promise.all(names.map((n) => airlock(["down", n], env, 60_000)));
    for (const d of downs) expect(d.code, d.stderr).toBe(0);
    expect(qemuPids("fleet8-")).toEqual([]);
    const claims = path.join(state, "fleet/reservations");
    expect(existsSync(claims) ? readdirSync(claims) : []).toEqual([]);
  }, 900_000);
});
