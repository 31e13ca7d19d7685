import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MAX_DEPTH, openRegular, readPieces, scanOutput, sendOutput, ShrunkError } from "./outputs.ts";
import { sendResults } from "./protocol.ts";
import { InputFile, processesOf, runWorkload, strayCount } from "./workload.ts";
import { capture, messagesOf as json } from "./test-link.ts";

// As root (CI, the dev host) the workload runs as uid 1000 and the agent's sweep of that uid is
// exercised; as an ordinary user it runs as that user, and the tests that need the sweep skip.
const root = process.getuid!() === 0;
const UID = root ? 1000 : process.getuid!();
const GID = root ? 1000 : process.getgid!();
const dir = mkdtempSync(path.join(tmpdir(), "airlock-agent-"));
chmodSync(dir, 0o755); // the workload user runs in it
afterAll(() => rmSync(dir, { recursive: true, force: true }));
// A bounded process limit in every test, so a test gone wrong cannot flood the host.
// (Generous: the host's init may be slow to reap killed processes, and zombies count too.)
const as = { uid: UID, gid: GID, cwd: dir, maxTasks: 3000 };
const run = (command: string[], more: { timeoutSeconds?: number; outputMounts?: string[]; consoleMaxBytes?: number | null } = {}) =>
  runWorkload({ command, env: {}, outputMounts: more.outputMounts ?? [], timeoutSeconds: more.timeoutSeconds ?? 10, consoleMaxBytes: more.consoleMaxBytes === undefined ? 1 << 20 : more.consoleMaxBytes, ...as });
let n = 0;
const fresh = (name: string): string => {
  const p = path.join(dir, `${name}-${++n}`);
  mkdirSync(p, { recursive: true });
  return p;
};


describe("runWorkload", () => {
  it("captures stdout and stderr as data and returns the exit status", async () => {
    const r = await run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]);
    expect(r.code).toBe(3);
    expect(r.console.toString()).toMatch(/out\nerr\n|err\nout\n/);
    expect(r.survivors).toBe(0);
  });

  it("bounds the console capture, and captures nothing when there is no console", async () => {
    const r = await run(["/bin/sh", "-c", "head -c 5000 /dev/zero"], { consoleMaxBytes: 1000 });
    expect([r.console.length, r.consoleTruncated]).toEqual([1000, true]);
    const none = await run(["/bin/sh", "-c", "head -c 5000 /dev/zero; exit 4"], { consoleMaxBytes: null });
    expect([none.code, none.console.length, none.consoleTruncated]).toEqual([4, 0, false]);
  });

  it("reports a command that cannot start as status 127", async () => {
    const r = await run(["/nonexistent/workload"]);
    expect(r.code).toBe(127);
    expect(r.console.toString()).toMatch(/cannot start the workload|not found/);
  });

  it("does not wait for a child the workload left holding its stdout", async () => {
    const t0 = Date.now();
    const r = await run(["/bin/sh", "-c", "sleep 30 & echo started; exit 0"], { timeoutSeconds: 60 });
    expect(r.code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(6_000);
  });

  it("kills the whole process group at the time limit", async () => {
    const t0 = Date.now();
    const r = await run(["/bin/sh", "-c", "sleep 30 & sleep 30"], { timeoutSeconds: 1 });
    expect(r.code).toBe(137);
    expect(Date.now() - t0).toBeLessThan(6_000);
  });

  it.skipIf(!root)("kills a setsid daemon that keeps writing before anything is collected", async () => {
    const out = fresh("daemon");
    prepare(out);
    // The daemon leaves the workload's session and process group and keeps writing to an output
    // file and to the console pipe; the main process exits at once.
    const daemon = `setsid /bin/sh -c 'while :; do echo x >> ${out}/log; echo y; done' & sleep 0.3; exit 0`;
    const r = await run(["/bin/sh", "-c", daemon], { outputMounts: [out] });
    expect(r.code).toBe(0);
    expect(r.survivors).toBe(0);
    expect(processesOf(UID).live).toEqual([]);
    const size = statSync(path.join(out, "log")).size;
    expect(size).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(statSync(path.join(out, "log")).size).toBe(size);
  });

  it.skipIf(!root)("does not let a fork bomb win", async () => {
    // Held to 100 tasks here (4096 in the VM): the sweep freezes it, then kills it.
    const bomb = "setsid /bin/sh -c 'b(){ b | b & }; b' 2>/dev/null & sleep 0.5; exit 0";
    const r = await runWorkload({ command: ["/bin/sh", "-c", bomb], env: {}, outputMounts: [], timeoutSeconds: 10, consoleMaxBytes: 1000, ...as, maxTasks: 100 });
    expect(r.survivors).toBe(0);
    expect(processesOf(UID).live).toEqual([]);
  });

  it.skipIf(!root)("kills a daemon that keeps forking", async () => {
    // Each round leaves an orphaned sleep behind and the loop itself keeps forking.
    const r = await run(["/bin/sh", "-c", "setsid /bin/sh -c 'while :; do (sleep 60 &); done' & sleep 0.5; exit 0"]);
    expect(r.survivors).toBe(0);
    expect(processesOf(UID).live).toEqual([]);
  });

  it.skipIf(!root)("kills a setsid daemon left over at the time limit", async () => {
    const t0 = Date.now();
    const r = await run(["/bin/sh", "-c", "setsid /bin/sh -c 'while :; do :; done' & sleep 30"], { timeoutSeconds: 1 });
    expect(r.code).toBe(137);
    expect(r.survivors).toBe(0);
    expect(processesOf(UID).live).toEqual([]);
    expect(Date.now() - t0).toBeLessThan(6_000);
  });

  it.skipIf(!root)("leaves the workload first in line for the OOM killer, and unable to change that", async () => {
    const before = readFileSync("/proc/self/oom_score_adj", "utf8");
    const r = await run(["/bin/sh", "-c", "cat /proc/self/oom_score_adj; (echo 0 > /proc/self/oom_score_adj) 2>/dev/null && echo lowered || echo refused"]);
    // The floor comes from root writing it with CAP_SYS_RESOURCE (the VM's agent has it; a
    // container may not).
    const capSysResource = (BigInt(`0x${/^CapEff:\s+([0-9a-f]+)/m.exec(readFileSync("/proc/self/status", "utf8"))![1]}`) >> 24n) & 1n;
    expect(r.console.toString()).toBe(capSysResource ? "1000\nrefused\n" : "1000\nlowered\n");
    expect(readFileSync("/proc/self/oom_score_adj", "utf8")).toBe(before);
  });
});

