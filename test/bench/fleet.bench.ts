// Issue 13's figures for fleets. Pairs per hour on one host: N pairs of a small room started at
// once with the real CLI (`airlock up` × N), timed from the first start to all ready and to all
// down, against one pair alone (up, ready, down) as the yardstick, the two alternated in this
// process so both see the same machine load. Extrapolated as if batches ran back to back:
// pairs/hour = N × 3600 s ÷ the batch's wall time (one pair alone: 3600 s ÷ its wall time).
// AIRLOCK_BENCH_FLEET_PAIRS sets N (default 8); AIRLOCK_BENCH_QUICK runs one round instead of two.
//
// Upload throughput over SSH: the room's real image files (both images' vmlinuz + initrd.img)
// sent by airlock's uploader (upload.ts: connect, content-addressed into a fresh remote cache so
// every byte goes, sha256sum on arrival) against Debian's scp (same key, same sshd on loopback,
// same files, into a fresh remote folder), alternated over several rounds, medians.
//
// `up --host` against a local `up` of the same room (examples/hello): the CLI both ways, each
// timed from the command's start to the pair ready (the command's end), alternated; the remote
// host's cache already holds the images after the first (warm-up) round, as it would after a
// host's first pair. The remote `up --host`'s own progress lines are timestamped to say where the
// difference goes (connect + version check, the room's identity computed here, the upload's size
// checks, staging there, the remote `airlock up`).
//
// AIRLOCK_BENCH_FLEET_PARTS picks parts (comma list of upload, up, pairs; default all).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { roomIdentity } from "../../host-tools/src/launch/room-digest.ts";
import type { ImageInfo } from "../../host-tools/src/images/build.ts";
import { SshConnection } from "../../host-tools/src/remote/connection.ts";
import { resolveHost } from "../../host-tools/src/remote/inventory.ts";
import { BlobUploader, type Blob } from "../../host-tools/src/remote/upload.ts";
import { loadManifest } from "../../proto/src/manifest/index.ts";
import { airlock, airlockBin, killQemus, repoRoot, testStateDir } from "../helpers.ts";
import { startSshd, type TestSshd } from "../remote/sshd.ts";
import type { Bench, Reporter } from "./harness.ts";

const hello = path.join(repoRoot, "examples/hello/room.yaml");
const quick = Boolean(process.env.AIRLOCK_BENCH_QUICK);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const MiB = 2 ** 20;

const room = path.join(repoRoot, "test/fleet/rooms/small/room.yaml");
/** Per pair: 2 × 512 MiB guests + 2 × 128 MiB QEMU overhead, 2 vCPUs (fleet/capacity.ts). */
const PAIR_MIB = 1280;

async function batch(names: string[], env: NodeJS.ProcessEnv): Promise<{ readyMs: number; wallMs: number }> {
  const t0 = Date.now();
  const ups = await Promise.all(names.map((n) => airlock(["up", room, "--name", n, "--accel", "tcg"], env, 600_000)));
  const readyMs = Date.now() - t0;
  const downs = await Promise.all(names.map((n) => airlock(["down", n], env, 60_000)));
  const wallMs = Date.now() - t0;
  const bad = ups.findIndex((u) => u.code !== 0);
  if (bad >= 0 || downs.some((d) => d.code !== 0)) throw new Error(`${names[Math.max(bad, 0)]}: ${ups[Math.max(bad, 0)]!.stderr}${ups[Math.max(bad, 0)]!.stdout}`);
  return { readyMs, wallMs };
}

export async function pairsPerHour(report: Reporter): Promise<void> {
  const n = Number(process.env.AIRLOCK_BENCH_FLEET_PAIRS ?? 8);
  const rounds = process.env.AIRLOCK_BENCH_QUICK ? 1 : 2;
  const env = { AIRLOCK_STATE: testStateDir(), AIRLOCK_HOST_MEMORY_MIB: String(n * PAIR_MIB), AIRLOCK_HOST_VCPUS: String(n * 2) };
  const built = await airlock(["images", "build", "--manifest", room], env, 600_000);
  if (built.code !== 0) throw new Error(built.stderr);
  const alone: { readyMs: number; wallMs: number }[] = [];
  const many: { readyMs: number; wallMs: number }[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      report.log(`round ${r + 1}/${rounds}: one pair alone, then ${n} at once`);
      alone.push(await batch([`fleetb-one-${r}`], env));
      many.push(await batch(Array.from({ length: n }, (_, i) => `fleetb-${r}-${i}`), env));
    }
  } finally {
    killQemus("fleetb-");
  }
  const note = `median of ${rounds}, alternated, TCG`;
  const aloneWall = median(alone.map((x) => x.wallMs));
  const manyWall = median(many.map((x) => x.wallMs));
  report.figure("one pair: up to ready", median(alone.map((x) => x.readyMs)) / 1000, "s", note);
  report.figure("one pair: up, ready, down", aloneWall / 1000, "s", note);
  report.figure(`${n} pairs at once: all ready`, median(many.map((x) => x.readyMs)) / 1000, "s", note);
  report.figure(`${n} pairs at once: all ready and down`, manyWall / 1000, "s", note);
  const serial = 3600_000 / aloneWall;
  const concurrent = (n * 3600_000) / manyWall;
  report.figure("pairs per hour, one at a time", serial, "pairs/h", "3600 s ÷ one pair's up-ready-down");
  report.figure(`pairs per hour, ${n} at a time`, concurrent, "pairs/h", `${n} × 3600 s ÷ the batch's wall time`);
  report.ratio(`pairs per hour: ${n} at a time ÷ one at a time`, concurrent / serial);
}

