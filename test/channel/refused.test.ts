// Fail closed on the agent link with real QEMU guests: when the host launches another sandbox
// than the one the signed room pins (AIRLOCK_LAUNCH_SANDBOX_IMAGE: a sandbox image built for
// another workload), the firewall refuses the channel, the run ends with the reason, and the
// workload never starts. The host's word cannot change what the firewall expects.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { airlock, killQemus, repoRoot, testStateDir } from "../helpers.ts";
import { auditRecords } from "../room/room-setup.ts";
import { buildImage } from "../../host-tools/src/images/build.ts";
import { loadManifest } from "../../proto/src/manifest/index.ts";
import { roomIdentity } from "../../host-tools/src/launch/room-digest.ts";

const state = testStateDir();
const dir = mkdtempSync(path.join(tmpdir(), "airlock-channel-refused-"));

afterAll(() => {
  killQemus("hello");
  rmSync(dir, { recursive: true, force: true });
  rmSync(state, { recursive: true, force: true });
});

describe("agent link, fail closed", () => {
  it("refuses a sandbox that is not the image the room pins: no workload, reason on record", async () => {
    const manifest = path.join(repoRoot, "examples/hello/room.yaml");
    const saved = process.env.AIRLOCK_STATE;
    process.env.AIRLOCK_STATE = state;
    const pinned = (await roomIdentity(loadManifest(manifest))).pins.sandbox;
    process.env.AIRLOCK_STATE = saved;
    const other = await buildImage("sandbox", { workloadDir: path.join(repoRoot, "examples/word-count/workload") });
    const out = path.join(dir, "out");
    const r = await airlock(["run", manifest, "--out", out, "--accel", "tcg"], { AIRLOCK_STATE: state, AIRLOCK_LAUNCH_SANDBOX_IMAGE: other.dir }, 280_000);
    expect(r.code).toBe(65);
    expect(r.stderr).toMatch(/attested channel was not established.*measurement/);

    const records = auditRecords(path.join(out, "audit.log"));
    const kinds = records.map((x) => x.kind);
    expect(records.find((x) => x.kind === "channel.expected")!.data).toMatchObject({ measurement: pinned, pinnedBy: "room digest" });
    expect(String(records.find((x) => x.kind === "channel.refused")!.data.reason)).toMatch(new RegExp(`measurement is [0-9a-f]{96}, expected ${pinned}`));
    expect(kinds).toContain("run.failed");
    expect(kinds).not.toContain("channel.opened");
    expect(kinds).not.toContain("workload.started");
    expect(kinds.at(-1)).toBe("closed");
  });
});
