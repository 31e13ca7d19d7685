// Runs the workload unmodified: as the unprivileged `workload` user, with the manifest's command
// and environment only, its output folders created and owned by that user. Its stdout and stderr
// are data (the console output), never the VM's console. The run ends when its main process
// ends (or at its time limit): then every process of the workload user is killed, and only once
// none is left may its outputs be read (outputs.ts), so nothing it started can still write,
// signal or time anything after the fact.
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, chownSync, closeSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { constants as osConstants } from "node:os";
import path from "node:path";

export const WORKLOAD_UID = 1000;
export const WORKLOAD_GID = 1000;
/** How long the agent keeps killing the workload user's processes before it gives up (fail closed). */
export const SWEEP_BOUND_MS = 5_000;
/**
 * Processes and threads the workload user may have at once (RLIMIT_NPROC): a fork bomb stops
 * there, leaving the VM's process table room for the agent and its sweep.
 */
export const WORKLOAD_MAX_TASKS = 4096;

export interface WorkloadResult {
  code: number;
  /** stdout and stderr together, at most consoleMaxBytes (empty when the console is not captured). */
  console: Buffer;
  consoleTruncated: boolean;
  /** Processes of the workload user still alive after the sweep: outputs must not be read if any. */
  survivors: number;
}

export interface WorkloadSpec {
  command: string[];
  env: Record<string, string>;
  outputMounts: string[];
  timeoutSeconds: number;
  /** Bound on the captured stdout+stderr; null: not captured at all (they go to /dev/null). */
  consoleMaxBytes: number | null;
  /** Run as this uid/gid (default the workload user); tests on a host run as themselves. */
  uid?: number;
  gid?: number;
  cwd?: string;
  /** RLIMIT_NPROC of the workload user (default WORKLOAD_MAX_TASKS); tests use a small one. */
  maxTasks?: number;
}

export function prepareOutputs(mounts: string[], uid: number, gid: number): void {
  for (const m of mounts) {
    mkdirSync(m, { recursive: true, mode: 0o755 });
    if (process.getuid?.() === 0) chownSync(m, uid, gid);
  }
}

/** Shell convention: death by signal N is status 128+N. */
function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0);
}

/**
 * Processes whose real, effective or saved uid is `uid` (from /proc/<pid>/status). `live` leaves
 * out zombies, unless a zombie leader still has other threads running (a way to hide from ps);
 * `running` leaves out the stopped ones too.
 */
export function processesOf(uid: number): { all: number[]; live: number[]; running: number[] } {
  const all: number[] = [];
  const live: number[] = [];
  const running: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let status: string;
    try {
      status = readFileSync(`/proc/${name}/status`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    const uids = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status);
    if (!uids || !uids.slice(1, 4).some((u) => Number(u) === uid)) continue;
    const pid = Number(name);
    const state = /^State:\s+(\S)/m.exec(status)?.[1] ?? "?";
    all.push(pid);
    let isLive = state !== "Z" && state !== "X";
    if (!isLive) {
      try {
        isLive = readdirSync(`/proc/${name}/task`).length > 1;
      } catch {
        // gone meanwhile
      }
    }
    if (isLive) live.push(pid);
    if (isLive && state !== "T" && state !== "t") running.push(pid);
  }
  return { all, live, running };
}

function signal(pids: number[], sig: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
    } catch {
      // gone meanwhile
    }
  }
}

/**
 * Kills every process of `uid` and returns how many are still alive after `boundMs` (0: none).
 * 1. Freeze: SIGSTOP whatever of the uid still runs, scan after scan, until nothing runs (or half
 *    the bound has passed). A stopped process cannot fork; killing first would free process slots
 *    that a fork bomb refills as fast as a scan empties them.
 * 2. Kill: SIGKILL every process of the uid, scan after scan, until none is left. The first round
 *    also runs `kill -9 -1` AS the uid: the kernel signals all that uid may signal in one pass
 *    under the lock fork takes, so nothing forked meanwhile escapes (best effort: it cannot start
 *    when the uid is at its process limit, and then the scans do the work).
 * The workload's process limit (RLIMIT_NPROC, runWorkload) keeps the slots for the agent's own.
 */
