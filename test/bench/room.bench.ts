// Issue 5's run figure: examples/word-count (its awk script) end to end under the accelerator this
// host allows, broken down into boot, attestation, key release, inputs in, workload, outputs out,
// teardown (word-count-room.ts). AIRLOCK_BENCH_CORPUS_MIB sets the corpus size (default 4).
import { prepareRoom, runRoom } from "./word-count-room.ts";
import type { Reporter } from "./harness.ts";

const CORPUS_MIB = Number(process.env.AIRLOCK_BENCH_CORPUS_MIB ?? 4);

export default async function bench(report: Reporter): Promise<void> {
  const room = await prepareRoom({ name: "room", inputsMiB: [CORPUS_MIB], workload: "example" });
  try {
    const run = await runRoom(room);
    report.log(`corpus ${CORPUS_MIB} MiB`);
    report.figure("word-count run, end to end", run.totalSeconds, "s");
    for (const [label, seconds, note] of run.steps) report.figure(label, seconds, "s", note);
    report.figure("inputs in, throughput", CORPUS_MIB / run.inputsSeconds, "MiB/s");
  } finally {
    room.remove();
  }
}