/** An output folder as the agent makes it: owned by the workload user. */
function prepare(p: string): void {
  mkdirSync(p, { recursive: true });
  if (root) chownSync(p, UID, GID);
}

describe("collecting an output", () => {
  it("refuses a FIFO and a symlink without blocking, and counts them", async () => {
    const out = fresh("special");
    writeFileSync(path.join(out, "fine.txt"), "fine");
    expect(spawnSync("mkfifo", [path.join(out, "fifo")]).status).toBe(0);
    symlinkSync("/etc/passwd", path.join(out, "passwd"));
    symlinkSync("/etc", path.join(out, "etc"));
    // Swapped in where a file was expected: opened without blocking or following, then refused.
    expect(openRegular(path.join(out, "fifo")).kind).toBe("special");
    expect(openRegular(path.join(out, "passwd")).kind).toBe("symlink");
    const scan = scanOutput(out, 1 << 20);
    expect(scan.refused).toEqual({ special: 1, symlinks: 2, badNames: 0, unreadable: 0 });
    expect(scan.files.map((f) => f.rel.toString())).toEqual(["fine.txt"]);
    // A FIFO swapped in after the listing ends the run instead of blocking it.
    unlinkSync(path.join(out, "fine.txt"));
    expect(spawnSync("mkfifo", [path.join(out, "fine.txt")]).status).toBe(0);
    await expect(capture((link) => sendOutput(link, "o", scan))).rejects.toThrow(/no longer a regular file/);
  });

  it("counts a name that is not UTF-8 instead of dropping it", () => {
    const out = fresh("names");
    writeFileSync(Buffer.concat([Buffer.from(`${out}/bad-`), Buffer.from([0xff, 0xfe])]), "x");
    mkdirSync(Buffer.concat([Buffer.from(`${out}/dir-`), Buffer.from([0xc3, 0x28])]));
    writeFileSync(Buffer.concat([Buffer.from(`${out}/dir-`), Buffer.from([0xc3, 0x28]), Buffer.from("/inner")]), "x");
    writeFileSync(path.join(out, "gr\u00fc\u00dfe.txt"), "ok");
    const scan = scanOutput(out, 1 << 20);
    expect(scan.refused.badNames).toBe(2);
    expect(scan.files.map((f) => f.rel.toString())).toEqual(["gr\u00fc\u00dfe.txt"]);
  });

  it("refuses what is nested deeper than the bound", () => {
    const out = fresh("deep");
    const deep = path.join(out, ...Array.from({ length: MAX_DEPTH + 1 }, (_, i) => `d${i}`));
    mkdirSync(deep, { recursive: true });
    writeFileSync(path.join(deep, "too-deep"), "x");
    writeFileSync(path.join(path.dirname(deep), "deepest"), "x");
    const scan = scanOutput(out, 1 << 20);
    expect(scan.refused.badNames).toBe(1);
    expect(scan.files.map((f) => f.rel.toString().split("/").length)).toEqual([MAX_DEPTH + 1]);
  });

  it("sends nothing of an output over its size bound, or with too many entries", async () => {
    const out = fresh("big");
    writeFileSync(path.join(out, "a"), Buffer.alloc(600));
    writeFileSync(path.join(out, "b"), Buffer.alloc(500));
    // Sized as in the sealed archive: a 512-byte header per file, content rounded up to 512.
    expect(scanOutput(out, 2560)).toMatchObject({ bytes: 512 + 1024 + 512 + 512, overLimit: false });
    expect(scanOutput(out, 2559)).toMatchObject({ bytes: 512 + 1024 + 512 + 512, overLimit: true });
    // Over its bound: announced with no files and no bytes, as the enforcer requires.
    const ms = await capture((link) => sendOutput(link, "o", scanOutput(out, 2047)));
    expect(ms).toHaveLength(1);
    expect(json(ms)).toEqual([{ type: "output", output: "o", files: 0, bytes: 0, overLimit: true, refused: { special: 0, symlinks: 0, badNames: 0, unreadable: 0 } }]);
    const many = fresh("many");
    for (let i = 0; i <= 10; i++) writeFileSync(path.join(many, `f${i}`), "");
    expect(scanOutput(many, 1 << 20, 11).overLimit).toBe(false);
    const scan = scanOutput(many, 1 << 20, 10); // MAX_ENTRIES in the agent; smaller here to stay fast
    expect(scan.overLimit).toBe(true);
    expect(await capture((link) => sendOutput(link, "o", scan))).toHaveLength(1);
  });

  it("reads a file in pieces of at most 1 MiB, up to its size and never past it", async () => {
    const out = fresh("pieces");
    mkdirSync(path.join(out, "sub"));
    const big = Buffer.alloc(2.5 * 1024 * 1024, 7);
    writeFileSync(path.join(out, "sub/big.bin"), big, { mode: 0o700 });
    writeFileSync(path.join(out, "small.txt"), "hi");
    const ms = await capture((link) => sendOutput(link, "o", scanOutput(out, 10 << 20)));
    expect(json(ms)).toEqual([
      { type: "output", output: "o", files: 2, bytes: 512 + big.length + 512 + 512, overLimit: false, refused: { special: 0, symlinks: 0, badNames: 0, unreadable: 0 } },
      { type: "file", output: "o", name: "small.txt", mode: 0o644, size: 2 },
      { type: "file", output: "o", name: "sub/big.bin", mode: 0o755, size: big.length },
    ]);
    const sizes = ms.map((m) => (m.kind === "data" ? m.data.length : "message"));
    expect(sizes).toEqual(["message", "message", 2, "message", 1 << 20, 1 << 20, 512 * 1024]);
    // readPieces asks for no more than the size it is given, and a file shorter than that is an error.
    const fd = openSync(path.join(out, "small.txt"), "r");
    try {
      expect([...readPieces(fd, 1, 4)].map((b) => b.toString())).toEqual(["h"]);
      expect(() => [...readPieces(fd, 3, 4)]).toThrow(ShrunkError);
    } finally {
      closeSync(fd);
    }
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

  it.skipIf(!root)("counts the workload user's files outside its output folders, and says only the count", async () => {
    const top = fresh("stray");
    const out = path.join(top, "out/o");
    prepare(out);
    const mine = (p: Buffer | string, data = "x"): void => {
      writeFileSync(p, data);
      chownSync(p, UID, GID);
    };
    mkdirSync(path.join(top, "tmp/hidden"), { recursive: true });
    chownSync(path.join(top, "tmp/hidden"), UID, GID);
    mine(path.join(top, "tmp/hidden/stash.txt"));
    mine(Buffer.concat([Buffer.from(`${top}/tmp/`), Buffer.from([0xff])]));
    symlinkSync("/etc/passwd", path.join(top, "tmp/link"));
    spawnSync("chown", ["-h", `${UID}:${GID}`, path.join(top, "tmp/link")]);
    writeFileSync(path.join(top, "root-owned.txt"), "x");
    mine(path.join(out, "fine.txt"));
    expect(strayCount([top], [out], UID)).toBe(4); // hidden/, stash.txt, the 0xff file, link
    const ms = await capture((link) =>
      sendResults(link, { command: ["x"], env: {}, timeoutSeconds: 1, egress: [], room: Buffer.from("{}"), outputs: [], console: null }, { code: 0, console: Buffer.alloc(0), consoleTruncated: false, survivors: 0 }, [path.join(top, "tmp")]),
    );
    expect(json(ms)).toEqual([
      { type: "stray", count: 4 },
      { type: "exit", code: 0 },
    ]);
  });
});
