// The sandbox agent: connects to the firewall over vsock (its only channel), opens the attested,
// encrypted channel over it (its emulated PSP relayed by the firewall), places the inputs it is
// sent (read-only, tmpfs), receives what to run, runs the workload, ships its outputs and exit
// status, and ends (init then powers the VM off). The run is in agent/ (run.ts); this file wires it.
import { readFileSync, writeFileSync } from "node:fs";
import { runAgent } from "./agent/run.ts";
import { reportProvider } from "./agent/tee.ts";

/** Out of the OOM killer's reach (init sets it already; this checks, and sets it if not). */
function protectFromOom(): void {
  const file = "/proc/self/oom_score_adj";
  try {
    if (readFileSync(file, "utf8").trim() !== "-1000") writeFileSync(file, "-1000");
  } catch (err) {
    console.error(`airlock-agent: cannot protect the agent from the OOM killer: ${(err as Error).message}`);
  }
}

async function main(): Promise<number> {
  protectFromOom();
  // The launch names the TEE (airlock.tee= on the measured kernel command line): configfs-tsm on
  // SEV-SNP, else the sandbox's emulated PSP, relayed by the firewall (it reaches nothing else).
  return runAgent(reportProvider());
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    // The sandbox console is not read by the host; this is for --debug only.
    console.error(`airlock-agent: ${err.message}`);
    process.exit(1);
  },
);
