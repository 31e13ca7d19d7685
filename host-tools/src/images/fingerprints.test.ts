// Host files' digests are remembered under their identity and change times (host-inputs.ts): a
// file rewritten in place, even to the same size and mtime, is hashed again; a damaged record is
// not believed.
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { hostFile } from "./host-inputs.ts";

const dir = mkdtempSync(path.join(tmpdir(), "airlock-fingerprints-"));
process.env.AIRLOCK_CACHE = path.join(dir, "cache");
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sha = (b: Buffer | string): string => createHash("sha256").update(b).digest("hex");

describe("host file fingerprints", () => {
  it("gives the file's SHA-256, remembers it on disk, and hashes again after any write", async () => {
    const f = path.join(dir, "input.bin");
    writeFileSync(f, "first contents");
    expect((await hostFile(f)).sha256).toBe(sha("first contents"));
    const records = readdirSync(path.join(dir, "cache/fingerprints"));
    expect(records).toHaveLength(1);

    // Same size, and the old mtime put back: the ctime still moved, so it is hashed again.
    const before = statSync(f);
    await new Promise((r) => setTimeout(r, 20));
    writeFileSync(f, "other contents");
    utimesSync(f, before.atime, before.mtime);
    expect((await hostFile(f)).sha256).toBe(sha("other contents"));
  });

  it("does not believe a damaged record", async () => {
    const f = path.join(dir, "second.bin");
    writeFileSync(f, "second");
    await hostFile(f);
    const recordsDir = path.join(dir, "cache/fingerprints");
    for (const r of readdirSync(recordsDir)) writeFileSync(path.join(recordsDir, r), "garbage\nnot-a-digest\n");
    // A new process's view: the in-memory memo is bypassed by a fresh import.
    vi.resetModules();
    const fresh = await import("./host-inputs.ts");
    expect((await fresh.hostFile(f)).sha256).toBe(sha("second"));
  });
});
