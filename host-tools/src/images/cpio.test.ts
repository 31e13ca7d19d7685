import { execFileSync } from "node:child_process";
import { readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { scratchDir } from "../../../test/scratch.ts";
import { canonicalEntries, writeCpio, type CpioEntry } from "./cpio.ts";

async function archive(entries: CpioEntry[], mtime = 0): Promise<Buffer> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on("data", (c: Buffer) => chunks.push(c));
  await writeCpio(out, entries, { mtime });
  out.end();
  return Buffer.concat(chunks);
}

describe("cpio newc writer", () => {
  const dir = scratchDir("airlock-cpio-");
  const host = path.join(dir, "host.bin");
  writeFileSync(host, Buffer.alloc(5000, 7));
  const entries: CpioEntry[] = [
    { path: "bin", type: "dir" },
    { path: "bin/sh", type: "symlink", target: "busybox" },
    { path: "bin/busybox", type: "hostfile", source: host, size: 5000, mode: 0o755 },
    { path: "init", type: "file", data: Buffer.from("#!/bin/sh\necho hi\n"), mode: 0o755 },
    { path: "etc", type: "dir" },
    { path: "etc/odd", type: "file", data: Buffer.from("abc") },
  ];

  it("is byte-identical whatever the order of entries", async () => {
    const a = await archive(entries);
    const b = await archive([...entries].reverse());
    expect(a.equals(b)).toBe(true);
    expect((await archive(entries, 1)).equals(a)).toBe(false);
  });

  it("unpacks with GNU cpio to the same tree", async () => {
    const data = await archive(entries);
    const out = scratchDir("airlock-cpio-x-");
    execFileSync("cpio", ["-idm", "--quiet", "--no-absolute-filenames"], { cwd: out, input: data });
    expect(readFileSync(path.join(out, "init"), "utf8")).toBe("#!/bin/sh\necho hi\n");
    expect(statSync(path.join(out, "init")).mode & 0o777).toBe(0o755);
    expect(readFileSync(path.join(out, "bin/busybox")).equals(Buffer.alloc(5000, 7))).toBe(true);
    expect(readlinkSync(path.join(out, "bin/sh"))).toBe("busybox");
    expect(readFileSync(path.join(out, "etc/odd"), "utf8")).toBe("abc");
    const listing = execFileSync("cpio", ["-itv", "--quiet"], { input: data }).toString();
    expect(listing).toMatch(/root\s+root/);
    expect(listing).toMatch(/1970/);
  });

  it("refuses unsafe paths, duplicates and orphans", () => {
    expect(() => canonicalEntries([{ path: "../x", type: "dir" }])).toThrow(/unsafe/);
    expect(() => canonicalEntries([{ path: "a", type: "dir" }, { path: "a", type: "dir" }])).toThrow(/duplicate/);
    expect(() => canonicalEntries([{ path: "a/b", type: "dir" }])).toThrow(/no parent/);
  });

  it("notices a host file that changed size", async () => {
    await expect(archive([{ path: "x", type: "hostfile", source: host, size: 10 }])).rejects.toThrow(/changed size/);
  });
});
