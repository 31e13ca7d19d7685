// Issue 5's run figure: examples/word-count end to end under the accelerator this host allows,
// broken down into boot, attestation, key release, inputs in, workload, outputs out, teardown.
// Host-side steps are timed on the host's clock from the supervisor's events; the steps inside the
// firewall (attestation, key release) from the audit trail's own timestamps (one clock, the guest's).
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chooseAccel } from "../../host-tools/src/launch/accel.ts";
import { roomIdentity } from "../../host-tools/src/launch/room-digest.ts";
import { grantInput } from "../../host-tools/src/kbs/grant.ts";
import { Pair } from "../../host-tools/src/launch/pair.ts";
import { loadManifest } from "../../proto/src/manifest/index.ts";
import { silentLogger } from "../../proto/src/log.ts";
import type { Reporter } from "./harness.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const CORPUS_MIB = Number(process.env.AIRLOCK_BENCH_CORPUS_MIB ?? 4);

export default async function bench(report: Reporter): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), "airlock-bench-room-"));
  const state = path.join(dir, "state");
  const savedState = process.env.AIRLOCK_STATE;
  process.env.AIRLOCK_STATE = state;
  try {
    cpSync(path.join(ROOT, "examples/word-count"), path.join(dir, "room"), { recursive: true });
    execFileSync("age-keygen", ["-o", path.join(dir, "analyst.key")], { stdio: "ignore" });
    writeFileSync(path.join(dir, "room/keys/analyst.pub"), execFileSync("age-keygen", ["-y", path.join(dir, "analyst.key")]));
    execFileSync("age-keygen", ["-o", path.join(dir, "corpus.key")], { stdio: "ignore" });
    const words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
    const line = `${words.join(" ")} ${words.slice(0, 4).join(" ")}\n`;
    writeFileSync(path.join(dir, "corpus.txt"), line.repeat(Math.ceil((CORPUS_MIB * 1024 * 1024) / line.length)));
    mkdirSync(path.join(dir, "room/data"), { recursive: true });
    execFileSync("age", ["-r", execFileSync("age-keygen", ["-y", path.join(dir, "corpus.key")]).toString().trim(), "-o", path.join(dir, "room/data/corpus.txt.age"), path.join(dir, "corpus.txt")]);
    const manifestPath = path.join(dir, "room/room.yaml");
    const manifest = loadManifest(manifestPath);
    const room = await roomIdentity(manifest);
    await grantInput(manifest, "corpus", readFileSync(path.join(dir, "corpus.key"), "utf8"), { digest: room.digest, firewallMeasurement: Buffer.from(room.pins.firewall, "hex") });

    const accel = await chooseAccel("auto", silentLogger);
    const at: Record<string, number> = {};
    const mark = (k: string): void => void (at[k] ??= performance.now());
    const out = path.join(dir, "out");
    const pair = new Pair({ name: "bench-room", manifestPath, accel, debug: false, outDir: out, log: silentLogger, onProgress: (s) => (s.startsWith("resuming") ? mark("resume") : s.startsWith("building") ? mark("start") : undefined) });
    pair.on("control", (ev) => mark(ev.type));
    const t0 = performance.now();
    await pair.start();
    const end = await pair.waitEnd();
    mark("end");
    if (end.status !== "completed") throw new Error(`the run did not complete: ${end.reason}`);
    pair.dir.remove();

    const audit = readFileSync(path.join(out, "audit.log"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { kind: string; time: string });
    const guest = (kind: string, last = false): number => Date.parse((last ? audit.findLast((r) => r.kind === kind) : audit.find((r) => r.kind === kind))!.time);
    const s = (a: number, b: number): number => (b - a) / 1000;
    report.log(`accelerator ${accel}; corpus ${CORPUS_MIB} MiB`);
    report.figure("word-count run, end to end", s(t0, at.end!), "s");
    report.figure("  images + fabric + VMs started paused + QMP checks", s(t0, at.resume!), "s");
    report.figure("  boot: resume → firewall ready (incl. the steps below)", s(at.resume!, at["firewall-ready"]!), "s");
    report.figure("    attestation (report from the emulated PSP)", s(guest("manifest.checked"), guest("attestation")), "s", "guest clock, audit trail");
    report.figure("    key release (input + room identity)", s(guest("attestation"), guest("key.released", true)), "s", "guest clock, audit trail");
    report.figure("  sandbox agent connected", s(at["firewall-ready"]!, at["sandbox-ready"]!), "s");
    report.figure("  inputs in (host → firewall decrypt → sandbox tmpfs)", s(at["sandbox-ready"]!, at["workload-started"]!), "s");
    // The host hears of the workload's end only with its first output decision (issue 8).
    report.figure("  workload (to the first output decision)", s(at["workload-started"]!, at.output!), "s");
    report.figure("  outputs out (collect, seal and pad, to --out)", s(at.output!, at["outputs-complete"]!), "s");
    report.figure("  teardown", s(at["outputs-complete"]!, at.end!), "s");
    report.figure("inputs in, throughput", CORPUS_MIB / s(at["sandbox-ready"]!, at["workload-started"]!), "MiB/s");
  } finally {
    if (savedState === undefined) delete process.env.AIRLOCK_STATE;
    else process.env.AIRLOCK_STATE = savedState;
    rmSync(dir, { recursive: true, force: true });
  }
}
