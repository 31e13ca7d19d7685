// One run of a word-count room through a real pair under the accelerator this host allows, timed
// step by step (shared by room.bench.ts and datapath.bench.ts). Host-side steps are timed on the
// host's clock from the supervisor's events; the steps inside the firewall (attestation, key
// release, each input's hops) come from the audit trail (one clock, the guest's).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chooseAccel } from "../../host-tools/src/launch/accel.ts";
import { roomIdentity } from "../../host-tools/src/launch/room-digest.ts";
import { grantInput } from "../../host-tools/src/kbs/grant.ts";
import { Pair } from "../../host-tools/src/launch/pair.ts";
import { loadManifest } from "../../proto/src/manifest/index.ts";
import { silentLogger } from "../../proto/src/log.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const MiB = 1024 * 1024;

/** The rooms' scripts: busybox wc -w counts words at the speed of reading them (awk's ~2 s/MiB under TCG does not). */
const WORKLOADS = {
  wc: `#!/bin/sh
set -eu
echo "words,$(cat /data/in/*.txt | wc -w)" > /data/out/counts/counts.csv
`,
  // wc, then the guest's own ChaCha20-Poly1305 speed (node:crypto, 32 MiB in records of 256 KiB,
  // the channel's, and of 64 KiB, age's): the cipher every input byte goes through three times on
  // its way in (age, then the channel at both ends), with a cipher context per record.
  datapath: `#!/bin/sh
set -eu
echo "words,$(cat /data/in/*.txt | wc -w)" > /data/out/counts/counts.csv
/bin/node -e 'const c = require("node:crypto"); const k = c.randomBytes(32);
for (const kib of [256, 64]) { const b = Buffer.alloc(kib * 1024); const t = process.hrtime.bigint();
  for (let i = 0; i < (32 * 1024) / kib; i++) { const e = c.createCipheriv("chacha20-poly1305", k, Buffer.alloc(12, i % 256), { authTagLength: 16 }); e.update(b); e.final(); e.getAuthTag(); }
  console.log("aead" + kib + "," + (32 / (Number(process.hrtime.bigint() - t) / 1e9)).toFixed(2)); }' >> /data/out/counts/counts.csv
`,
  // What arrived, to be compared with what was sent (test/room/large-input.test.ts).
  sha256: `#!/bin/sh
set -eu
sha256sum /data/in/*.txt > /data/out/counts/counts.csv
`,
};

export interface RoomSpec {
  name: string;
  /** Each input's size in MiB (inputs corpus, or corpus0, corpus1... when several). */
  inputsMiB: number[];
  /** "example": examples/word-count's awk script (one input); "wc": busybox wc -w over every input; "sha256": their digests. */
  workload: "example" | keyof typeof WORKLOADS | { files: Record<string, string> };
  timeoutSeconds?: number;
  resources?: { firewallMiB?: number; sandboxMiB?: number; firewallVcpus?: number };
}

/** What a prepared room needs to run again: its manifest, and its inputs' encrypted files. */
export interface PreparedRoom {
  dir: string;
  manifestPath: string;
  spec: RoomSpec;
  /** The encrypted input files, as the host reads them. */
  inputFiles: string[];
  /** Each input's plaintext SHA-256 (hex). */
  inputSha256: string[];
  /** The analyst's age identity file (opens the sealed output). */
  analystKey: string;
  remove(): void;
}

export interface InputHops {
  input: string;
  bytes: number;
  ms: number;
  hostMs: number;
  /** The agent's time opening the age payload (the sandbox decrypts since issue 12). */
  openMs: number;
  agentMs: number;
  writeMs: number;
  /** The enforcer's resident memory before the input and at its peak while it passed. */
  rssMiB: number;
  rssPeakMiB: number;
}

export interface RoomRun {
  /** Seconds of each step, in order: [label, seconds, note?]. */
  steps: [string, number, string?][];
  /** Host clock: sandbox ready → workload started. */
  inputsSeconds: number;
  totalSeconds: number;
  /** Where the run's outputs and audit trail are (until the room is removed). */
  outDir: string;
  /** Each input's hops inside the firewall (audit trail, input.served timing). */
  hops: InputHops[];
}

