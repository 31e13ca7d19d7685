// Issue 5 end to end: examples/exfiltration, a hostile workload that tries every way out (console,
// network, vsock to every CID and port it might reach, a huge output, files outside its output
// folders, a symlink, USER_PRIVATE data in an open output). Every attempt fails, the enforcer's
// audit trail and the run's summary record what reached it, and no byte of the input's plaintext
// lands anywhere on the host's disk.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { airlock, killQemus } from "../helpers.ts";
import { ageKeygen, auditRecords, copyExample, filesContaining, openSealed, removeRoom, runRoom } from "./room-setup.ts";

const MARKER = "EXFIL-MARKER-9c1e77d2";
const room = copyExample("exfiltration");

beforeAll(async () => {
  writeFileSync(path.join(room.dir, "room/keys/investigator.pub"), `${ageKeygen(path.join(room.keys, "investigator.key"))}\n`);
  // This data owner lets the broker keep the identity: grant prints its recipient, age encrypts to it.
  // (The manifest loader wants every input file to exist, so an empty one stands in until then.)
  const encrypted = path.join(room.dir, "room/data/secrets.txt.age");
  mkdirSync(path.dirname(encrypted), { recursive: true });
  writeFileSync(encrypted, "");
  const g = await airlock(["manifest", "grant", room.manifest, "--input", "secrets"], room.env);
  expect(g.code, g.stderr).toBe(0);
  const recipient = g.stdout.trim();
  expect(recipient).toMatch(/^age1[0-9a-z]{58}$/);
  const clear = path.join(room.keys, "secrets.txt");
  writeFileSync(clear, `patient 4711: ${MARKER}\n`);
  execFileSync("age", ["-r", recipient, "-o", encrypted, clear]);
});

afterAll(() => {
  killQemus("exfiltration");
  removeRoom(room);
});

interface Attempt {
  way: string;
  target: string;
  escaped: boolean;
  outcome: string;
}

describe("examples/exfiltration", () => {
  it("gets nothing out: every attempt fails, the trail and summary record them, no plaintext on the host", async () => {
    const out = path.join(room.dir, "out");
    const r = await runRoom(room, out);
    expect(r.code, r.stderr).toBe(0);

    // The workload's own account (released to the investigator only): no channel carried the secret.
    const report = JSON.parse(openSealed(path.join(out, "attempts.tar.age"), path.join(room.keys, "investigator.key")).get("attempts.json")!.toString()) as { attempts: Attempt[] };
    const attempts = report.attempts;
    expect(attempts.filter((a) => a.escaped)).toEqual([]);
    const ways = new Set(attempts.map((a) => a.way));
    for (const w of ["console", "network", "tcp", "udp", "dns", "busybox", "vsock", "huge output", "file outside outputs", "symlink in an output", "open output"]) expect(ways, w).toContain(w);
    const vsock = attempts.filter((a) => a.way === "vsock").map((a) => a.target);
    expect(vsock).toEqual(expect.arrayContaining(["2:1024", "2:1025", "2:1026", "3:5000", "3:1024", "5:1234"]));
    expect(attempts.find((a) => a.way === "network")!.outcome).toBe("interfaces: lo");
    expect(attempts.find((a) => a.target === "/dev/console")!.outcome).toMatch(/EACCES|EPERM/);
    expect(attempts.find((a) => a.target === "/data/in/secrets.txt")!.outcome).toMatch(/EACCES|EROFS/);

    // The enforcer's audit trail: verifies, and names what reached the firewall.
    const audit = path.join(out, "audit.log");
    const v = await airlock(["audit", "verify", audit, "--trust-root", path.join(room.state, "psp", "ark.pem")], room.env);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    const records = auditRecords(audit);
    const violations = records.filter((x) => x.kind === "violation").map((x) => String(x.data.what));
    expect(violations).toEqual(
      expect.arrayContaining([
        "output over its size limit: withheld",
        "special files or symlinks in an output folder: not shipped",
        "files written outside the output folders: not shipped",
      ]),
    );
    const decisions = Object.fromEntries(records.filter((x) => x.kind === "output.decision").map((x) => [x.data.output, x.data]));
    expect(decisions.leak).toMatchObject({ decision: "withhold", mode: "open", sandboxScope: "USER_PRIVATE" });
    expect(String(decisions.leak!.reason)).toMatch(/USER_PRIVATE/);
    expect(decisions.console).toBeUndefined(); // the room declares no console: stdout and stderr stay inside
    expect(decisions.dump).toMatchObject({ decision: "withhold", reason: "output dump exceeded its size limit of 1048576 bytes" });
    // /tmp is writable (and scanned: a capped count, never names); the root directory is not writable.
    expect(records.find((x) => x.kind === "violation" && x.data.what === "files written outside the output folders: not shipped")!.data).toMatchObject({ count: expect.any(Number), cap: 3 });
    expect(attempts.find((a) => a.target === "/stash.txt")!.outcome).toMatch(/EACCES/);
    expect(records.find((x) => x.kind === "workload.exited")!.data).toEqual({ succeeded: true, sandboxScope: "USER_PRIVATE" });

    // The run's summary lists them too.
    const summary = JSON.parse(readFileSync(path.join(out, "summary.json"), "utf8")) as { violations: { what: string }[]; outputs: { output: string; decision: string }[] };
    expect(summary.violations.map((x) => x.what)).toEqual(violations);
    expect(summary.outputs.find((o) => o.output === "leak")!.decision).toBe("withhold");
    expect(r.stderr).toMatch(/output leak: withhold/);

    // What the host holds: the trail, the summary, the investigator's sealed archive.
    expect(readdirSync(out).sort()).toEqual(["attempts.tar.age", "audit.log", "summary.json"]);
    expect(filesContaining([out, room.state], MARKER)).toEqual([]);
  });
});
