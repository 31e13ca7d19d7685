#!/usr/bin/env node
// The `airlock` command: runs the bundled host tooling (built by `npm run build`).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const bundle = fileURLToPath(new URL("../../dist/airlock.mjs", import.meta.url));
if (!existsSync(bundle)) {
  console.error("airlock: the host tooling is not built yet [USAGE]\n  hint: run `npm run build` (or host-tools/scripts/setup.sh) first");
  process.exit(2);
}
await import(bundle);
