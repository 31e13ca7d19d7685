// Fail closed on the agent link with real QEMU guests: when the sandbox is not the image the
// firewall was told to expect (AIRLOCK_EXPECT_SANDBOX_MEASUREMENT names another), the firewall
// refuses the channel, the run ends with the reason, and the workload never starts.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { airlock, killQemus, repoRoot, testStateDir } from "../helpers.ts";
import { auditRecords } from "../room/room-setup.ts";

const state = testStateDir();
const dir = mkdtempSync(path.join(tmpdir(), "airlock-channel-refused-"));

afterAll(() => {
  killQemus("hello");
  rmSync(dir, { recursive: true, force: true });
  rmSync(state, { recursive: true, force: true });
});

describe("agent link, fail closed", () => {
  it("refuses a sandbox whose measurement is not the expected one: no workload, reason on record", async () => {
    const wrong = randomBytes(48).toString("hex");
    const out = path.join(dir, "out");
    const r = await airlock(["run", path.join(repoRoot, "examples/hello/room.yaml"), "--out", out, "--accel", "tcg"], { AIRLOCK_STATE: state, AIRLOCK_EXPECT_SANDBOX_MEASUREMENT: wrong }, 280_000);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/attested channel was not established.*measurement/);

    const records = auditRecords(path.join(out, "audit.log"));
    const kinds = records.map((x) => x.kind);
    expect(records.find((x) => x.kind === "channel.expected")!.data.measurement).toBe(wrong);
    expect(String(records.find((x) => x.kind === "channel.refused")!.data.reason)).toMatch(new RegExp(`measurement is [0-9a-f]{96}, expected ${wrong}`));
    expect(kinds).toContain("run.failed");
    expect(kinds).not.toContain("channel.opened");
    expect(kinds).not.toContain("workload.started");
    expect(kinds.at(-1)).toBe("closed");
  });
});
