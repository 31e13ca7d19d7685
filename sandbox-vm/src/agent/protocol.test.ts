import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { Incoming } from "../../../proto/src/control.ts";
import { parseRun, sendResults } from "./protocol.ts";
import { capture } from "./test-link.ts";

const dir = mkdtempSync(path.join(tmpdir(), "airlock-protocol-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const good = () => ({
  type: "run",
  command: ["/bin/sh", "/workload/run.sh"],
  env: { GREETING: "hello" },
  timeoutSeconds: 60,
  outputs: [
    { name: "greeting", mount: "/data/out/greeting", maxBytes: 4096 },
    { name: "counts", mount: "/data/out/counts", maxBytes: 0 },
  ],
  console: { maxBytes: 1024 },
  room: { apiVersion: "airlock/v1", name: "hello" },
});

describe("parseRun", () => {
  it("accepts the firewall's run message", () => {
    expect(parseRun(good())).toEqual({ command: good().command, env: good().env, timeoutSeconds: 60, room: good().room, outputs: good().outputs, console: { maxBytes: 1024 } });
    expect(parseRun({ ...good(), padToSeconds: 60 }).padToSeconds).toBe(60);
    expect(() => parseRun({ ...good(), padToSeconds: 61 })).toThrow(/padToSeconds/);
    expect(() => parseRun({ ...good(), room: "x" })).toThrow(/room/);
    expect(parseRun({ ...good(), console: null, outputs: [] }).console).toBeNull();
  });

  it.each([
    ["a missing console", (m: Record<string, unknown>) => delete m.console],
    ["an unknown field", (m: Record<string, unknown>) => (m.padTo = 3)],
    ["an empty command", (m: Record<string, unknown>) => (m.command = [])],
    ["a command that is not strings", (m: Record<string, unknown>) => (m.command = ["/bin/sh", 3])],
    ["a NUL in an argument", (m: Record<string, unknown>) => (m.command = ["/bin/sh", "a\0b"])],
    ["env that is a list", (m: Record<string, unknown>) => (m.env = ["A=1"])],
    ["a bad env name", (m: Record<string, unknown>) => (m.env = { "A=B": "1" })],
    ["an env value that is not a string", (m: Record<string, unknown>) => (m.env = { A: 1 })],
    ["a zero timeout", (m: Record<string, unknown>) => (m.timeoutSeconds = 0)],
    ["a fractional timeout", (m: Record<string, unknown>) => (m.timeoutSeconds = 1.5)],
    ["outputs that are not a list", (m: Record<string, unknown>) => (m.outputs = {})],
    ["a mount outside /data/out", (m: Record<string, unknown>) => (m.outputs = [{ name: "a", mount: "/data/in/a", maxBytes: 1 }])],
    ["a mount that climbs out", (m: Record<string, unknown>) => (m.outputs = [{ name: "a", mount: "/data/out/../in", maxBytes: 1 }])],
    ["/data/out itself", (m: Record<string, unknown>) => (m.outputs = [{ name: "a", mount: "/data/out/", maxBytes: 1 }])],
    ["nested mounts", (m: Record<string, unknown>) => (m.outputs = [{ name: "a", mount: "/data/out/a", maxBytes: 1 }, { name: "b", mount: "/data/out/a/b", maxBytes: 1 }])],
    ["a name twice", (m: Record<string, unknown>) => (m.outputs = [{ name: "a", mount: "/data/out/a", maxBytes: 1 }, { name: "a", mount: "/data/out/b", maxBytes: 1 }])],
    ["an output named console", (m: Record<string, unknown>) => (m.outputs = [{ name: "console", mount: "/data/out/a", maxBytes: 1 }])],
    ["a negative maxBytes", (m: Record<string, unknown>) => (m.outputs = [{ name: "a", mount: "/data/out/a", maxBytes: -1 }])],
    ["an extra output field", (m: Record<string, unknown>) => (m.outputs = [{ name: "a", mount: "/data/out/a", maxBytes: 1, mode: "open" }])],
    ["a console bound past the manifest's", (m: Record<string, unknown>) => (m.console = { maxBytes: 2 ** 40 })],
    ["a console that is not an object", (m: Record<string, unknown>) => (m.console = 5)],
  ])("refuses %s", (_what, change) => {
    const m: Record<string, unknown> = good();
    change(m);
    expect(() => parseRun(m)).toThrow(/run message/);
  });
});

const shape = (ms: Incoming[]) => ms.map((m) => (m.kind === "json" ? m.value : { data: m.data.toString() }));

describe("sendResults", () => {
  const a = path.join(dir, "a");
  const b = path.join(dir, "b");
  mkdirSync(a);
  mkdirSync(b);
  writeFileSync(path.join(a, "one.txt"), "one");
  writeFileSync(path.join(b, "big"), "0123456789");
  const outputs = [
    { name: "a", mount: a, maxBytes: 1024 },
    { name: "b", mount: b, maxBytes: 1023 },
  ];
  const result = { code: 3, console: Buffer.from("hello world"), consoleTruncated: false, survivors: 0 };
  const none = { special: 0, symlinks: 0, badNames: 0, unreadable: 0 };

  it("sends the console, each output, the stray count and the exit status, in that order", async () => {
    const ms = await capture((link) => sendResults(link, { command: ["x"], env: {}, timeoutSeconds: 1, room: {}, outputs, console: { maxBytes: 5 } }, result, [path.join(dir, "empty")]));
    expect(shape(ms)).toEqual([
      { type: "console", bytes: 5, truncated: true },
      { data: "hello" },
      { type: "output", output: "a", files: 1, bytes: 1024, overLimit: false, refused: none }, // as in a tar archive
      { type: "file", output: "a", name: Buffer.from("one.txt").toString("base64"), mode: 0o644, size: 3 },
      { data: "one" },
      { type: "output", output: "b", files: 0, bytes: 0, overLimit: true, refused: none }, // nothing of it crosses
      { type: "stray", count: 0 },
      { type: "exit", code: 3 },
    ]);
  });

  it("sends no console message when the room has no console", async () => {
    const ms = await capture((link) => sendResults(link, { command: ["x"], env: {}, timeoutSeconds: 1, room: {}, outputs: [], console: null }, result, [path.join(dir, "empty")]));
    expect(shape(ms)).toEqual([
      { type: "stray", count: 0 },
      { type: "exit", code: 3 },
    ]);
  });

  it("reads nothing while a workload process survives", async () => {
    await expect(capture((link) => sendResults(link, { command: ["x"], env: {}, timeoutSeconds: 1, room: {}, outputs, console: null }, { ...result, survivors: 2 }))).rejects.toThrow(/survived/);
  });
});
