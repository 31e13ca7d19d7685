// sha256Of reads each file once, whole on the thread pool (kernel-sized regular files) or streamed
// in blocks through two buffers (larger files, devices, /proc files whose size says 0): every path
// must give the plain SHA-256 of the bytes.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { sha256Of } from "./kernel-hashes.ts";

const dir = mkdtempSync(path.join(tmpdir(), "airlock-kernel-hashes-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const MiB = 1 << 20;
const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

describe("sha256Of", () => {
  it("hashes regular files of every size around the block and pool limits", async () => {
    // 65 MiB + 3 is above the thread-pool limit (64 MiB): streamed in 1 MiB blocks.
    for (const size of [0, 1, MiB - 1, MiB, MiB + 1, 3 * MiB + 5, 65 * MiB + 3]) {
      const data = size > 4 * MiB ? Buffer.alloc(size, 0x5a) : randomBytes(size);
      if (size > 0) data[size - 1] = size & 0xff;
      const file = path.join(dir, `f${size}`);
      writeFileSync(file, data);
      expect((await sha256Of(file, "kernel")).toString("hex"), `${size} bytes`).toBe(sha256(data));
      expect((await sha256Of(data, "kernel")).toString("hex")).toBe(sha256(data));
    }
  });

  it("reads devices and /proc files to their end", async () => {
    expect((await sha256Of("/dev/null", "initrd")).toString("hex")).toBe(sha256(Buffer.alloc(0)));
    const [a, b] = await Promise.all([sha256Of("/proc/version", "kernel"), sha256Of("/proc/version", "initrd")]);
    expect(a.toString("hex")).toBe(b.toString("hex"));
    expect(a.toString("hex")).not.toBe(sha256(Buffer.alloc(0)));
  });

  it("names the file it cannot read", async () => {
    await expect(sha256Of(path.join(dir, "missing"), "initrd")).rejects.toThrow(/cannot read the initrd .*missing \(ENOENT\)/);
    await expect(sha256Of(dir, "kernel")).rejects.toThrow(/cannot read the kernel .* \(EISDIR\)/);
  });
});
