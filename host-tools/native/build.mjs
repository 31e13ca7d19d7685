#!/usr/bin/env node
// Builds the fabric's native shim with node-gyp when a source is newer than the addon, so
// `npm run build` stays fast when nothing changed. Uses the installed Node headers when present
// (this host has no network for node-gyp to fetch them).
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const addon = path.join(here, "build/Release/airlock_fabric.node");
const inputs = ["binding.gyp", "build.mjs", ...readdirSync(path.join(here, "src")).map((f) => `src/${f}`)].map((f) => path.join(here, f));

const built = existsSync(addon) ? statSync(addon).mtimeMs : 0;
if (inputs.every((f) => statSync(f).mtimeMs <= built)) process.exit(0);

const nodeDir = path.resolve(path.dirname(process.execPath), "..");
const args = ["rebuild", "--loglevel=warn"];
if (existsSync(path.join(nodeDir, "include/node/node_api.h"))) args.push(`--nodedir=${nodeDir}`);
const gyp = path.resolve(here, "../../node_modules/node-gyp/bin/node-gyp.js");
execFileSync(process.execPath, [gyp, ...args], { cwd: here, stdio: ["ignore", "ignore", "inherit"] });
console.error("built host-tools/native/build/Release/airlock_fabric.node");