export async function killAllOf(uid: number, gid: number, boundMs = SWEEP_BOUND_MS): Promise<number> {
  if (uid === 0 || uid === process.getuid?.()) throw new Error(`refusing to kill every process of uid ${uid} (ours or root's)`);
  const start = Date.now();
  for (;;) {
    const { running } = processesOf(uid);
    if (running.length === 0 || Date.now() - start > boundMs / 2) break;
    signal(running, "SIGSTOP");
    await new Promise((r) => setImmediate(r));
  }
  for (let round = 0; ; round++) {
    if (round % 10 === 0) spawnSync("/bin/sh", ["-c", "kill -9 -1"], { uid, gid, stdio: "ignore", timeout: 2_000, env: {} });
    const { all, live } = processesOf(uid);
    signal(all, "SIGKILL");
    if (live.length === 0) return 0;
    if (Date.now() - start > boundMs) return live.length;
    await new Promise((r) => setTimeout(r, round < 5 ? 1 : 10));
  }
}

/**
 * Runs fn (a spawn) with our OOM score at its most killable, so the child inherits it: the agent
 * runs at -1000 (init), and a workload left at -1000 could never be chosen by the OOM killer. Set
 * by root, the value is also the child's floor: the workload cannot lower it again.
 */
function spawnOomFirst<T>(fn: () => T): T {
  const file = "/proc/self/oom_score_adj";
  let previous: string | undefined;
  if (process.getuid?.() === 0) {
    try {
      previous = readFileSync(file, "utf8").trim();
      writeFileSync(file, "1000");
    } catch {
      previous = undefined;
    }
  }
  try {
    return fn();
  } finally {
    try {
      if (previous !== undefined) writeFileSync(file, previous);
    } catch {
      // stays at 1000: the agent is then killable, nothing else changes
    }
  }
}

export function runWorkload(spec: WorkloadSpec): Promise<WorkloadResult> {
  const uid = spec.uid ?? WORKLOAD_UID;
  const gid = spec.gid ?? WORKLOAD_GID;
  const root = process.getuid?.() === 0;
  // Killing "every process of the uid" is only for a uid that is neither ours nor root's.
  const sweep = root && uid !== 0;
  prepareOutputs(spec.outputMounts, uid, gid);
  const bound = spec.consoleMaxBytes;
  const chunks: Buffer[] = [];
  let size = 0;
  let truncated = false;
  const take = (d: Buffer): void => {
    if (bound === null) return;
    if (size + d.length > bound) {
      truncated = true;
      d = d.subarray(0, Math.max(0, bound - size));
    }
    size += d.length;
    if (d.length) chunks.push(d);
  };
  // With the sweep, a shell sets the user's process limit (never above the hard limit the kernel
  // gave: an unprivileged process cannot raise it), then execs the command as given (busybox spells
  // the option -u, dash -p). Its own process group: without the sweep (a test as an ordinary user)
  // the group is what is killed.
  const maxTasks = Math.floor(spec.maxTasks ?? WORKLOAD_MAX_TASKS);
  const argv = sweep ? ["/bin/sh", "-c", `n=${maxTasks}; h=$(ulimit -H -u 2>/dev/null || ulimit -H -p); [ "$h" != unlimited ] && [ "$h" -lt "$n" ] && n=$h; ulimit -u "$n" 2>/dev/null || ulimit -p "$n" || exit 126; exec "$@"`, "airlock-workload", ...spec.command] : spec.command;
  const child = spawnOomFirst(() =>
    spawn(argv[0]!, argv.slice(1), {
      env: { PATH: "/bin:/usr/bin", HOME: "/tmp", ...spec.env },
      cwd: spec.cwd ?? "/workload",
      stdio: ["ignore", bound === null ? "ignore" : "pipe", bound === null ? "ignore" : "pipe"],
      detached: true,
      ...(root ? { uid, gid } : {}),
    }),
  );
  const killGroup = (): void => {
    try {
      if (child.pid) process.kill(-child.pid, "SIGKILL");
    } catch {
      // the group is gone already
    }
  };
  const killAll = async (): Promise<number> => {
    killGroup();
    return sweep ? killAllOf(uid, gid) : 0;
  };
  child.stdout?.on("data", take);
  child.stderr?.on("data", take);
  const pipesClosed = Promise.all(
    [child.stdout, child.stderr].map((s) => (s ? new Promise<void>((resolve) => (s.once("close", resolve), s.once("error", () => resolve()))) : undefined)),
  );
  const ended = new Promise<number>((resolve) => {
    let started = false;
    child.on("spawn", () => (started = true));
    child.on("error", (err) => {
      if (started) return; // a later error (a failed kill) changes nothing
      take(Buffer.from(`airlock: cannot start the workload: ${err.message}\n`));
      resolve(127);
    });
    child.on("exit", (code, signal) => resolve(exitStatus(code, signal)));
  });
  // At the time limit; the sweep after the exit below checks none is left.
  const timer = setTimeout(() => void killAll().catch(() => undefined), spec.timeoutSeconds * 1000);
  return ended.then(async (code) => {
    clearTimeout(timer);
    // Whatever it left running goes with it, before anything of it is read.
    const survivors = await killAll();
    // Its output pipes close once the last holder is dead; bounded all the same.
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([pipesClosed, new Promise((r) => (grace = setTimeout(r, 2_000)))]);
    clearTimeout(grace);
    child.stdout?.destroy();
    child.stderr?.destroy();
    return { code, console: Buffer.concat(chunks), consoleTruncated: truncated, survivors };
  });
}

