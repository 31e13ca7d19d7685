// Issue 8 end to end: test/rooms/public-names, a room at PUBLIC scope whose workload names files to
// steer the operator's terminal and exits 7. The open output with those names is withheld whole
// (its reason names no file), the clean one is released, nothing raw reaches the terminal, the
// exact status is the run's exit status (PUBLIC allows it), and --out must be new or empty.
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { killQemus, repoRoot } from "../helpers.ts";
import { auditRecords, copyRoom, removeRoom, runRoom } from "./room-setup.ts";

const room = copyRoom(path.join(repoRoot, "test/rooms/public-names"));

afterAll(() => {
  killQemus("public-names");
  removeRoom(room);
});

// eslint-disable-next-line no-control-regex -- the point
const RAW = /[\u0000-\u0008\u000b-\u001f\u007f\u202a-\u202e\u2066-\u2069]/;

describe("test/rooms/public-names", () => {
  it("withholds an open output whose names would steer the terminal; --out must be new or empty", async () => {
    const out = path.join(room.dir, "out");
    const r = await runRoom(room, out);
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toMatch(/workload exited with status 7/);
    expect(r.stderr).not.toMatch(RAW);
    expect(r.stderr).not.toMatch(/done: workload status 0/);
    expect(r.stderr).toMatch(/output names: withhold \(output names: a file name is outside the safe set/);
    expect(readdirSync(out).sort()).toEqual(["audit.log", "plain", "summary.json"]);
    expect(readFileSync(path.join(out, "plain/hello.txt"), "utf8")).toBe("hello\n");
    const records = auditRecords(path.join(out, "audit.log"));
    const names = records.find((x) => x.kind === "output.decision" && x.data.output === "names")!.data;
    expect(names).toMatchObject({ decision: "withhold" });
    expect(names).not.toHaveProperty("files");
    // Nothing the workload named, in any record it could have reached (the others carry keys and certificates).
    expect(JSON.stringify(records.filter((x) => ["output.decision", "violation", "workload.exited"].includes(x.kind)))).not.toMatch(/2J|report|\\u202e|\\u001b/);
    expect(records.find((x) => x.kind === "workload.exited")!.data).toEqual({ succeeded: false, code: 7, sandboxScope: "PUBLIC" });
    expect(records.find((x) => x.kind === "violation" && String(x.data.what).startsWith("open output with file names outside"))!.data.count).toBe(1);

    // The same --out again: refused before anything starts; with --force, replaced whole.
    const again = await runRoom(room, out);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/--out .* is not empty/);
    const before = statSync(path.join(out, "summary.json")).mtimeMs;
    const forced = await runRoom(room, out, ["--force"]);
    expect(forced.code, forced.stderr).toBe(7);
    expect(statSync(path.join(out, "summary.json")).mtimeMs).toBeGreaterThan(before);
    expect(readdirSync(out).sort()).toEqual(["audit.log", "plain", "summary.json"]);
  });
});
