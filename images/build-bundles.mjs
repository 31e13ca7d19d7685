#!/usr/bin/env node
// Bundles each airlock program into one ES module file under dist/. The guest bundles are inputs
// of the measured boot images, so the build must be deterministic: no timestamps, no absolute
// paths, sorted inputs (esbuild guarantees stable output for the same sources and options).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

// The .node binary of node-vsock and our own native addon cannot be bundled: images copy them.
const external = ["node-vsock-linux-x64-gnu", "airlock-native", "*.node", "cpu-features"];

const programs = [
  { entry: "host-tools/src/main.ts", out: "dist/airlock.mjs" },
  { entry: "firewall-vm/src/main.ts", out: "dist/firewall-vm.mjs" },
  { entry: "sandbox-vm/src/main.ts", out: "dist/sandbox-vm.mjs" },
];

const banner = "import { createRequire as __airlockCreateRequire } from 'node:module'; const require = __airlockCreateRequire(import.meta.url);";

await Promise.all(
  programs.map(({ entry, out }) =>
    build({
      absWorkingDir: root,
      entryPoints: [entry],
      outfile: out,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      external,
      banner: { js: banner },
      sourcemap: false,
      legalComments: "none",
      logLevel: "warning",
    }),
  ),
);
console.error(`built ${programs.map((p) => p.out).join(", ")}`);
