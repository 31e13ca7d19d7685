// `airlock up | status | logs | down` and the hidden `supervise`: a pair started by `up` is kept
// by a detached supervisor process (launch/pair.ts), so any shell can inspect or stop it through
// the pair's state folder.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, openSync, readFileSync } from "node:fs";
import path from "node:path";
import type { Argv } from "yargs";
import { AirlockError } from "../../../../proto/src/errors.ts";
import { createRootLogger } from "../../../../proto/src/log.ts";
import { loadManifest, type Manifest } from "../../../../proto/src/manifest/index.ts";
import { checkSnpHost, emulatedPairArgv, snpRoom } from "../../launch/tee-plans.ts";
import { chosenSnpFirmware, loadSnpFirmware, SNP_FIRMWARE_ENV } from "../../launch/snp-firmware.ts";
import { roomIdentity } from "../../launch/room-digest.ts";
import { Pair } from "../../launch/pair.ts";
import { projectRoot } from "../../paths.ts";
import { checkPairName, isAlive, listPairNames, observedState, PairDir, type PairState } from "../../launch/pair-state.ts";
import { releasePair, reservePair } from "../../fleet/reservations.ts";
import { pairDemand } from "../../fleet/capacity.ts";
import { printResult, setExitCode, type AirlockCommand } from "../command.ts";
import { handleSignals } from "../signals.ts";
import { hostOptions, hostSimple, hostUp, statusEverywhere } from "../../remote/cli.ts";

const UP_TIMEOUT_MS = 300_000;
const DOWN_TIMEOUT_MS = 15_000;

interface UpArgs {
  manifest: string;
  name?: string;
  accel: "auto" | "kvm" | "tcg";
  tee: "emulated" | "snp";
  debug: boolean;
  json: boolean;
  "print-plan"?: boolean;
  firmware?: string;
  "api-port"?: number;
  "api-address"?: string;
  reservation?: string;
}

/** --firmware, shared by up and run. */
export const FIRMWARE_OPTION = { type: "string", describe: `--tee snp: the AmdSev OVMF to boot and measure (default: $${SNP_FIRMWARE_ENV})` } as const;

const pairOptions = (y: Argv): Argv =>
  y
    .positional("manifest", { type: "string", demandOption: true, describe: "room manifest (YAML)" })
    .option("name", { type: "string", describe: "pair name (default: the manifest's name)" })
    .option("accel", { choices: ["auto", "kvm", "tcg"] as const, default: "auto" as const, describe: "auto uses KVM only if a bounded probe boot succeeds" })
    .option("tee", { choices: ["emulated", "snp"] as const, default: "emulated" as const })
    .option("debug", { type: "boolean", default: false, describe: "capture the sandbox console (never done otherwise)" })
    .option("print-plan", { type: "boolean", default: false, describe: "print the QEMU command lines for --tee and stop" })
    .option("firmware", FIRMWARE_OPTION)
    .option("api-port", { type: "number", describe: "service rooms: the host port callers reach the API on (default: a free port)" })
    .option("api-address", { type: "string", describe: "service rooms: the host address the API listens on (default 127.0.0.1)" });

/**
 * --print-plan prints the QEMU command lines the pair gets under the chosen TEE and stops (for
 * --tee snp with the firmware and each VM's expected launch measurement); --tee snp needs the
 * firmware the user chose and is refused on a host without an SNP-capable QEMU or SEV-SNP device.
 * Returns true when the command should stop here.
 */