/** Runs a command to its end, bounded; rejects on a non-zero exit. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 600_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(stderr);
      else reject(new Error(`${cmd} ${args.join(" ")}: exit ${code}: ${stderr}`));
    });
  });
}

/** The room's image files that dominate an upload: each image's kernel and initrd (the same kernel once, as planBlobs sends it). */
async function imageBlobs(): Promise<Blob[]> {
  const identity = await roomIdentity(loadManifest(hello));
  const all = (["firewall", "sandbox"] as const).flatMap((role) => {
    const img = identity.images[role];
    const files = (img.info as ImageInfo).files;
    return [files.kernel, files.initrd].map((d) => ({ file: path.join(img.dir, d.file), sha256: d.sha256, size: d.size }));
  });
  return all.filter((b, i) => all.findIndex((c) => c.sha256 === b.sha256) === i);
}

export async function uploadThroughput(report: Reporter, sshd: TestSshd): Promise<void> {
  const rounds = quick ? 3 : 5;
  const blobs = await imageBlobs();
  const bytes = blobs.reduce((n, b) => n + b.size, 0);
  const work = mkdtempSync(path.join(tmpdir(), "airlock-bench-upload-"));
  const host = resolveHost(`ssh://root@127.0.0.1:${sshd.port}`, { identity: sshd.userKey, knownHosts: sshd.knownHosts });
  const sshOpts = ["-F", "/dev/null", "-i", sshd.userKey, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", `UserKnownHostsFile=${sshd.knownHosts}`, "-o", "StrictHostKeyChecking=yes", "-P", String(sshd.port)];
  const noAgent = { SSH_AUTH_SOCK: "" };
  let n = 0;
  // airlock: connect (host key, key auth), a fresh remote cache (so nothing is "present"), each
  // file written over SFTP and hashed there before its rename; the hashes are the images' records.
  const subject = async (): Promise<void> => {
    const cache = path.join(work, `airlock-${n++}`);
    const conn = await SshConnection.connect(host);
    try {
      const up = await BlobUploader.open(conn, cache);
      try {
        if ((await up.uploadAll(blobs)).some((r) => r.status !== "uploaded")) throw new Error("a file was not uploaded whole");
      } finally {
        up.close();
      }
    } finally {
      conn.close();
    }
    rmSync(cache, { recursive: true, force: true });
  };
  // scp (OpenSSH 9: the SFTP protocol underneath) of the same files into a fresh folder.
  const yardstick = async (): Promise<void> => {
    const dest = mkdtempSync(path.join(work, "scp-"));
    await run("scp", ["-q", ...sshOpts, ...blobs.map((b) => b.file), `root@127.0.0.1:${dest}/`], noAgent);
    rmSync(dest, { recursive: true, force: true });
  };
  const cipher = /kex: client->server cipher: (\S+)/.exec(await run("scp", ["-v", ...sshOpts, blobs[0]!.file, `root@127.0.0.1:${work}/probe`], noAgent))?.[1];
  report.log(`upload: ${blobs.length} files, ${(bytes / MiB).toFixed(1)} MiB; scp negotiates ${cipher ?? "?"}`);
  const times: { airlock: number[]; scp: number[] } = { airlock: [], scp: [] };
  try {
    await yardstick();
    await subject();
    for (let r = 0; r < rounds; r++) {
      for (const which of r % 2 === 0 ? (["scp", "airlock"] as const) : (["airlock", "scp"] as const)) {
        const t0 = performance.now();
        await (which === "scp" ? yardstick() : subject());
        times[which].push(performance.now() - t0);
      }
      report.log(`upload round ${r + 1}/${rounds}: scp ${(times.scp[r]! / 1000).toFixed(2)} s, airlock ${(times.airlock[r]! / 1000).toFixed(2)} s`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const note = `${(bytes / MiB).toFixed(0)} MiB, ${blobs.length} files, loopback sshd, median of ${rounds}, alternated`;
  const mine = bytes / MiB / (median(times.airlock) / 1000);
  const theirs = bytes / MiB / (median(times.scp) / 1000);
  report.figure("image upload over SSH, airlock (verified)", mine, "MiB/s", note);
  report.figure("image upload over SSH, scp", theirs, "MiB/s", note);
  report.ratio("image upload: airlock ÷ scp throughput", mine / theirs, "≥ 0.8");
}

/** `airlock ...args` to its end, with when (ms from its start) each of its stderr lines came. */
function timedAirlock(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; ms: number; lines: { at: number; line: string }[]; stdout: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [airlockBin, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    const lines: { at: number; line: string }[] = [];
    let stdout = "";
    let pending = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => {
      const parts = (pending + d.toString()).split("\n");
      pending = parts.pop()!;
      for (const line of parts) lines.push({ at: performance.now() - t0, line });
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 600_000);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, ms: performance.now() - t0, lines, stdout });
    });
  });
}

