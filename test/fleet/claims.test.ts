// Issue 13 point 2, the allocation itself, with real processes racing for one state folder: names,
// slots and host ports never collide, one name has one winner, an overcommit is refused with what
// is free, and neither a crashed lock holder nor a crashed claim holder blocks the host.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { repoRoot, testStateDir } from "../helpers.ts";

interface Outcome {
  ok: boolean;
  slot?: number;
  ports?: number[];
  code?: string;
  message?: string;
  locked?: boolean;
}

const worker = path.join(repoRoot, "test/fleet/claim.worker.ts");
let children: ChildProcess[] = [];

afterEach(() => {
  for (const c of children) c.kill("SIGKILL");
  children = [];
});

function start(state: string, args: string[], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; outcome: Promise<Outcome> } {
  const child = spawn(process.execPath, ["--import", "tsx", worker, ...args], { env: { ...process.env, AIRLOCK_STATE: state, ...env }, stdio: ["pipe", "pipe", "inherit"] });
  children.push(child);
  const outcome = new Promise<Outcome>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`worker ${args.join(" ")}: no outcome within 60 s`)), 60_000);
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("\n")) {
        clearTimeout(timer);
        resolve(JSON.parse(out.slice(0, out.indexOf("\n"))) as Outcome);
      }
    });
    child.on("exit", (code) => reject(new Error(`worker ${args.join(" ")} exited (${code}) without an outcome`)));
  });
  return { child, outcome };
}

describe("host claims under concurrent starts", () => {
  it("eight different names at once: all granted, eight slots and sixteen host ports, no two alike", async () => {
    const state = testStateDir();
    const runs = Array.from({ length: 8 }, (_, i) => start(state, ["claim", `fleetc-${i}`, "1280", "2", "2"], { AIRLOCK_HOST_MEMORY_MIB: "20000", AIRLOCK_HOST_VCPUS: "16" }));
    const got = await Promise.all(runs.map((r) => r.outcome));
    expect(got.every((o) => o.ok), JSON.stringify(got)).toBe(true);
    expect(new Set(got.map((o) => o.slot))).toEqual(new Set([0, 1, 2, 3, 4, 5, 6, 7]));
    const ports = got.flatMap((o) => o.ports!);
    expect(ports).toHaveLength(16);
    expect(new Set(ports).size).toBe(16);
  });

  it("eight starts of one name at once: exactly one wins, the others are told PAIR_EXISTS", async () => {
    const state = testStateDir();
    const got = await Promise.all(Array.from({ length: 8 }, () => start(state, ["claim", "fleetc-same", "1280", "2"]).outcome));
    expect(got.filter((o) => o.ok)).toHaveLength(1);
    expect(got.filter((o) => !o.ok).map((o) => o.code)).toEqual(Array(7).fill("PAIR_EXISTS"));
  });

  it("refuses an overcommit, saying what is asked, what is free and who holds the rest; a dead holder's share comes back", async () => {
    const state = testStateDir();
    const env = { AIRLOCK_HOST_MEMORY_MIB: "3000", AIRLOCK_HOST_VCPUS: "64" };
    const a = start(state, ["claim", "fleetc-a", "1280", "2"], env);
    expect((await a.outcome).ok).toBe(true);
    expect((await start(state, ["claim", "fleetc-b", "1280", "2"], env).outcome).ok).toBe(true);
    const c = await start(state, ["claim", "fleetc-c", "1280", "2"], env).outcome;
    expect(c).toMatchObject({ ok: false, code: "CAPACITY" });
    expect(c.message).toContain("needs 1280 MiB and 2 vCPUs");
    expect(c.message).toContain("has 440 MiB and 60 vCPUs free");
    expect(c.message).toContain("fleetc-a (1280 MiB, 2 vCPUs), fleetc-b (1280 MiB, 2 vCPUs)");
    // vCPUs are accounted too.
    const v = await start(state, ["claim", "fleetc-v", "100", "61"], env).outcome;
    expect(v).toMatchObject({ ok: false, code: "CAPACITY" });
    // The holder of fleetc-a crashes: its claim is reclaimed by the next start.
    a.child.kill("SIGKILL");
    await new Promise((r) => a.child.once("exit", r));
    expect((await start(state, ["claim", "fleetc-c", "1280", "2"], env).outcome).ok).toBe(true);
  });

  it("a holder killed inside the lock does not block the host", async () => {
    const state = testStateDir();
    const holder = start(state, ["hold-lock"]);
    expect((await holder.outcome).locked).toBe(true);
    const waiting = start(state, ["claim", "fleetc-after", "1280", "2"]);
    // The claim waits on the lock while the holder lives…
    const early = await Promise.race([waiting.outcome, new Promise((r) => setTimeout(() => r("waiting"), 1500))]);
    expect(early).toBe("waiting");
    // …and goes through once the holder dies without releasing anything.
    holder.child.kill("SIGKILL");
    expect((await waiting.outcome).ok).toBe(true);
  });
});