/**
 * An input being placed: written root-owned to a hidden file beside its mount path, then made
 * read-only (0444) and renamed into place only when the enforcer says the whole file
 * authenticated. /data is tmpfs, so nothing reaches a disk.
 */
export class InputFile {
  private readonly fd: number;
  private readonly tmp: string;
  bytes = 0;

  constructor(readonly mount: string) {
    mkdirSync(path.dirname(mount), { recursive: true, mode: 0o755 });
    this.tmp = path.join(path.dirname(mount), `.${path.basename(mount)}.partial`);
    this.fd = openSync(this.tmp, "wx", 0o600);
  }

  write(data: Buffer): void {
    for (let off = 0; off < data.length; ) off += writeSync(this.fd, data, off);
    this.bytes += data.length;
  }

  finish(): void {
    closeSync(this.fd);
    chmodSync(this.tmp, 0o444);
    renameSync(this.tmp, this.mount);
  }

  /** An input that did not open: what was written of it is removed, never placed. */
  discard(): void {
    closeSync(this.fd);
    rmSync(this.tmp, { force: true });
  }
}

const SKIP = new Set(["/proc", "/sys", "/dev"]);
const STRAY_MAX_DEPTH = 64;
const STRAY_MAX_ENTRIES = 1_000_000;

/**
 * How many entries (files, folders, symlinks, anything) the workload user owns outside its output
 * folders (it may write /tmp). Only the count is reported: names are data. Names are handled as
 * bytes, so one that is not UTF-8 is counted too; nothing is followed.
 */
export function strayCount(roots: string[], outputMounts: string[], uid = WORKLOAD_UID): number {
  // Paths compared as their bytes (latin1 maps each byte to one character).
  const key = (b: Buffer): string => b.toString("latin1");
  const outputs = new Set(outputMounts.map((m) => key(Buffer.from(m.replace(/\/+$/, "")))));
  let count = 0;
  let seen = 0;
  const walk = (dir: Buffer, depth: number): void => {
    let names: Buffer[];
    try {
      names = readdirSync(dir, { encoding: "buffer" });
    } catch {
      return;
    }
    for (const name of names) {
      if (++seen > STRAY_MAX_ENTRIES) return;
      const p = Buffer.concat([dir, dir[dir.length - 1] === 0x2f ? Buffer.alloc(0) : Buffer.from("/"), name]);
      const ps = key(p);
      if (SKIP.has(ps) || outputs.has(ps)) continue;
      const st = lstatSync(p, { throwIfNoEntry: false });
      if (!st) continue;
      if (st.uid === uid) count++;
      if (st.isDirectory() && depth < STRAY_MAX_DEPTH) walk(p, depth + 1);
    }
  };
  for (const r of roots) walk(Buffer.from(r), 0);
  return count;
}
