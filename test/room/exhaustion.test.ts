// Issue 8 end to end, a hostile room on the smallest VMs the manifest accepts (512 MiB each):
// test/rooms/exhaustion writes 20 MiB of seeded bytes into a trusted output, more than its limit
// into another, fills /tmp and /data until ENOSPC, then allocates memory until the OOM killer ends
// it. The agent and the enforcer survive all of it: the run completes (exit 64: the workload failed
// at USER_PRIVATE scope), the large output leaves as one sealed archive padded to its bucket with
// the exact bytes inside, the output over its limit is withheld with a reason that quotes only the
// manifest, and the console leaves sealed with the progress lines and the exact status.
import { createCipheriv, createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { airlock, killQemus, repoRoot } from "../helpers.ts";
import { ageEncryptInput, ageKeygen, auditRecords, copyRoom, filesContaining, grant, openSealed, removeRoom, runRoom } from "./room-setup.ts";

const SEED = "exhaustion-seed-3b9d0e61";
const MiB = 1024 * 1024;
const BIG_BYTES = 20 * MiB;
const BIG_MAX = 32 * MiB;

/** What the workload writes into `big`: AES-256-CTR keystream, key SHA-256(seed), IV zero. */
function expectedBigSha256(): string {
  const cipher = createCipheriv("aes-256-ctr", createHash("sha256").update(SEED).digest(), Buffer.alloc(16));
  return createHash("sha256").update(cipher.update(Buffer.alloc(BIG_BYTES))).update(cipher.final()).digest("hex");
}

const room = copyRoom(path.join(repoRoot, "test/rooms/exhaustion"));
const investigator = path.join(room.keys, "investigator.key");

beforeAll(async () => {
  mkdirSync(path.join(room.dir, "room/keys"), { recursive: true });
  writeFileSync(path.join(room.dir, "room/keys/investigator.pub"), `${ageKeygen(investigator)}\n`);
  const identity = ageEncryptInput(room, "seed", Buffer.from(`${SEED}\n`), path.join(room.dir, "room/data/seed.txt.age"));
  await grant(room, "seed", identity);
});

afterAll(() => {
  killQemus("exhaustion");
  removeRoom(room);
});

describe("test/rooms/exhaustion", () => {
  it("survives tmpfs and memory exhaustion on 512 MiB VMs: a 20 MiB sealed output, one withheld, a console-only status", async () => {
    const out = path.join(room.dir, "out");
    const t0 = Date.now();
    const r = await runRoom(room, out);
    const wall = (Date.now() - t0) / 1000;
    console.log(`exhaustion: airlock run took ${wall.toFixed(1)} s, exit ${r.code}`);
    // Completed (65 would mean the agent or the enforcer did not make it); the workload failed at
    // USER_PRIVATE scope, so the host learns only that: 64.
    expect(r.code, r.stderr).toBe(64);
    expect(r.stderr).toMatch(/output big: encrypt \(trusted/);
    expect(r.stderr).toMatch(/output over: withhold/);

    // What the host holds: the trail, the summary, two sealed archives. Nothing of `over`.
    expect(readdirSync(out).sort()).toEqual(["audit.log", "big.tar.age", "console.tar.age", "summary.json"]);

    // The large output: exactly the seeded bytes, in an archive padded to the 32 MiB bucket.
    const tar = execFileSync("age", ["-d", "-i", investigator, path.join(out, "big.tar.age")], { maxBuffer: 1 << 30 });
    const cap = BIG_MAX + 1024; // the limit (a multiple of 512) plus the end-of-archive marker
    expect(tar.length === cap || (tar.length & (tar.length - 1)) === 0, `plaintext ${tar.length} bytes`).toBe(true);
    expect(tar.length).toBeGreaterThanOrEqual(BIG_BYTES + 512 + 1024);
    expect(tar.length).toBeLessThanOrEqual(cap);
    expect(tar.length).toBe(BIG_MAX); // 20 MiB + header + trailer: the next power of two, under the cap
    const big = openSealed(path.join(out, "big.tar.age"), investigator);
    expect([...big.keys()]).toEqual(["random.bin"]);
    expect(big.get("random.bin")!.length).toBe(BIG_BYTES);
    expect(createHash("sha256").update(big.get("random.bin")!).digest("hex")).toBe(expectedBigSha256());

    // The console: the progress lines up to the allocations, and the exact status of its death.
    const sealedConsole = openSealed(path.join(out, "console.tar.age"), investigator);
    expect([...sealedConsole.keys()].sort()).toEqual(["console.log", "status.json"]);
    const log = sealedConsole.get("console.log")!.toString();
    const status = JSON.parse(sealedConsole.get("status.json")!.toString()) as { exitStatus: number; consoleTruncated: boolean };
    console.log(`exhaustion: workload exit status ${status.exitStatus}; console ends ${JSON.stringify(log.trimEnd().split("\n").slice(-2))}`);
    expect(log).toContain(`exhaustion: big written: ${BIG_BYTES} bytes, sha256 ${expectedBigSha256()}\n`);
    expect(log).toContain(`exhaustion: over written: ${96 * 1024} bytes\n`);
    expect(log).toMatch(/exhaustion: \/tmp full: \d+ bytes then ENOSPC\n/);
    expect(log).toMatch(/exhaustion: \/data full: \d+ bytes then ENOSPC\n/);
    expect(log).toContain("exhaustion: allocating memory until the OOM killer ends this\n");
    expect(log).not.toContain("survived");
    expect(status.consoleTruncated).toBe(false);
    expect(status.exitStatus).not.toBe(0);
    expect(status.exitStatus).toBe(137); // SIGKILL, from the OOM killer (well before the timeout: below)

    // The trail verifies and records each decision; reasons and the exit quote nothing of the workload's.
    const audit = path.join(out, "audit.log");
    const v = await airlock(["audit", "verify", audit, "--trust-root", path.join(room.state, "psp", "ark.pem")], room.env);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    const records = auditRecords(audit);
    const decisions = Object.fromEntries(records.filter((x) => x.kind === "output.decision").map((x) => [x.data.output, x.data]));
    expect(decisions.big).toMatchObject({ decision: "encrypt", mode: "trusted", sandboxScope: "USER_PRIVATE", sealedBytes: statSync(path.join(out, "big.tar.age")).size });
    expect(decisions.over).toEqual({ output: "over", mode: "trusted", decision: "withhold", reason: "output over exceeded its size limit of 65536 bytes", sandboxScope: "USER_PRIVATE" });
    expect(decisions.console).toMatchObject({ decision: "encrypt", mode: "trusted", sealedBytes: statSync(path.join(out, "console.tar.age")).size });
    expect(records.find((x) => x.kind === "workload.exited")!.data).toEqual({ succeeded: false, sandboxScope: "USER_PRIVATE" });
    const violations = records.filter((x) => x.kind === "violation").map((x) => String(x.data.what));
    expect(violations).toEqual(expect.arrayContaining(["output over its size limit: withheld", "files written outside the output folders: not shipped"]));
    // The workload ended by the OOM killer, not at its 120 s time limit: its first output was
    // decided well before then.
    const started = Date.parse(String((records.find((x) => x.kind === "workload.started") as unknown as { time: string }).time));
    const decided = Date.parse(String((records.find((x) => x.kind === "output.decision") as unknown as { time: string }).time));
    console.log(`exhaustion: workload started to first decision ${((decided - started) / 1000).toFixed(1)} s`);
    expect(decided - started).toBeLessThan(110_000);

    // The summary: completed, a failed workload without its status (sealed in the console).
    const summary = JSON.parse(readFileSync(path.join(out, "summary.json"), "utf8")) as { status: string; completed: boolean; workload: Record<string, unknown>; outputs: { output: string; decision: string }[] };
    expect(summary.completed).toBe(true);
    expect(summary.status).toBe("completed");
    expect(summary.workload).toEqual({ succeeded: false });
    expect(Object.fromEntries(summary.outputs.map((o) => [o.output, o.decision]))).toEqual({ big: "encrypt", over: "withhold", console: "encrypt" });

    // The seed (the input's plaintext) is nowhere on the host's disk.
    expect(filesContaining([out, room.state], SEED)).toEqual([]);
  });
});
