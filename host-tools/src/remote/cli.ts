// The `--host` side of up, run, status, logs and down: options and handlers (the commands call
// these first and carry on locally when no --host is given).
import type { Argv } from "yargs";
import { AirlockError } from "../../../proto/src/errors.ts";
import { printResult, setExitCode } from "../cli/command.ts";
import type { PairState } from "../launch/pair-state.ts";
import { remoteRun, remoteSimple, remoteUp, statusAllHosts, type RemoteRunArgs, type RemoteUpArgs } from "./commands.ts";
import { loadInventory } from "./inventory.ts";

export const hostOptions = (y: Argv): Argv =>
  y
    .option("host", { type: "string", describe: "run on a remote host over SSH: ssh://user@host[:port] or a name from ~/.config/airlock/hosts.yaml" })
    .option("identity", { type: "string", describe: "--host: the SSH private key to log in with (default: the inventory's, ssh-agent, ~/.ssh/id_*)" })
    .option("known-hosts", { type: "string", describe: "--host: the known_hosts file that pins the host's key (default ~/.ssh/known_hosts)" });

interface HostArgs {
  host?: string;
  identity?: string;
  "known-hosts"?: string;
  json?: boolean;
}

const say = (s: string): void => void process.stderr.write(`airlock: ${s}\n`);
const opts = (a: HostArgs): { identity?: string; knownHosts?: string } => ({ ...(a.identity ? { identity: a.identity } : {}), ...(a["known-hosts"] ? { knownHosts: a["known-hosts"] } : {}) });

export async function hostUp(a: HostArgs & Omit<RemoteUpArgs, "host"> & { tee?: string; "print-plan"?: boolean }, describe: (s: PairState) => string): Promise<void> {
  if ((a.tee && a.tee !== "emulated") || a["print-plan"]) throw new AirlockError("REMOTE", "--host runs emulated pairs (--tee snp and --print-plan are for the local host)");
  const { state, host } = await remoteUp({ ...a, host: a.host!, ...opts(a) }, say);
  printResult(a.json ?? false, state, () => `${describe(state)}\n  on host ${host}`);
  if (state.status === "failed") setExitCode(1);
}

export async function hostRun(a: HostArgs & Omit<RemoteRunArgs, "host">): Promise<void> {
  setExitCode(await remoteRun({ ...a, host: a.host!, ...opts(a) }, say));
}

/** status/logs/down on the host: the remote airlock's output and exit status, as they are. */
export async function hostSimple(a: HostArgs, args: string[]): Promise<void> {
  const r = await remoteSimple(a.host!, opts(a), args, say);
  process.stdout.write(r.stdout);
  if (r.code !== 0) setExitCode(r.code);
}

/** `status --all-hosts`, or `status` with an inventory: this host's pairs, then each inventory host's. */
export async function statusEverywhere(a: HostArgs, local: PairState[], describe: (s: PairState) => string): Promise<boolean> {
  if (!(a as { "all-hosts"?: boolean })["all-hosts"] && loadInventory().size === 0) return false;
  const results = [{ host: "local", pairs: local }, ...(await statusAllHosts(opts(a)))];
  printResult(a.json ?? false, results, () =>
    results.map((r) => `== ${r.host}\n${"error" in r && r.error ? `  unreachable: ${r.error}` : r.pairs?.length ? r.pairs.map(describe).join("\n") : "  no VM pairs"}`).join("\n"),
  );
  return true;
}
