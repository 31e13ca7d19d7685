// Encrypted Zone's own .proto files (test/fixtures/ez-sdk, verbatim from the public SDK), compiled
// at test time with buf and protoc-gen-es into a folder of their own: the tests build clients from
// these descriptors, not from airlock's proto/enforcer/v1 copies, so a field number or type that
// drifted would show as a failed call or a failed comparison.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { repoRoot } from "../helpers.ts";

const OUT = path.join(repoRoot, "node_modules/.cache/airlock-ez-sdk");

/** Generates the SDK's TypeScript once per process; returns the import path of ez_service_pb.ts. */
let generated: string | undefined;
export function ezSdkModule(): string {
  if (generated) return generated;
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
  const template = path.join(OUT, "buf.gen.yaml");
  writeFileSync(template, `version: v2\nplugins:\n  - local: ${path.join(repoRoot, "node_modules/.bin/protoc-gen-es")}\n    out: ${OUT}\n    opt: [target=ts, import_extension=ts]\n`);
  execFileSync(path.join(repoRoot, "node_modules/.bin/buf"), ["generate", path.join(repoRoot, "test/fixtures/ez-sdk"), "--template", template], { cwd: repoRoot, stdio: "pipe" });
  return (generated = path.join(OUT, "enforcer/v1/ez_service_pb.ts"));
}
