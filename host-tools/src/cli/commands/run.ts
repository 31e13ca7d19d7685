import path from "node:path";
import type { Argv } from "yargs";
import { createRootLogger } from "../../../../proto/src/log.ts";
import { Pair } from "../../launch/pair.ts";
import { checkPairName, PairDir } from "../../launch/pair-state.ts";
import { mkdirSync, readFileSync } from "node:fs";
import { loadManifest } from "../../../../proto/src/manifest/index.ts";
import { setExitCode, type AirlockCommand } from "../command.ts";
import { AirlockError, RUN_EXIT } from "../../../../proto/src/errors.ts";
import { prepareOutDir } from "../out-dir.ts";
import type { RunSummary } from "../../launch/run-summary.ts";
import { handleSignals } from "../signals.ts";
import { FIRMWARE_OPTION, handlePlanAndTee } from "./pair-commands.ts";
import { hostOptions, hostRun } from "../../remote/cli.ts";

interface RunArgs {
  manifest: string;
  out: string;
  name?: string;
  accel: "auto" | "kvm" | "tcg";
  tee: "emulated" | "snp";
  debug: boolean;
  "print-plan"?: boolean;
  firmware?: string;
  force: boolean;
  keep: boolean;
}

export const runCommand: AirlockCommand = {
  builder: (y: Argv) =>
    hostOptions(y)
      .positional("manifest", { type: "string", demandOption: true, describe: "room manifest (YAML)" })
      .option("out", { type: "string", demandOption: true, describe: "folder for the outputs the room releases" })
      .option("name", { type: "string", describe: "pair name (default: the manifest's name)" })
      .option("accel", { choices: ["auto", "kvm", "tcg"] as const, default: "auto" as const })
      .option("tee", { choices: ["emulated", "snp"] as const, default: "emulated" as const })
      .option("debug", { type: "boolean", default: false, describe: "capture the sandbox console in the state folder (never done otherwise)" })
      .option("print-plan", { type: "boolean", default: false, describe: "print the QEMU command lines for --tee and stop" })
      .option("firmware", FIRMWARE_OPTION)
      .option("keep", { type: "boolean", default: false, describe: "keep the pair's state folder (state.json, logs) after a completed run too, for review" })
      .option("force", { type: "boolean", default: false, describe: "replace what an earlier run of this room left in --out (which must otherwise be new or empty)" }),
  handler: async (argv) => {
    const args = argv as unknown as RunArgs;
    if ((argv as { host?: string }).host) {
      if (args.tee !== "emulated" || args["print-plan"]) throw new AirlockError("USAGE", "--host runs emulated pairs (--tee snp and --print-plan are for the local host)");
      return hostRun(argv as never);
    }
    const manifest = loadManifest(args.manifest);
    if (manifest.workload.service) throw new AirlockError("USAGE", `${manifest.file} is a service room: it answers calls until it is stopped, it does not run to an end`, { hint: `airlock up ${args.manifest}, then airlock call ${manifest.name} SERVICE METHOD` });
    const name = checkPairName(args.name ?? manifest.name);
    if (await handlePlanAndTee(args, manifest, name)) return;
    const out = path.resolve(args.out);
    prepareOutDir(out, manifest.outputs.map((o) => o.name), args.force);
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
    // What is printed comes from the manifest, the firewall's rule-bound reasons and host-chosen
    // file names; JSON.stringify escapes anything else, so nothing can steer the terminal.
    pair.on("control", (ev) => {
      if (ev.type === "workload-exit") say(`workload ${describeExit(ev)}`);
      if (ev.type === "output") say(`output ${ev.output}: ${ev.decision} (${printable(ev.reason)})`);
      if (ev.type === "outputs-complete") {
        for (const f of ev.written) say(`  wrote ${printable(path.join(out, f.file))} (${f.bytes} bytes)`);
        for (const [o, n] of Object.entries(ev.refused)) say(`  output ${o}: ${n} file(s) refused by the host writer (name collision)`);
      }
    });
    const release = handleSignals((sig) => void pair.stop(`interrupted by ${sig}`));
    try {
      try {
        await pair.start();
      } catch (err) {
        // A refusal or failure while starting ends the pair too: reported below like any other end.
        if (!(err instanceof AirlockError)) throw err;
      }
      const state = await pair.waitEnd();
      const summary = readSummary(out);
      if (state.status !== "completed" || !summary?.completed) {
        say(`run did not complete (exit ${RUN_EXIT.incomplete}): ${state.code ? `[${state.code}] ` : ""}${printable(state.reason ?? "")}; nothing was released; see ${path.join(out, "summary.json")}`);
        setExitCode(RUN_EXIT.incomplete);
        return;
      }
      printViolations(summary, out, say);
      const w = state.workload;
      const code = !w ? RUN_EXIT.incomplete : w.succeeded ? 0 : (w.code ?? RUN_EXIT.workloadFailed);
      say(`done: workload ${w ? describeExit(w) : "status unknown"}; outputs in ${out}`);
      setExitCode(code);
    } finally {
      release();
      if (!["completed", "stopped", "failed"].includes(pair.current.status)) await pair.stop("airlock run finished");
      // Keep the pair's folder (logs, state) when something went wrong, for `airlock logs`.
      if (pair.current.status === "completed" && !args.keep) pair.dir.remove();
      else say(`logs kept in ${pair.dir.dir} (airlock logs ${name}; remove with airlock down ${name})`);
    }
  },
};

function pairLogPath(name: string): string {
  const dir = new PairDir(name);
  mkdirSync(dir.dir, { recursive: true, mode: 0o700 });
  return dir.supervisorLog;
}

function describeExit(w: { succeeded: boolean; code?: number }): string {
  if (w.code !== undefined) return `exited with status ${w.code}`;
  return w.succeeded ? "succeeded (exact status sealed in the console output)" : `failed (exit ${RUN_EXIT.workloadFailed}; the exact status is sealed in the console output)`;
}

/** Control characters and bidi overrides never reach the terminal. */
function printable(s: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/.test(s) ? JSON.stringify(s) : s;
}

function readSummary(out: string): RunSummary | undefined {
  try {
    return JSON.parse(readFileSync(path.join(out, "summary.json"), "utf8")) as RunSummary;
  } catch {
    return undefined;
  }
}

/** Lists the run's violations (capped counters from the signed audit trail). */
function printViolations(summary: RunSummary, out: string, say: (s: string) => void): void {
  const violations = summary.violations;
  say(`${violations.length} kind(s) of violation blocked and recorded in ${path.join(out, "audit.log")}`);
  for (const v of violations) say(`  blocked: ${JSON.stringify(v).slice(0, 300)}`);
}
