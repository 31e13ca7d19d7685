// `npm run bench [-- FILTER...]`: runs every test/bench/*.bench.ts and prints comparable figures.
import { readdirSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";
import type { Bench, Reporter } from "./harness.ts";

const dir = path.dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith(".bench.ts"))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();

const rows: string[][] = [];
let failed = false;
for (const file of files) {
  const suite = file.replace(/\.bench\.ts$/, "");
  const reporter: Reporter = {
    figure: (name, value, unit, note) => {
      const row = [suite, name, formatValue(value), unit, note ?? ""];
      rows.push(row);
      console.log(row.join("  "));
    },
    ratio: (name, value, aim) => {
      const row = [suite, name, value.toFixed(3), "ratio", aim ? `aim ${aim}` : ""];
      rows.push(row);
      console.log(row.join("  "));
    },
    log: (message) => console.error(`[${suite}] ${message}`),
  };
  console.error(`== ${suite}`);
  try {
    const mod = (await import(pathToFileURL(path.join(dir, file)).href)) as { default: Bench };
    await mod.default(reporter);
  } catch (err) {
    failed = true;
    console.error(`[${suite}] failed: ${(err as Error).stack ?? String(err)}`);
  }
}

function formatValue(v: number): string {
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(4);
}

const widths = [0, 1, 2, 3, 4].map((i) => Math.max(...rows.map((r) => r[i]!.length), 0));
console.log("\nsuite".padEnd(widths[0]! + 3) + "figure".padEnd(widths[1]! + 2) + "value".padStart(widths[2]!) + "  unit");
for (const r of rows) {
  console.log(`${r[0]!.padEnd(widths[0]! + 2)}${r[1]!.padEnd(widths[1]! + 2)}${r[2]!.padStart(widths[2]!)}  ${r[3]!.padEnd(widths[3]!)}  ${r[4]}`);
}
process.exitCode = failed ? 1 : 0;
