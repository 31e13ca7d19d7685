// Issue 8 end to end: test/rooms/never-ends, a workload that ignores SIGTERM, never exits and
// leaves a daemon behind, in a room whose only result is its console. The run ends at the
// workload's timeout all the same (the agent kills every process of the workload user), the
// status is exact (PUBLIC: the room reads no data), and the console leaves sealed with it.
import { readdirSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { killQemus, repoRoot } from "../helpers.ts";
import { auditRecords, copyRoom, removeRoom, runRoom } from "./room-setup.ts";

const room = copyRoom(path.join(repoRoot, "test/rooms/never-ends"));

afterAll(() => {
  killQemus("never-ends");
  removeRoom(room);
});

describe("test/rooms/never-ends", () => {
  it("ends at the timeout, daemon and all; a console-only room ships its console alone", async () => {
    const out = path.join(room.dir, "out");
    const t0 = Date.now();
    const r = await runRoom(room, out);
    expect(r.code, r.stderr).toBe(137); // killed (SIGKILL) at its timeout
    expect(Date.now() - t0).toBeLessThan(120_000);
    expect(readdirSync(out).sort()).toEqual(["audit.log", "console.tar.age", "summary.json"]);
    const records = auditRecords(path.join(out, "audit.log"));
    expect(records.find((x) => x.kind === "workload.exited")!.data).toEqual({ succeeded: false, code: 137, sandboxScope: "PUBLIC" });
    expect(records.find((x) => x.kind === "output.decision" && x.data.output === "console")!.data).toMatchObject({ decision: "encrypt", mode: "secure" });
    expect(records.at(-1)!.kind).toBe("closed");
  });
});