export async function handlePlanAndTee(args: { tee: "emulated" | "snp"; accel: "auto" | "kvm" | "tcg"; "print-plan"?: boolean; firmware?: string }, manifest: Manifest, name: string): Promise<boolean> {
  if (args.firmware !== undefined && args.tee !== "snp") throw new AirlockError("USAGE", "--firmware is for --tee snp only (emulated launches boot the kernel directly)");
  if (args.tee === "emulated" && !args["print-plan"]) return false;
  const dir = new PairDir(name);
  if (args.tee === "snp") {
    const chosen = chosenSnpFirmware(args.firmware);
    if (chosen === undefined) throw new AirlockError("USAGE", `--tee snp needs the firmware to boot and measure: pass --firmware PATH or set ${SNP_FIRMWARE_ENV}`, { hint: "an OVMF built from edk2's OvmfPkg/AmdSev/AmdSevX64.dsc" });
    const firmware = loadSnpFirmware(chosen);
    const { plans, measurements } = await snpRoom(manifest, dir, firmware);
    if (args["print-plan"]) {
      process.stdout.write(`# firmware ${firmware.path} (sha256 ${firmware.sha256})\n`);
      for (const [role, plan] of Object.entries(plans)) {
        process.stdout.write(`# ${role} (SNP, needs QEMU ≥ ${plan.requires.minQemu}), expected launch measurement ${measurements[role as keyof typeof measurements].toString("hex")}\n${[plan.binary, ...plan.argv].map(shellQuote).join(" ")}\n`);
      }
      return true;
    }
    await checkSnpHost(plans);
  }
  const images = (await roomIdentity(manifest)).images;
  const argv = emulatedPairArgv(manifest, images, dir, args.accel === "kvm" ? "kvm" : "tcg");
  for (const [role, a] of Object.entries(argv)) process.stdout.write(`# ${role} (emulated TEE)\n${a.map(shellQuote).join(" ")}\n`);
  return true;
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_/.,=:+@%-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

export function describeState(s: PairState): string {
  const vms = (["firewall", "sandbox"] as const).map((r) => `  ${r.padEnd(8)} ${s.vms[r].status}${s.vms[r].pid ? ` (pid ${s.vms[r].pid})` : ""}${s.vms[r].ended ? `, ${s.vms[r].ended}` : ""}`);
  return [
    `${s.name}: ${s.status}${s.reason ? ` — ${s.reason}` : ""}`,
    `  tee ${s.tee}, accel ${s.accel ?? "?"}, manifest ${s.manifest}`,
    `  host_data (manifest digest) ${s.manifestDigest}`,
    ...(s.measurements ? [`  measurement firewall ${s.measurements.firewall}`, `  measurement sandbox  ${s.measurements.sandbox}`] : []),
    ...(s.readyMs !== undefined ? [`  ready after ${(s.readyMs / 1000).toFixed(1)} s`] : []),
    ...(s.service
      ? [`  service ${s.service.status} at ${s.service.tls ? "https" : "http"}://${s.service.endpoint}${s.service.apiTlsSpkiSha256 ? ` (TLS key sha256 ${s.service.apiTlsSpkiSha256})` : ""}`, `  calls served ${s.service.served}, refused ${s.service.refused}; sandbox resets ${s.service.resets}`]
      : []),
    ...(s.workload ? [`  workload ${s.workload.succeeded ? "succeeded" : "failed"}${s.workload.code !== undefined ? ` (exit status ${s.workload.code})` : " (exact status sealed: the sandbox read data above DOMAIN_OWNED)"}`] : []),
    ...vms,
  ].join("\n");
}

export const upCommand: AirlockCommand = {
  builder: (y: Argv) => hostOptions(pairOptions(y).option("json", { type: "boolean", default: false })),
  handler: async (argv) => {
    const args = argv as unknown as UpArgs;
    if ((argv as { host?: string }).host) return hostUp(argv as never, describeState);
    const manifest = loadManifest(args.manifest);
    const name = checkPairName(args.name ?? manifest.name);
    if (await handlePlanAndTee(args, manifest, name)) return;
    const dir = new PairDir(name);
    // The name and the host's room are claimed here (refused at once if taken), then handed to the supervisor.
    const claim = await reservePair({ name, demand: pairDemand(manifest) });
    dir.remove();
    mkdirSync(dir.dir, { recursive: true, mode: 0o700 });
    const out = openSync(dir.file("supervisor.out"), "w", 0o600);
    const bin = path.join(projectRoot(), "host-tools/bin/airlock.mjs");
    const api = [...(args["api-port"] !== undefined ? ["--api-port", String(args["api-port"])] : []), ...(args["api-address"] ? ["--api-address", args["api-address"]] : [])];
    const child = spawn(process.execPath, [bin, "supervise", manifest.file, "--name", name, "--accel", args.accel, ...(args.debug ? ["--debug"] : []), ...api, "--reservation", claim.token], { detached: true, stdio: ["ignore", out, out] });
    child.unref();
    const say = (s: string): void => void process.stderr.write(`airlock: ${s}\n`);
    say(`pair ${name}: supervisor pid ${child.pid}; starting (progress in ${dir.supervisorLog})`);
    const release = handleSignals(() => child.pid && process.kill(child.pid, "SIGTERM"));
    try {
      const deadline = Date.now() + UP_TIMEOUT_MS;
      let last = "";
      for (;;) {
        const s = observedState(dir);
        if (s && s.status !== last) {
          last = s.status;
          if (s.status !== "starting") break;
        }
        if (!isAlive(child.pid) && !s) throw new AirlockError("LAUNCH", `the supervisor exited before writing any state; see ${dir.file("supervisor.out")}`);
        if (Date.now() > deadline) {
          if (child.pid) process.kill(child.pid, "SIGTERM");
          throw new AirlockError("TIMEOUT", `pair ${name} was not ready within ${UP_TIMEOUT_MS / 1000} s; stopping it`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      release();
    }
    const s = observedState(dir)!;
    printResult(args.json, s, () => describeState(s));
    if (s.status === "failed") setExitCode(1);
  },
};

export const superviseCommand: AirlockCommand = {
  builder: (y: Argv) => pairOptions(y).option("reservation", { type: "string", hidden: true }),
  handler: async (argv) => {
    const args = argv as unknown as UpArgs;
    const name = checkPairName(args.name ?? loadManifest(args.manifest).name);
    const dir = new PairDir(name);
    const api = { ...(args["api-port"] !== undefined ? { port: args["api-port"] } : {}), ...(args["api-address"] ? { address: args["api-address"] } : {}) };
    const pair = new Pair({ name, manifestPath: args.manifest, accel: args.accel, debug: args.debug, hold: true, api, ...(args.reservation !== undefined && { reservationToken: args.reservation }), log: createRootLogger({ name: "supervisor", destination: dir.supervisorLog }) });
    const release = handleSignals((sig) => void pair.stop(`stopped by ${sig} (airlock down)`));
    try {
      await pair.start();
      await pair.waitEnd();
    } catch {
      await pair.waitEnd();
    } finally {
      release();
    }
  },
};

export const statusCommand: AirlockCommand = {
  builder: (y: Argv) =>
    hostOptions(y.positional("name", { type: "string" }).option("json", { type: "boolean", default: false })).option("all-hosts", { type: "boolean", default: false, describe: "list the pairs of this host and of every host in the inventory (the default without a name when an inventory exists)" }),
  handler: async (argv) => {
    const args = argv as unknown as { name?: string; json: boolean; host?: string };
    if (args.host) return hostSimple(args, ["status", ...(args.name ? [args.name] : []), ...(args.json ? ["--json"] : [])]);
    const names = args.name ? [checkPairName(args.name)] : listPairNames();
    const states = names.map((n) => observedState(new PairDir(n))).filter((s): s is PairState => s !== undefined);
    if (args.name && states.length === 0) throw new AirlockError("PAIR_NOT_FOUND", `no pair named ${args.name}`, { hint: "`airlock status` lists the pairs" });
    if (!args.name && (await statusEverywhere(args, states, describeState))) return;
    printResult(args.json, args.name ? states[0] : states, () => (states.length ? states.map(describeState).join("\n") : "no VM pairs"));
  },
};

export const logsCommand: AirlockCommand = {
  builder: (y: Argv) =>
    hostOptions(y.positional("name", { type: "string", demandOption: true }).option("vm", { choices: ["firewall", "sandbox", "supervisor"] as const, default: "firewall" as const })),
  handler: async (argv) => {
    const args = argv as unknown as { name: string; vm: "firewall" | "sandbox" | "supervisor"; host?: string };
    if (args.host) return hostSimple(args, ["logs", checkPairName(args.name), "--vm", args.vm]);
    const dir = new PairDir(checkPairName(args.name));
    if (!dir.exists) throw new AirlockError("PAIR_NOT_FOUND", `no pair named ${args.name}`, { hint: "`airlock status` lists the pairs" });
    const file = args.vm === "supervisor" ? dir.supervisorLog : dir.consoleLog(args.vm);
    if (!existsSync(file)) {
      if (args.vm === "sandbox") throw new AirlockError("USAGE", `the sandbox console of ${args.name} is not captured`, { hint: "the sandbox's console is never read on the host unless the pair was started with --debug" });
      throw new AirlockError("PAIR_NOT_FOUND", `no ${args.vm} log for ${args.name} yet`);
    }
    process.stdout.write(readFileSync(file));
  },
};

export const downCommand: AirlockCommand = {
  builder: (y: Argv) => hostOptions(y.positional("name", { type: "string", demandOption: true })),
  handler: async (argv) => {
    if ((argv as { host?: string }).host) return hostSimple(argv as never, ["down", checkPairName((argv as unknown as { name: string }).name)]);
    const name = checkPairName((argv as unknown as { name: string }).name);
    const dir = new PairDir(name);
    if (!dir.exists) {
      process.stderr.write(`airlock: no pair named ${name}; nothing to stop\n`);
      return;
    }
    const pid = dir.supervisorPid();
    if (pid && isAlive(pid)) {
      process.kill(pid, "SIGTERM");
      const deadline = Date.now() + DOWN_TIMEOUT_MS;
      while (isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      // A supervisor that does not stop is killed; its QEMUs die with it (setpriv --pdeathsig).
      if (isAlive(pid)) process.kill(pid, "SIGKILL");
    }
    const s = dir.read();
    for (const role of ["firewall", "sandbox"] as const) {
      const vmPid = s?.vms[role].pid;
      if (vmPid && isAlive(vmPid) && readCmdline(vmPid).includes(`airlock-${name}-${role}`)) process.kill(vmPid, "SIGKILL");
    }
    dir.remove();
    await releasePair(name);
    process.stderr.write(`airlock: pair ${name} is down\n`);
  },
};

function readCmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
}
