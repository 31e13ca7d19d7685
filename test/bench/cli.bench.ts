// How fast the `airlock` command starts: `airlock --help` and `airlock measure --help` against
// `node -e 0` (the same node starting and doing nothing), run alternately in the same process.
// The bundle is built by `npm run bench`; the command is started as a user starts it, through
// its launcher, host-tools/bin/airlock (which drops NODE_EXTRA_CA_CERTS: see there).
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { launcherEnv, sideBySideMs, type Reporter } from "./harness.ts";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const cli = path.join(repoRoot, "host-tools/bin/airlock");
const RUNS = 11;

// The yardstick starts node as the launcher does (launcherEnv): the two differ only by airlock's own work.
const env = launcherEnv();

function run(command: string, args: readonly string[]): void {
  const r = spawnSync(command, args, { env, stdio: ["ignore", "pipe", "pipe"], timeout: 30_000 });
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} exited ${r.status ?? r.signal}: ${r.stderr.toString()}`);
}

export default async function bench(report: Reporter): Promise<void> {
  const nodeOnly = (): void => run(process.execPath, ["-e", "0"]);
  for (const [label, args] of [["airlock --help", ["--help"]], ["airlock measure --help", ["measure", "--help"]]] as const) {
    const t = await sideBySideMs(nodeOnly, () => run(cli, args), RUNS, 2);
    report.figure(`${label} wall`, t.subject, "ms", `median of ${RUNS}, alternated with node -e 0`);
    report.figure(`node -e 0 wall (beside ${label})`, t.yardstick, "ms", `median of ${RUNS}`);
    report.ratio(`${label} / node -e 0`, t.subject / t.yardstick, "<= 1.5");
  }
}