/** Writes the room, its corpus (encrypted with the age CLI) and the grant; nothing runs yet. */
export async function prepareRoom(spec: RoomSpec): Promise<PreparedRoom> {
  const dir = mkdtempSync(path.join(tmpdir(), `airlock-bench-${spec.name}-`));
  const roomDir = path.join(dir, "room");
  mkdirSync(path.join(roomDir, "data"), { recursive: true });
  mkdirSync(path.join(roomDir, "keys"), { recursive: true });
  mkdirSync(path.join(roomDir, "workload"), { recursive: true });
  if (spec.workload === "example") cpSync(path.join(ROOT, "examples/word-count/workload"), path.join(roomDir, "workload"), { recursive: true });
  else if (typeof spec.workload === "string") writeFileSync(path.join(roomDir, "workload/count.sh"), WORKLOADS[spec.workload]);
  else for (const [name, text] of Object.entries(spec.workload.files)) writeFileSync(path.join(roomDir, "workload", name), text);
  const keygen = (file: string): string => {
    execFileSync("age-keygen", ["-o", file], { stdio: "ignore" });
    return execFileSync("age-keygen", ["-y", file]).toString().trim();
  };
  writeFileSync(path.join(roomDir, "keys/analyst.pub"), `${keygen(path.join(dir, "analyst.key"))}\n`);
  const corpusRecipient = keygen(path.join(dir, "corpus.key"));
  const names = spec.inputsMiB.length === 1 ? ["corpus"] : spec.inputsMiB.map((_, i) => `corpus${i}`);
  const words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
  const line = `${words.join(" ")} ${words.slice(0, 4).join(" ")}\n`;
  const inputFiles: string[] = [];
  const inputSha256: string[] = [];
  for (const [i, name] of names.entries()) {
    const clear = path.join(dir, `${name}.txt`);
    const text = Buffer.from(line.repeat(Math.ceil((spec.inputsMiB[i]! * MiB) / line.length)));
    writeFileSync(clear, text);
    inputSha256.push(createHash("sha256").update(text).digest("hex"));
    const file = path.join(roomDir, `data/${name}.txt.age`);
    execFileSync("age", ["-r", corpusRecipient, "-o", file, clear]);
    rmSync(clear);
    inputFiles.push(file);
  }
  const res = spec.resources ?? {};
  const yaml = [
    "apiVersion: airlock/v1",
    `name: ${spec.name}`,
    "workload:",
    "  bundle: ./workload",
    '  command: ["/bin/sh", "/workload/count.sh"]',
    "  env: {LC_ALL: C}",
    `  timeoutSeconds: ${spec.timeoutSeconds ?? 300}`,
    "inputs:",
    ...names.flatMap((n) => [`  - name: ${n}`, `    path: ./data/${n}.txt.age`, `    mount: /data/in/${n === "corpus" ? "corpus" : n}.txt`, "    mode: trusted", "    scope: USER_PRIVATE"]),
    "outputs:",
    "  - name: counts",
    "    mount: /data/out/counts",
    "    mode: trusted",
    "    recipient: ./keys/analyst.pub",
    "    format: csv",
    "    maxBytes: 16777216",
    ...(res.firewallMiB || res.sandboxMiB || res.firewallVcpus ? [`resources: {firewall: {memoryMiB: ${res.firewallMiB ?? 1024}, vcpus: ${res.firewallVcpus ?? 1}}, sandbox: {memoryMiB: ${res.sandboxMiB ?? 1024}, vcpus: 1}}`] : []),
    "",
  ].join("\n");
  const manifestPath = path.join(roomDir, "room.yaml");
  writeFileSync(manifestPath, yaml);
  const identity = readFileSync(path.join(dir, "corpus.key"), "utf8");
  // The room's identity and grants in its own state (its broker's), where runRoom points AIRLOCK_STATE.
  await withState(dir, async () => {
    const manifest = loadManifest(manifestPath);
    const room = await roomIdentity(manifest);
    for (const n of names) await grantInput(manifest, n, identity, { digest: room.digest, firewallMeasurement: Buffer.from(room.pins.firewall, "hex") });
  });
  return { dir, manifestPath, spec, inputFiles, inputSha256, analystKey: path.join(dir, "analyst.key"), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Runs a prepared room once, in a state folder of its own; throws unless the run completed. */
export function runRoom(prepared: PreparedRoom): Promise<RoomRun> {
  return withState(prepared.dir, () => runIn(prepared));
}

/** Runs fn with AIRLOCK_STATE at `<dir>/state`, the room's own. */
async function withState<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const savedState = process.env.AIRLOCK_STATE;
  process.env.AIRLOCK_STATE = path.join(dir, "state");
  try {
    return await fn();
  } finally {
    if (savedState === undefined) delete process.env.AIRLOCK_STATE;
    else process.env.AIRLOCK_STATE = savedState;
  }
}

async function runIn(prepared: PreparedRoom): Promise<RoomRun> {
  const out = path.join(prepared.dir, "out");
  rmSync(out, { recursive: true, force: true });
  {
    const accel = await chooseAccel("auto", silentLogger);
    const at: Record<string, number> = {};
    const mark = (k: string): void => void (at[k] ??= performance.now());
    const pair = new Pair({ name: `bench-${prepared.spec.name}`, manifestPath: prepared.manifestPath, accel, debug: false, outDir: out, log: silentLogger, onProgress: (s) => (s.startsWith("resuming") ? mark("resume") : s.startsWith("building") ? mark("start") : undefined) });
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
      .map((l) => JSON.parse(l) as { kind: string; time: string; data?: Record<string, unknown> });
    const guest = (kind: string, last = false): number => Date.parse((last ? audit.findLast((r) => r.kind === kind) : audit.find((r) => r.kind === kind))!.time);
    const s = (a: number, b: number): number => (b - a) / 1000;
    const hops = audit
      .filter((r) => r.kind === "input.served" && r.data?.served === true)
      .map((r) => ({ input: String(r.data!.input), bytes: Number(r.data!.bytes), ...(r.data!.timing as Omit<InputHops, "input" | "bytes">) }));
    return {
      totalSeconds: s(t0, at.end!),
      outDir: out,
      inputsSeconds: s(at["sandbox-ready"]!, at["workload-started"]!),
      hops,
      steps: [
        ["  images + fabric + VMs started paused + QMP checks", s(t0, at.resume!)],
        ["  boot: resume → firewall ready (incl. the steps below)", s(at.resume!, at["firewall-ready"]!)],
        ["    attestation (report from the emulated PSP)", s(guest("manifest.checked"), guest("attestation")), "guest clock, audit trail"],
        ["    key release (inputs + room identity)", s(guest("attestation"), guest("key.released", true)), "guest clock, audit trail"],
        ["  sandbox agent connected", s(at["firewall-ready"]!, at["sandbox-ready"]!)],
        ["  inputs in (host → firewall → sandbox opens → tmpfs)", s(at["sandbox-ready"]!, at["workload-started"]!)],
        // The host hears of the workload's end only with its first output decision (issue 8).
        ["  workload (to the first output decision)", s(at["workload-started"]!, at.output!)],
        ["  outputs out (collect, seal and pad, to --out)", s(at.output!, at["outputs-complete"]!)],
        ["  teardown", s(at["outputs-complete"]!, at.end!)],
      ],
    };
  }
}
