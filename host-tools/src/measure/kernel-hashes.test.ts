// sha256Of reads each file once, in 1 MiB blocks into one buffer shared by all calls, yielding to
// the event loop every 16 MiB: every size, device, /proc file and pipe must give the plain SHA-256
// of its bytes, also when calls interleave at those yields.
import { execFileSync, spawn } from "node:child_process";
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
  it("hashes regular files of every size around the block and yield limits", async () => {
    // 65 MiB + 3 yields four times.
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

  it("keeps calls apart that interleave at their yields (the block buffer is shared)", async () => {
    const a = Buffer.alloc(40 * MiB + 7, 0x11);
    const b = Buffer.alloc(33 * MiB + 1, 0x22);
    writeFileSync(path.join(dir, "a"), a);
    writeFileSync(path.join(dir, "b"), b);
    const [ha, hb] = await Promise.all([sha256Of(path.join(dir, "a"), "kernel"), sha256Of(path.join(dir, "b"), "initrd")]);
    expect([ha.toString("hex"), hb.toString("hex")]).toEqual([sha256(a), sha256(b)]);
  });

  it("reads a pipe to its end", async () => {
    const data = randomBytes(3 * MiB + 11);
    const fifo = path.join(dir, "fifo");
    writeFileSync(path.join(dir, "piped"), data);
    execFileSync("mkfifo", [fifo]);
    // The reads block this thread, so the writer is a process of its own with the bytes in a file.
    const writer = spawn("sh", ["-c", 'cat "$1" > "$2"', "sh", path.join(dir, "piped"), fifo], { stdio: "ignore" });
    expect((await sha256Of(fifo, "initrd")).toString("hex")).toBe(sha256(data));
    await new Promise((resolve) => writer.once("exit", resolve));
  });

  it("names the file it cannot read", async () => {
    await expect(sha256Of(path.join(dir, "missing"), "initrd")).rejects.toThrow(/cannot read the initrd .*missing \(ENOENT\)/);
    await expect(sha256Of(dir, "kernel")).rejects.toThrow(/cannot read the kernel .* \(EISDIR\)/);
  });
});
