import { writeFileSync, mkdirSync, cpSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { scratchDir } from "../../../test/scratch.ts";
import { AirlockError } from "../errors.ts";
import { loadManifest, manifestDigest } from "./index.ts";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const hello = path.join(repo, "examples/hello/room.yaml");

function roomWith(yaml: string): string {
  const dir = scratchDir("airlock-manifest-");
  mkdirSync(path.join(dir, "workload"));
  writeFileSync(path.join(dir, "workload/run.sh"), "#!/bin/sh\necho hi\n");
  const file = path.join(dir, "room.yaml");
  writeFileSync(file, yaml);
  return file;
}

function problems(file: string): string {
  try {
    loadManifest(file);
  } catch (err) {
    expect(err).toBeInstanceOf(AirlockError);
    expect((err as AirlockError).code).toBe("MANIFEST_INVALID");
    return (err as AirlockError).message;
  }
  throw new Error("manifest was accepted");
}

describe("room manifest", () => {
  it("loads the hello example with defaults applied", () => {
    const m = loadManifest(hello);
    expect(m.name).toBe("hello");
    expect(m.workload.bundle).toBe(path.join(repo, "examples/hello/workload"));
    expect(m.outputs[0]).toMatchObject({ name: "greeting", mode: "open", format: "text", maxBytes: 4096 });
    expect(m.resources.sandbox.vcpus).toBe(1);
  });

  it("side channels: the console is declared on its own, padTo fits the timeout, reserved names, bounded open outputs, memory that boots", () => {
    const ok = loadManifest(
      roomWith(`apiVersion: airlock/v1
name: r
workload: {bundle: ./workload, command: [/bin/sh, run.sh], timeoutSeconds: 60, padTo: 60}
console: {mode: secure, maxBytes: 2048}
`),
    );
    expect(ok.console).toEqual({ mode: "secure", maxBytes: 2048 });
    expect(ok.workload.padToSeconds).toBe(60);
    expect(loadManifest(roomWith("apiVersion: airlock/v1\nname: r\nworkload: {bundle: ./workload, command: [/bin/sh, run.sh]}\n")).console).toBeUndefined();
    const msg = problems(
      roomWith(`apiVersion: airlock/v1
name: r
workload: {bundle: ./workload, command: [/bin/sh, run.sh], timeoutSeconds: 60, padTo: 61}
console: {mode: open}
outputs:
  - {name: console, mount: /data/out/c, mode: secure}
  - {name: o, mount: /data/out/o, mode: open, maxBytes: 1073741824}
resources: {firewall: {memoryMiB: 256}}
`),
    );
    expect(msg).toContain("workload.padTo: expected an integer from 1 to 60");
    expect(msg).toContain("console.mode: expected one of secure | trusted");
    expect(msg).toContain("outputs[0].name: expected a name other than console");
    expect(msg).toContain("outputs[1].maxBytes: expected an integer from 0 to 16777216");
    expect(msg).toContain("resources.firewall.memoryMiB: expected an integer from 512");
  });

  it("names the file, the field and what was expected", () => {
    const file = roomWith(`apiVersion: airlock/v1
name: Bad_Name
workload:
  bundle: ./workload
  command: /bin/sh run.sh
  env: {N: 3}
outputs:
  - name: o
    mount: /etc/passwd
    mode: public
    recipient: age1xyz
`);
    const msg = problems(file);
    expect(msg).toContain(file);
    expect(msg).toContain("name: expected a lower-case name");
    expect(msg).toContain("workload.command: expected a non-empty list of non-empty strings");
    expect(msg).toContain('workload.env.N: expected a string value (quote numbers), got 3');
    expect(msg).toContain("outputs[0].mount: expected a normalized absolute path under /data/out/");
    expect(msg).toContain("outputs[0].mode: expected one of secure | trusted | open");
  });

  it("rejects unknown fields, missing bundles, bad YAML and overlapping mounts", () => {
    expect(problems(roomWith("apiVersion: airlock/v1\nname: a\nworkload: {bundle: ./nope, command: [x]}\nworklaod: {}\n"))).toMatch(
      /worklaod: unknown field[\s\S]*workload.bundle: expected an existing directory/,
    );
    expect(problems(roomWith("apiVersion: airlock/v1\nname: [a\n"))).toMatch(/not valid YAML:\n {2}- line \d+, column \d+: Flow sequence/);
    expect(
      problems(
        roomWith(
          "apiVersion: airlock/v1\nname: a\nworkload: {bundle: ./workload, command: [x]}\noutputs:\n  - {name: a, mount: /data/out/a}\n  - {name: b, mount: /data/out/a/b}\n",
        ),
      ),
    ).toContain("mount /data/out/a/b: overlaps another input or output mount");
    expect(problems(path.join(tmpdir(), "no-such-room.yaml"))).toContain("cannot read the room manifest (ENOENT)");
  });

  it("refuses YAML aliases without their anchor or that expand too far as MANIFEST_INVALID (found by npm run fuzz)", () => {
    // yaml's toJS throws a ReferenceError for these after a parse that reported no error.
    expect(problems(roomWith("apiVersion: airlock/v1\nname: a\nworkload: {bundle: ./workload, command: [x]}\noutputs:\n  - {name: a, mount: /data/out/a, mode: *open}\n"))).toMatch(
      /not valid YAML: Unresolved alias/,
    );
    const bomb = `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [${Array(10).fill("*a").join(", ")}]\nc: &c [${Array(10).fill("*b").join(", ")}]\nd: [${Array(10).fill("*c").join(", ")}]\n`;
    expect(problems(roomWith(bomb))).toMatch(/not valid YAML: Excessive alias count/);
  });

  it("lists a garbled file's first YAML errors in linear time and refuses files over the size bound (found by npm run fuzz)", () => {
    // Thousands of errors: prettyErrors placed each one by scanning the text (50 s for 256 KiB).
    const garbled = `{"name":"out",.na${"&b [*a, *a, *a]".repeat(12_000)}`.slice(0, 200 * 1024);
    const started = Date.now();
    const msg = problems(roomWith(garbled));
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(msg).toMatch(/not valid YAML:\n {2}- line 1, column \d+: [\s\S]* {2}- and \d+ more$/);
    expect(msg.split("\n")).toHaveLength(22);
    expect(problems(roomWith(`# ${"x".repeat(300 * 1024)}\n`))).toMatch(/more than the limit of 262144/);
  });

  it("digests what changes the room, not where it sits on the host", () => {
    const a = manifestDigest(loadManifest(hello));
    expect(a).toHaveLength(32);
    const copy = scratchDir("airlock-manifest-");
    cpSync(path.join(repo, "examples/hello"), copy, { recursive: true });
    expect(manifestDigest(loadManifest(path.join(copy, "room.yaml")))).toEqual(a);
    writeFileSync(path.join(copy, "workload/run.sh"), "#!/bin/sh\necho changed\n");
    expect(manifestDigest(loadManifest(path.join(copy, "room.yaml")))).not.toEqual(a);
  });
});
