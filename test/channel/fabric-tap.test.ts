// Issue 3 part 4 end to end with real QEMU guests: the agent↔enforcer link is attested and
// encrypted, so a marker planted in the input dataset never crosses the host's vsock fabric in
// clear. The fabric's test tap (AIRLOCK_FABRIC_TAP, host-tools/src/fabric/router.ts) copies every
// payload byte it routes to a file; the test scans it. The run itself must succeed (the counts
// decrypt right, the marker word among them), so the plaintext really went through the fabric.
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { killQemus } from "../helpers.ts";
import { ageEncryptInput, ageKeygen, auditRecords, copyExample, grant, openSealed, removeRoom, runRoom } from "../room/room-setup.ts";

const MARKER = "Quokka-Marker-9d41b7";
const room = copyExample("word-count");
const tap = path.join(room.dir, "fabric.tap");

// ~1 MiB of text with the marker on every 500th line.
const LINES = 20_000;
const text = Array.from({ length: LINES }, (_, i) => (i % 500 === 0 ? `some words and ${MARKER} here` : `line ${i % 97} of the corpus, nothing to see`)).join("\n") + "\n";

beforeAll(async () => {
  writeFileSync(path.join(room.dir, "room/keys/analyst.pub"), `${ageKeygen(path.join(room.keys, "analyst.key"))}\n`);
  const identity = ageEncryptInput(room, "corpus", Buffer.from(text), path.join(room.dir, "room/data/corpus.txt.age"));
  await grant(room, "corpus", identity);
});

afterAll(() => {
  killQemus("word-count");
  removeRoom(room);
});

describe("agent↔enforcer channel through the fabric", () => {
  it("carries the input to the sandbox with the marker never in clear in the fabric", async () => {
    room.env.AIRLOCK_FABRIC_TAP = tap;
    const out = path.join(room.dir, "out");
    const r = await runRoom(room, out);
    expect(r.code, r.stderr).toBe(0);

    // The workload saw the plaintext: the marker's words are counted.
    const csv = openSealed(path.join(out, "counts.tar.age"), path.join(room.keys, "analyst.key")).get("counts.csv")!.toString();
    expect(csv).toContain(`quokka,${LINES / 500}\n`);

    // The tap saw the traffic: more than the input, and the control link's Room message, whose
    // canonical manifest crosses in clear (so the tap does capture what crosses in clear) — but
    // never the marker.
    expect(existsSync(tap)).toBe(true);
    const seen = readFileSync(tap);
    expect(statSync(tap).size).toBeGreaterThan(Buffer.byteLength(text));
    expect(seen.includes(Buffer.from('"apiVersion":"airlock/v1"'))).toBe(true);
    expect(seen.includes(Buffer.from(MARKER))).toBe(false);
    expect(seen.includes(Buffer.from(MARKER.toLowerCase()))).toBe(false);

    // The audit trail names the sandbox the firewall verified, as the host said it should be.
    const records = auditRecords(path.join(out, "audit.log"));
    const expected = records.find((x) => x.kind === "channel.expected")!;
    const opened = records.find((x) => x.kind === "channel.opened")!;
    expect(expected.data.measurement).toMatch(/^[0-9a-f]{96}$/);
    expect(opened.data.measurement).toBe(expected.data.measurement);
    const kinds = records.map((x) => x.kind);
    expect(kinds.indexOf("channel.opened")).toBeLessThan(kinds.indexOf("input.served"));
  });
});
