import path from "node:path";
import type { Argv } from "yargs";
import { createRootLogger } from "../../../../proto/src/log.ts";
import { Pair } from "../../launch/pair.ts";
import { checkPairName, PairDir } from "../../launch/pair-state.ts";
import { mkdirSync, readFileSync } from "node:fs";
import { loadManifest } from "../../../../proto/src/manifest/index.ts";
import { setExitCode, type AirlockCommand } from "../command.ts";
import { handleSignals } from "../signals.ts";
import { handlePlanAndTee } from "./pair-commands.ts";

interface RunArgs {
  manifest: string;
  out: string;
  name?: string;
  accel: "auto" | "kvm" | "tcg";
  tee: "emulated" | "snp";
  debug: boolean;
  "print-plan"?: boolean;
}

export const runCommand: AirlockCommand = {
  command: "run <manifest>",
  describe: "the batch job: start the pair, run the workload to its end, write the released outputs to --out, stop the pair; exit status = the workload's",
  builder: (y: Argv) =>
    y
      .positional("manifest", { type: "string", demandOption: true, describe: "room manifest (YAML)" })
      .option("out", { type: "string", demandOption: true, describe: "folder for the outputs the room releases" })
      .option("name", { type: "string", describe: "pair name (default: the manifest's name)" })
      .option("accel", { choices: ["auto", "kvm", "tcg"] as const, default: "auto" as const })
      .option("tee", { choices: ["emulated", "snp"] as const, default: "emulated" as const })
      .option("debug", { type: "boolean", default: false, describe: "capture the sandbox console in the state folder (never done otherwise)" })
      .option("print-plan", { type: "boolean", default: false, describe: "print the QEMU command lines for --tee and stop" }),
  handler: async (argv) => {
    const args = argv as unknown as RunArgs;
    const manifest = loadManifest(args.manifest);
    const name = checkPairName(args.name ?? manifest.name);
    if (await handlePlanAndTee(args, manifest, name)) return;
    const out = path.resolve(args.out);
    const say = (s: string): void => void process.stderr.write(`airlock: ${s}\n`);
    const pair = new Pair({
      name,
      manifestPath: args.manifest,
      accel: args.accel,
      debug: args.debug,
      outDir: out,
      log: createRootLogger({ name: "airlock-run", destination: pairLogPath(name), level: process.env.AIRLOCK_LOG ?? "info" }),
      onProgress: say,
    });
    pair.on("control", (ev) => {
      if (ev.type === "workload-exit") say(`workload exited with status ${ev.code}`);
      if (ev.type === "output") say(`output ${ev.output}: ${ev.decision} (${ev.reason})`);
      if (ev.type === "output-file") say(`  wrote ${path.join(out, ev.output, ev.path)} (${ev.size} bytes)`);
    });
    const release = handleSignals((sig) => void pair.stop(`interrupted by ${sig}`));
    try {
      await pair.start();
      const state = await pair.waitEnd();
      if (state.status !== "completed") {
        say(`pair ${state.status}: ${state.reason ?? ""}`);
        setExitCode(state.workloadExitCode ?? 1);
        return;
      }
      printSummary(out, say);
      say(`done: workload status ${state.workloadExitCode}; outputs in ${out}`);
      setExitCode(state.workloadExitCode ?? 1);
    } finally {
      release();
      if (!["completed", "stopped", "failed"].includes(pair.current.status)) await pair.stop("airlock run finished");
      // Keep the pair's folder (logs, state) when something went wrong, for `airlock logs`.
      if (pair.current.status === "completed") pair.dir.remove();
      else say(`logs kept in ${pair.dir.dir} (airlock logs ${name}; remove with airlock down ${name})`);
    }
  },
};

function pairLogPath(name: string): string {
  const dir = new PairDir(name);
  mkdirSync(dir.dir, { recursive: true, mode: 0o700 });
  return dir.supervisorLog;
}

/** Lists the run's violations from summary.json (written from the signed audit trail). */
function printSummary(out: string, say: (s: string) => void): void {
  let summary: { violations?: unknown[] };
  try {
    summary = JSON.parse(readFileSync(path.join(out, "summary.json"), "utf8")) as { violations?: unknown[] };
  } catch {
    return;
  }
  const violations = summary.violations ?? [];
  say(`${violations.length} violation(s) blocked and recorded in ${path.join(out, "audit.log")}`);
  // JSON.stringify escapes control characters: workload-chosen text cannot drive the terminal.
  for (const v of violations.slice(0, 50)) say(`  blocked: ${JSON.stringify(v).slice(0, 300)}`);
  if (violations.length > 50) say(`  ... and ${violations.length - 50} more (see summary.json)`);
}
