#!/usr/bin/env node
// Bundles each airlock program into one ES module file under dist/. The guest bundles are inputs
// of the measured boot images, so the build must be deterministic: no timestamps, no absolute
// paths, sorted inputs (esbuild guarantees stable output for the same sources and options).
import { build } from "esbuild";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

// The .node binary of node-vsock and our own native addon cannot be bundled: images copy them.
// ssh2 (--host) stays a runtime import too: its wasm loader needs its own __dirname.
const external = ["node-vsock-linux-x64-gnu", "airlock-native", "*.node", "cpu-features", "ssh2"];

// The guests' programs, measured into the images: the sandbox's one file; the firewall's entry plus
// content-named chunks in dist/firewall-vm-chunks/ (the images hold them all), so that a batch
// room's firewall does not parse the service rooms' code — gRPC, TLS certificates: 1.3 of its 2
// MB, about a quarter of a second of its start under TCG (issue 12).
const programs = [
  { entry: "sandbox-vm/src/main.ts", out: "dist/sandbox-vm.mjs" },
];

const banner = "import { createRequire as __airlockCreateRequire } from 'node:module'; const require = __airlockCreateRequire(import.meta.url);";

const common = {
  absWorkingDir: root,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  external,
  banner: { js: banner },
  sourcemap: false,
  legalComments: "none",
  logLevel: "warning",
};

// yargs lays out its help with string-width, whose modules construct an Intl.Segmenter and hold
// Unicode-property regular expressions that V8 validates when it parses them, even inside a
// function not yet called (about 25 ms together, a third of node's own start). The host CLI gets
// a stand-in: printable ASCII (all of airlock's help) is one column per character in every
// string-width version (v8 has the same fast path); anything else goes to the real module its
// importer would have got, bundled as a string and compiled on first use.
const lazyStringWidth = {
  name: "lazy-string-width",
  setup(b) {
    b.onResolve({ filter: /^string-width$/ }, async (args) => {
      if (args.pluginData?.real) return undefined;
      const real = await b.resolve(args.path, { importer: args.importer, resolveDir: args.resolveDir, kind: args.kind, pluginData: { real: true } });
      if (real.errors.length > 0) return { errors: real.errors };
      return { path: path.relative(root, real.path), namespace: "lazy-string-width" };
    });
    b.onLoad({ filter: /.*/, namespace: "lazy-string-width" }, async (args) => {
      const real = await build({ absWorkingDir: root, entryPoints: [path.resolve(root, args.path)], bundle: true, write: false, platform: "neutral", mainFields: ["module", "main"], format: "cjs", target: "node20", legalComments: "none", logLevel: "warning" });
      return {
        contents: [
          `const source = ${JSON.stringify(real.outputFiles[0].text)};`,
          "let real;",
          "export default function stringWidth(string, options) {",
          "  if (typeof string === 'string' && /^[\\x20-\\x7e]*$/.test(string)) return string.length;",
          "  if (real === undefined) {",
          "    const module = { exports: {} };",
          "    new Function('module', 'exports', source)(module, module.exports);",
          "    real = module.exports.default;",
          "  }",
          "  return real(string, options);",
          "}",
        ].join("\n"),
        loader: "js",
      };
    });
  },
};

// `airlock --help` as yargs lays it out, rendered here for the common widths and defined into the
// CLI's entry (host-tools/src/main.ts prints it without loading yargs). The renderer is the CLI's
// own parser (cli/run-cli.ts topLevelHelp), bundled without the commands' modules, which the
// top-level help never loads; host-tools/src/cli/run-cli.test.ts checks both print the same.
async function renderTopLevelHelp() {
  const dir = mkdtempSync(path.join(tmpdir(), "airlock-help-"));
  try {
    const file = path.join(dir, "help.mjs");
    await build({
      ...common,
      entryPoints: ["host-tools/src/cli/run-cli.ts"],
      outfile: file,
      plugins: [
        lazyStringWidth,
        { name: "no-command-modules", setup: (b) => b.onResolve({ filter: /.*/ }, (args) => (args.kind === "dynamic-import" && args.importer.endsWith(path.join("cli", "commands", "index.ts")) ? { path: args.path, external: true } : undefined)) },
      ],
    });
    const { topLevelHelp } = await import(pathToFileURL(file).href);
    const widths = [80, 100, 110]; // cli/help-width.ts PREBUILT_HELP_WIDTHS
    return Object.fromEntries(await Promise.all(widths.map(async (w) => [String(w), await topLevelHelp(w)])));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * An entry dist/<name>.mjs whose dynamic imports become content-named chunks in dist/<name>-chunks/;
 * the chunks an earlier build left there are removed after the build.
 */
async function buildWithChunks(name, options) {
  const chunks = path.join(root, "dist", `${name}-chunks`);
  const result = await build({ ...common, outdir: "dist", outExtension: { ".js": ".mjs" }, splitting: true, chunkNames: `${name}-chunks/[name]-[hash]`, metafile: true, ...options });
  const written = new Set(Object.keys(result.metafile.outputs).map((f) => path.resolve(root, f)));
  for (const f of existsSync(chunks) ? readdirSync(chunks) : []) if (!written.has(path.join(chunks, f))) rmSync(path.join(chunks, f), { force: true });
}

// The host CLI: an entry that only parses the command line, and one chunk per command's code,
// imported when that command is chosen (cli/commands/index.ts), so `airlock --help` loads none of it.
const host = buildWithChunks("airlock", {
  entryPoints: [{ in: "host-tools/src/main.ts", out: "airlock" }],
  plugins: [lazyStringWidth],
  // A string literal (JSON), so that it stays in the entry rather than a module of its own.
  define: { AIRLOCK_PREBUILT_HELP: JSON.stringify(JSON.stringify(await renderTopLevelHelp())) },
});
const firewall = buildWithChunks("firewall-vm", { entryPoints: [{ in: "firewall-vm/src/main.ts", out: "firewall-vm" }] });

await Promise.all([host, firewall, ...programs.map(({ entry, out }) => build({ ...common, entryPoints: [entry], outfile: out }))]);
console.error(`built dist/airlock.mjs (+ dist/airlock-chunks/), dist/firewall-vm.mjs (+ dist/firewall-vm-chunks/), ${programs.map((p) => p.out).join(", ")}`);