/** The phases of `up --host`, from its progress lines (commands.ts), in ms. */
const PHASES = [
  ["CLI start", /connecting to /],
  ["connect + version check + remote info", /building or reusing the images locally/],
  ["room identity here (images reused, measured) + SFTP session", /uploading \d+ file/],
  ["upload (sizes checked; present files skipped)", /upload done/],
  ["staging there + broker relay", /starting pair /],
  ["the remote airlock up, to ready", null],
] as const;

export async function upHostVsLocal(report: Reporter, sshd: TestSshd): Promise<void> {
  const rounds = quick ? 1 : 3;
  const work = mkdtempSync(path.join(tmpdir(), "airlock-bench-uphost-"));
  const hosts = path.join(work, "hosts.yaml");
  writeFileSync(
    hosts,
    `hosts:\n  bench:\n    url: ssh://root@127.0.0.1:${sshd.port}\n    identity: ${sshd.userKey}\n    knownHosts: ${sshd.knownHosts}\n    airlock: ${repoRoot}\n    env: {AIRLOCK_STATE: ${path.join(work, "remote-state")}, AIRLOCK_CACHE: ${path.join(work, "remote-cache")}}\n`,
  );
  const env = { AIRLOCK_HOSTS: hosts, AIRLOCK_STATE: path.join(work, "local-state"), SSH_AUTH_SOCK: "" };
  const times: { local: number[]; remote: number[] } = { local: [], remote: [] };
  const phases: number[][] = [];
  let firstRemoteMs = 0;
  const one = async (where: "local" | "remote", name: string): Promise<number> => {
    const r = await timedAirlock(["up", hello, "--name", name, "--accel", "tcg", "--json", ...(where === "remote" ? ["--host", "bench"] : [])], env);
    const down = await airlock(["down", name, ...(where === "remote" ? ["--host", "bench"] : [])], env, 120_000);
    if (r.code !== 0 || down.code !== 0) throw new Error(`${where} up ${name}: exit ${r.code}: ${r.lines.map((l) => l.line).join("\n")}\n${down.stderr}`);
    if (where === "remote") {
      const marks = PHASES.map(([, re]) => (re ? r.lines.find((l) => re.test(l.line))?.at : r.ms));
      if (marks.some((m) => m === undefined)) throw new Error(`up --host: a progress line is missing:\n${r.lines.map((l) => l.line).join("\n")}`);
      phases.push(marks.map((m, i) => m! - (i ? marks[i - 1]! : 0)));
    }
    return r.ms;
  };
  try {
    // Warm-up: the remote host's first pair uploads the images; the local images are built once.
    report.log("up --host vs local up: warm-up (the remote cache is filled)");
    await one("local", "h4up-l-w");
    firstRemoteMs = await one("remote", "h4up-r-w");
    phases.length = 0;
    for (let r = 0; r < rounds; r++) {
      for (const where of r % 2 === 0 ? (["local", "remote"] as const) : (["remote", "local"] as const)) times[where].push(await one(where, `h4up-${where[0]}-${r}`));
      report.log(`up round ${r + 1}/${rounds}: local ${(times.local[r]! / 1000).toFixed(1)} s, --host ${(times.remote[r]! / 1000).toFixed(1)} s`);
    }
  } finally {
    killQemus("h4up-");
    rmSync(work, { recursive: true, force: true });
  }
  const note = `examples/hello, TCG, loopback sshd, median of ${rounds}, alternated`;
  const local = median(times.local);
  const remote = median(times.remote);
  report.figure("up --host: first pair on a host (uploads the images)", firstRemoteMs / 1000, "s", "one run");
  report.figure("local up to pair ready", local / 1000, "s", note);
  report.figure("up --host to pair ready (images already there)", remote / 1000, "s", note);
  report.ratio("up --host ÷ local up", remote / local);
  PHASES.forEach(([name], i) => report.figure(`  up --host: ${name}`, median(phases.map((p) => p[i]!)) / 1000, "s", `median of ${rounds}`));
}

const bench: Bench = async (report) => {
  const parts = (process.env.AIRLOCK_BENCH_FLEET_PARTS ?? "upload,up,pairs").split(",");
  // The machine may be shared: say how loaded it was (the ratios compare runs alternated within it).
  const load = (): string => loadavg().map((x) => x.toFixed(2)).join(" ");
  report.log(`load average at start: ${load()}`);
  if (parts.includes("upload") || parts.includes("up")) {
    const sshd = await startSshd();
    try {
      if (parts.includes("upload")) await uploadThroughput(report, sshd);
      if (parts.includes("up")) await upHostVsLocal(report, sshd);
    } finally {
      await sshd.stop();
    }
  }
  if (parts.includes("pairs")) await pairsPerHour(report);
  report.log(`load average at end: ${load()}`);
};
export default bench;
