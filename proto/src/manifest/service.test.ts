// The manifest's workload.service (firewall-vm/src/proxies/service/README.md § The manifest): what a
// service room declares, its defaults, what it may not combine with, and the same room through the
// canonical form the firewall checks.
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { scratchDir } from "../../../test/scratch.ts";
import type { AirlockError } from "../errors.ts";
import { canonicalJson, canonicalManifest, loadManifest, validateCanonical } from "./index.ts";

function roomWith(workloadExtra: string, rest = ""): string {
  const dir = scratchDir("airlock-service-");
  mkdirSync(path.join(dir, "workload"));
  writeFileSync(path.join(dir, "workload/server.mjs"), "// a server\n");
  const file = path.join(dir, "room.yaml");
  writeFileSync(file, `apiVersion: airlock/v1\nname: s\nworkload:\n  bundle: ./workload\n  command: [/bin/node, /workload/server.mjs]\n${workloadExtra}\n${rest}`);
  return file;
}

function problems(file: string): string {
  try {
    loadManifest(file);
  } catch (err) {
    expect((err as AirlockError).code).toBe("MANIFEST_INVALID");
    return (err as AirlockError).message;
  }
  throw new Error("accepted");
}

describe("workload.service", () => {
  it("takes a port, a protocol, methods and a reset policy, with defaults, through the canonical form unchanged", () => {
    const m = loadManifest(roomWith("  service:\n    port: 8080\n    methods: [{service: demo.Echo, method: Echo, maxResponseBytes: 4096}]"));
    expect(m.workload.service).toEqual({ port: 8080, protocol: "http", reset: "never", callTimeoutSeconds: 30, api: { tls: true }, methods: [{ service: "demo.Echo", method: "Echo", maxRequestBytes: 1048576, maxResponseBytes: 4096 }] });
    const pins = { firewall: "a".repeat(96), sandbox: "b".repeat(96), broker: "c".repeat(64) };
    const canonical = validateCanonical(JSON.parse(canonicalJson(canonicalManifest(m, pins))));
    expect(canonical.workload.service).toEqual(m.workload.service);
  });

  it("refuses what a service cannot mean, naming each field", () => {
    const p = problems(roomWith("  service:\n    port: 70000\n    protocol: smtp\n    reset: always\n    methods: [{service: 'bad name', method: Echo}, {service: a.B, method: M}, {service: a.B, method: M}]\n    api: {tls: maybe}\n    extra: 1"));
    expect(p).toMatch(/workload.service.port: expected an integer from 1 to 65535/);
    expect(p).toMatch(/workload.service.protocol: expected one of http \| grpc/);
    expect(p).toMatch(/workload.service.reset: expected one of never \| session \| conflict/);
    expect(p).toMatch(/methods\[0\].service: expected a gRPC service name/);
    expect(p).toMatch(/methods\[2\]: a.B\/M is listed twice/);
    expect(p).toMatch(/api.tls: expected true or false/);
    expect(p).toMatch(/workload.service.extra: unknown field/);
    expect(problems(roomWith("  service: {port: 8080, methods: []}"))).toMatch(/methods: expected a non-empty list/);
  });

  it("has no outputs, console, egress, inputs or padTo: its answers are its outputs", () => {
    const p = problems(roomWith("  padTo: 5\n  service: {port: 8080, methods: [{service: a.B, method: M}]}", "outputs: [{name: o, mount: /data/out/o, mode: open}]\n"));
    expect(p).toMatch(/a service room has no outputs or console/);
    expect(p).toMatch(/padTo: a service room has no end to pad/);
  });
});
