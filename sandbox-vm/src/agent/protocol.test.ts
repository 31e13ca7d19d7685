import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { bodyOf, type Incoming } from "../../../proto/src/control.ts";
import { decodeMessage } from "../../../proto/src/wire.ts";
import { RunSchema, type AgentToFirewall } from "../../../proto/gen/airlock/v1/agent_pb.ts";
import { parseRun, sendResults } from "./protocol.ts";
import { capture } from "./test-link.ts";

const dir = mkdtempSync(path.join(tmpdir(), "airlock-protocol-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const good = () => ({
  command: ["/bin/sh", "/workload/run.sh"],
  env: { GREETING: "hello" } as Record<string, string>,
  timeoutSeconds: 60,
  outputs: [
    { name: "greeting", mount: "/data/out/greeting", maxBytes: 4096n },
    { name: "counts", mount: "/data/out/counts", maxBytes: 0n },
  ],
  console: { maxBytes: 1024n },
  roomCanonicalJson: Buffer.from('{"apiVersion":"airlock/v1","name":"hello"}'),
});

/** The Run message as the agent receives it: encoded by a (possibly hostile) firewall, then decoded and checked. */
const received = (init: MessageInitShape<typeof RunSchema>, extra = Buffer.alloc(0)) =>
  parseRun(decodeMessage(RunSchema, Buffer.concat([toBinary(RunSchema, create(RunSchema, init)), extra]), "the firewall"));

describe("parseRun", () => {
  it("accepts the firewall's run message", () => {
    expect(received(good())).toEqual({
      command: good().command,
      env: good().env,
      timeoutSeconds: 60,
      room: good().roomCanonicalJson,
      outputs: [
        { name: "greeting", mount: "/data/out/greeting", maxBytes: 4096 },
        { name: "counts", mount: "/data/out/counts", maxBytes: 0 },
      ],
      console: { maxBytes: 1024 },
      egress: [],
    });
    expect(received({ ...good(), padToSeconds: 60 }).padToSeconds).toBe(60);
    expect(() => received({ ...good(), padToSeconds: 61 })).toThrow(/padToSeconds/);
    expect(() => received({ ...good(), roomCanonicalJson: Buffer.alloc(0) })).toThrow(/Run.room_canonical_json is shorter/);
    expect(received({ ...good(), console: undefined, outputs: [] }).console).toBeNull();
  });

  type Init = ReturnType<typeof good> & Record<string, unknown>;
  it.each([
    ["an unknown field", (m: Init) => m, Buffer.from([0xf8, 0x06, 0x03]) /* field 111, varint 3 */, /Run.#111 is not a field/],
    ["a field of the wrong wire type", (m: Init) => m, Buffer.from([0x18, 0x02, 0x01, 0x00]) /* timeout_seconds as bytes */, /not a well-formed Run/],
    ["an empty command", (m: Init) => (m.command = []), undefined, /command must name a program/],
    ["an empty program", (m: Init) => (m.command = ["", "x"]), undefined, /command must name a program/],
    ["a NUL in an argument", (m: Init) => (m.command = ["/bin/sh", "a\0b"]), undefined, /Run.command\[1\] must not contain NUL/],
    ["too many arguments", (m: Init) => (m.command = Array.from({ length: 4097 }, () => "x")), undefined, /Run.command has more than 4096/],
    ["a bad env name", (m: Init) => (m.env = { "A=B": "1" }), undefined, /Run.env\[entry 0\].key must be an environment variable name/],
    ["a zero timeout", (m: Init) => (m.timeoutSeconds = 0), undefined, /Run.timeout_seconds must be from 1/],
    ["a mount outside /data/out", (m: Init) => (m.outputs = [{ name: "a", mount: "/data/in/abc", maxBytes: 1n }]), undefined, /Run.outputs\[0\].mount must be a normalized absolute path under \/data\/out\//],
    ["a mount that climbs out", (m: Init) => (m.outputs = [{ name: "a", mount: "/data/out/../in", maxBytes: 1n }]), undefined, /Run.outputs\[0\].mount must be a normalized absolute path/],
    ["/data/out itself", (m: Init) => (m.outputs = [{ name: "a", mount: "/data/out/", maxBytes: 1n }]), undefined, /Run.outputs\[0\].mount must be a normalized absolute path/],
    ["nested mounts", (m: Init) => (m.outputs = [{ name: "a", mount: "/data/out/a", maxBytes: 1n }, { name: "b", mount: "/data/out/a/b", maxBytes: 1n }]), undefined, /overlaps/],
    ["a name twice", (m: Init) => (m.outputs = [{ name: "a", mount: "/data/out/a", maxBytes: 1n }, { name: "a", mount: "/data/out/b", maxBytes: 1n }]), undefined, /twice/],
    ["an output named console", (m: Init) => (m.outputs = [{ name: "console", mount: "/data/out/a", maxBytes: 1n }]), undefined, /other than console/],
    ["an output name with capitals", (m: Init) => (m.outputs = [{ name: "A", mount: "/data/out/a", maxBytes: 1n }]), undefined, /Run.outputs\[0\].name must be a lower-case name/],
    ["a maxBytes past 1 TiB", (m: Init) => (m.outputs = [{ name: "a", mount: "/data/out/a", maxBytes: 2n ** 64n - 1n }]), undefined, /Run.outputs\[0\].max_bytes must be from 0 to/],
    ["a console bound past the manifest's", (m: Init) => (m.console = { maxBytes: 2n ** 40n }), undefined, /Run.console.max_bytes must be from 0 to 16777216/],
  ])("refuses %s", (_what, change, extra, error) => {
    const m = good() as Init;
    change(m);
    expect(() => received(m, extra)).toThrow(error);
  });
});

const shape = (ms: Incoming<AgentToFirewall>[]) => ms.map((m) => (m.kind === "message" ? bodyOf(m.message) : { data: m.data.toString() }));
const msg = (kind: string, value: Record<string, unknown>) => ({ case: kind, value: expect.objectContaining(value) });

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
    const ms = await capture((link) => sendResults(link, { command: ["x"], env: {}, timeoutSeconds: 1, egress: [], room: Buffer.from("{}"), outputs, console: { maxBytes: 5 } }, result, [path.join(dir, "empty")]));
    expect(shape(ms)).toEqual([
      msg("console", { bytes: 5n, truncated: true }),
      { data: "hello" },
      msg("output", { output: "a", files: 1, bytes: 1024n, overLimit: false, refused: expect.objectContaining(none) }), // as in a tar archive
      msg("file", { output: "a", name: Buffer.from("one.txt"), mode: 0o644, size: 3n }),
      { data: "one" },
      msg("output", { output: "b", files: 0, bytes: 0n, overLimit: true, refused: expect.objectContaining(none) }), // nothing of it crosses
      msg("stray", { count: 0n }),
      msg("exit", { code: 3 }),
    ]);
  });

  it("sends no console message when the room has no console", async () => {
    const ms = await capture((link) => sendResults(link, { command: ["x"], env: {}, timeoutSeconds: 1, egress: [], room: Buffer.from("{}"), outputs: [], console: null }, result, [path.join(dir, "empty")]));
    expect(shape(ms)).toEqual([
      msg("stray", { count: 0n }),
      msg("exit", { code: 3 }),
    ]);
  });

  it("reads nothing while a workload process survives", async () => {
    await expect(capture((link) => sendResults(link, { command: ["x"], env: {}, timeoutSeconds: 1, egress: [], room: Buffer.from("{}"), outputs, console: null }, { ...result, survivors: 2 }))).rejects.toThrow(/survived/);
  });
});
