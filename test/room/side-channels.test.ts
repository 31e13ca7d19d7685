// Issue 8 end to end: test/rooms/side-channels, a hostile workload that reads a USER_PRIVATE
// secret and tries everything around the outputs — names, sizes and counts, strays and symlinks,
// a FIFO and a growing file under a daemon that outlives it, repeated connections to the agent
// port, the attestation relay, a scan of the firewall's ports, the console of a room that declares
// none, its exit status — on VMs at the smallest memory the manifest accepts. The secret reaches
// the investigator, sealed; in every form (verbatim, hex, base64) it reaches nothing the host
// keeps or shows: --out (names and bytes), airlock's stdout and stderr, the pair's state folder
// and logs, and every payload byte the fabric routed.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { airlock, killQemus, repoRoot } from "../helpers.ts";
import { ageKeygen, auditRecords, copyRoom, leaksOf, markerForms, openSealed, removeRoom, runRoom } from "./room-setup.ts";

const MARKER = "SIDECHANNEL-MARKER-7f3a91";
const room = copyRoom(path.join(repoRoot, "test/rooms/side-channels"));

beforeAll(async () => {
  mkdirSync(path.join(room.dir, "room/keys"), { recursive: true }); // empty folders are not in git
  writeFileSync(path.join(room.dir, "room/keys/investigator.pub"), `${ageKeygen(path.join(room.keys, "investigator.key"))}\n`);
  const encrypted = path.join(room.dir, "room/data/secret.txt.age");
  mkdirSync(path.dirname(encrypted), { recursive: true });
  writeFileSync(encrypted, ""); // the loader wants the file to exist before the grant
  const g = await airlock(["manifest", "grant", room.manifest, "--input", "secret"], room.env);
  expect(g.code, g.stderr).toBe(0);
  const clear = path.join(room.keys, "secret.txt");
  writeFileSync(clear, `${MARKER}\n`);
  execFileSync("age", ["-r", g.stdout.trim(), "-o", encrypted, clear]);
});

afterAll(() => {
  killQemus("side-channels");
  removeRoom(room);
});

describe("test/rooms/side-channels", () => {
  it("leaks nothing around the outputs: one sealed, padded file; capped counts; a success bit; closed ports", async () => {
    const out = path.join(room.dir, "out");
    const tap = path.join(room.dir, "fabric.tap");
    const r = await runRoom(room, out, ["--keep"], { AIRLOCK_FABRIC_TAP: tap });
    // The workload exited with a status made of the secret: the host learns only that it failed.
    expect(r.code, r.stderr).toBe(64);
    expect(r.stderr).toMatch(/workload failed \(exit 64; the exact status is sealed/);

    // --out: the trail, the summary, one sealed file with a name the host chose. No open output
    // (USER_PRIVATE), no console (the room declares none).
    expect(readdirSync(out).sort()).toEqual(["audit.log", "sealed.tar.age", "summary.json"]);
    const sealedFile = path.join(out, "sealed.tar.age");
    const plain = execFileSync("age", ["-d", "-i", path.join(room.keys, "investigator.key"), sealedFile], { maxBuffer: 1 << 26 });
    expect([16, 32, 64, 128, 256, 512, 1024].map((k) => k * 1024)).toContain(plain.length); // a bucket
    // The investigator gets it all, names included; the daemon's files stopped when it was killed.
    const files = openSealed(sealedFile, path.join(room.keys, "investigator.key"));
    const names = [...files.keys()];
    expect(names).toEqual(expect.arrayContaining([`${MARKER}.txt`, `${Buffer.from(MARKER).toString("hex")}.txt`, "report.json"]));
    expect(names.some((n) => n.startsWith("link-") || n.startsWith("fifo-") || n.startsWith("bad-"))).toBe(false);
    const report = JSON.parse(files.get("report.json")!.toString()) as { ports: number[]; relay: string[]; scanned: number; notes: string[] };
    // After the start no firewall port answers the sandbox: not the relay, not even the agent's.
    expect(report.scanned).toBeGreaterThan(2000);
    expect(report.ports).toEqual([]);
    expect(report.relay.every((x) => x !== "connected")).toBe(true);
    expect(report.notes.filter((x) => x.startsWith("host ")).every((x) => !x.endsWith("connected"))).toBe(true);

    // The trail: verifies; capped counts, no names; the exit status only as success or failure.
    const audit = path.join(out, "audit.log");
    const v = await airlock(["audit", "verify", audit, "--trust-root", path.join(room.state, "psp", "ark.pem")], room.env);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    // A trail cut after its first checkpoint, or with a decision edited, does not verify.
    const lines = readFileSync(audit, "utf8").split("\n").filter(Boolean);
    const cut = path.join(room.dir, "cut.log");
    writeFileSync(cut, `${lines.slice(0, lines.findIndex((l) => l.includes('"kind":"checkpoint"')) + 1).join("\n")}\n`);
    const edited = path.join(room.dir, "edited.log");
    writeFileSync(edited, readFileSync(audit, "utf8").replace('"decision":"withhold"', '"decision":"release"'));
    for (const bad of [cut, edited]) {
      const b = await airlock(["audit", "verify", bad, "--trust-root", path.join(room.state, "psp", "ark.pem")], room.env);
      expect(b.code, `${bad}: ${b.stdout}${b.stderr}`).toBe(1);
    }
    const records = auditRecords(audit);
    const violations = Object.fromEntries(records.filter((x) => x.kind === "violation").map((x) => [x.data.what, x.data.count]));
    expect(violations).toMatchObject({
      "special files or symlinks in an output folder: not shipped": expect.any(Number),
      "file names that are not valid UTF-8: not shipped": 1,
      "files written outside the output folders: not shipped": 2,
    });
    for (const c of Object.values(violations)) expect(c).toBeLessThanOrEqual(3);
    expect(records.find((x) => x.kind === "workload.exited")!.data).toEqual({ succeeded: false, sandboxScope: "USER_PRIVATE" });
    const open = records.find((x) => x.kind === "output.decision" && x.data.output === "open")!.data;
    expect(open).toMatchObject({ decision: "withhold" });
    expect(open).not.toHaveProperty("files");
    // Records after the start come after the workload ended: none was written while it ran.
    const started = records.findIndex((x) => x.kind === "workload.started");
    expect(records.slice(started + 1).every((x) => ["output.decision", "workload.exited", "violation", "checkpoint", "closed"].includes(x.kind))).toBe(true);

    // The marker, in every form, nowhere the host keeps or shows: --out (names and bytes, the
    // ciphertext included), the state folder with the supervisor log, state.json and the consoles,
    // airlock's own output, and every payload byte the fabric routed.
    expect(statSync(tap).size).toBeGreaterThan(0);
    expect(leaksOf([out, room.state, tap], MARKER)).toEqual([]);
    for (const form of markerForms(MARKER)) {
      expect(r.stdout).not.toContain(form);
      expect(r.stderr).not.toContain(form);
    }
    // Nothing the workload chose reaches the terminal raw.
    // eslint-disable-next-line no-control-regex -- the point
    expect(r.stderr).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f\u202a-\u202e\u2066-\u2069]/);
    const summary = JSON.parse(readFileSync(path.join(out, "summary.json"), "utf8")) as { completed: boolean; workload: unknown };
    expect(summary).toMatchObject({ completed: true, workload: { succeeded: false } });
    rmSync(tap, { force: true });
  });
});
