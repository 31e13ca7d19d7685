import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync, chownSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { InputFile, runWorkload, strayFiles } from "./workload.ts";

const dir = mkdtempSync(path.join(tmpdir(), "airlock-agent-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const me = { uid: process.getuid!(), gid: process.getgid!(), cwd: dir };

describe("runWorkload", () => {
  it("captures stdout and stderr as data and returns the exit status", async () => {
    const r = await runWorkload({ command: ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], env: {}, outputMounts: [], timeoutSeconds: 10, ...me });
    expect(r.code).toBe(3);
    expect(r.console.toString()).toMatch(/out\nerr\n|err\nout\n/);
  });

  it("does not wait for a child the workload left holding its stdout", async () => {
    const t0 = Date.now();
    const r = await runWorkload({ command: ["/bin/sh", "-c", "sleep 30 & echo started; exit 0"], env: {}, outputMounts: [], timeoutSeconds: 60, ...me });
    expect(r.code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(6_000);
  });

  it("kills the whole process group at the time limit", async () => {
    const t0 = Date.now();
    const r = await runWorkload({ command: ["/bin/sh", "-c", "sleep 30 & sleep 30"], env: {}, outputMounts: [], timeoutSeconds: 1, ...me });
    expect(r.code).toBe(137);
    expect(Date.now() - t0).toBeLessThan(6_000);
  });
});

describe("inputs and stray files", () => {
  it("places an input read-only only when it is finished", () => {
    const mount = path.join(dir, "in/corpus.txt");
    const f = new InputFile(mount);
    f.write(Buffer.from("hello "));
    f.write(Buffer.from("world"));
    expect(() => statSync(mount)).toThrow();
    f.finish();
    expect(readFileSync(mount, "utf8")).toBe("hello world");
    expect(statSync(mount).mode & 0o777).toBe(0o444);
    expect(f.bytes).toBe(11);
  });

  it("lists the workload user's files outside its output folders", () => {
    const root = path.join(dir, "stray");
    mkdirSync(path.join(root, "out/o"), { recursive: true });
    writeFileSync(path.join(root, "stash.txt"), "x");
    writeFileSync(path.join(root, "out/o/fine.txt"), "x");
    writeFileSync(path.join(root, "root-owned.txt"), "x");
    if (process.getuid!() === 0) {
      chownSync(path.join(root, "stash.txt"), 1000, 1000);
      chownSync(path.join(root, "out/o/fine.txt"), 1000, 1000);
    }
    const uid = process.getuid!() === 0 ? 1000 : process.getuid!();
    const s = strayFiles([root], [path.join(root, "out/o")], uid);
    expect(s.paths).toContain(path.join(root, "stash.txt"));
    expect(s.paths).not.toContain(path.join(root, "out/o/fine.txt"));
    if (process.getuid!() === 0) expect(s.paths).not.toContain(path.join(root, "root-owned.txt"));
  });
});
