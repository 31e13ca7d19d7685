// Runs the workload unmodified: as the unprivileged `workload` user, with the manifest's command
// and environment only, its output folders created and owned by that user. Its stdout and stderr
// are data (an output like any other), never the console.
import { spawn } from "node:child_process";
import { chmodSync, chownSync, closeSync, mkdirSync, openSync, readdirSync, lstatSync, readFileSync, renameSync, writeSync } from "node:fs";
import path from "node:path";

export const WORKLOAD_UID = 1000;
export const WORKLOAD_GID = 1000;
/** Bound on captured stdout+stderr; the rest is dropped and said so. */
export const MAX_CONSOLE_BYTES = 8 * 1024 * 1024;

export interface WorkloadResult {
  code: number;
  console: Buffer;
  consoleTruncated: boolean;
}

export interface WorkloadSpec {
  command: string[];
  env: Record<string, string>;
  outputMounts: string[];
  timeoutSeconds: number;
  /** Run as this uid/gid (default the workload user); tests on a host run as themselves. */
  uid?: number;
  gid?: number;
  cwd?: string;
}

export function prepareOutputs(mounts: string[], uid: number, gid: number): void {
  for (const m of mounts) {
    mkdirSync(m, { recursive: true, mode: 0o755 });
    if (process.getuid?.() === 0) chownSync(m, uid, gid);
  }
}

export function runWorkload(spec: WorkloadSpec): Promise<WorkloadResult> {
  const uid = spec.uid ?? WORKLOAD_UID;
  const gid = spec.gid ?? WORKLOAD_GID;
  prepareOutputs(spec.outputMounts, uid, gid);
  const chunks: Buffer[] = [];
  let size = 0;
  let truncated = false;
  return new Promise((resolve) => {
    // Its own process group, so a timeout or a leftover child (holding stdout open) is killed whole.
    const child = spawn(spec.command[0]!, spec.command.slice(1), {
      env: { PATH: "/bin:/usr/bin", HOME: "/tmp", ...spec.env },
      cwd: spec.cwd ?? "/workload",
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
      ...(process.getuid?.() === 0 ? { uid, gid } : {}),
    });
    const killGroup = (): void => {
      try {
        if (child.pid) process.kill(-child.pid, "SIGKILL");
      } catch {
        // the group is gone already
      }
    };
    const take = (d: Buffer): void => {
      if (size + d.length > MAX_CONSOLE_BYTES) {
        truncated = true;
        d = d.subarray(0, Math.max(0, MAX_CONSOLE_BYTES - size));
      }
      size += d.length;
      if (d.length) chunks.push(d);
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    let status: number | undefined;
    const finish = (): void => {
      if (status === undefined) return;
      clearTimeout(timer);
      clearTimeout(grace);
      resolve({ code: status, console: Buffer.concat(chunks), consoleTruncated: truncated });
      status = undefined;
    };
    const timer = setTimeout(killGroup, spec.timeoutSeconds * 1000);
    let grace: NodeJS.Timeout | undefined;
    child.on("error", (err) => {
      take(Buffer.from(`airlock: cannot start the workload: ${err.message}\n`));
      status ??= 127;
      finish();
    });
    child.on("exit", (code, signal) => {
      // Shell convention: death by signal N is status 128+N.
      const sig = signal ? (({ SIGKILL: 9, SIGTERM: 15, SIGSEGV: 11, SIGABRT: 6, SIGINT: 2 }) as Record<string, number>)[signal] ?? 1 : 0;
      status = code ?? 128 + sig;
      // Whatever it left running goes with it; its output pipes then close.
      grace = setTimeout(() => {
        killGroup();
        finish();
      }, 2000);
      killGroup();
    });
    child.on("close", () => finish());
  });
}

export interface OutputFile {
  path: string;
  data: Buffer;
}

/** Lists the regular files under an output folder (symlinks and special files are skipped). */
export function collectOutput(mount: string, maxBytes: number): { files: OutputFile[]; skipped: string[]; overLimit: boolean } {
  const files: OutputFile[] = [];
  const skipped: string[] = [];
  let total = 0;
  let overLimit = false;
  const walk = (rel: string): void => {
    for (const name of readdirSync(path.join(mount, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path.join(mount, r));
      if (st.isDirectory()) walk(r);
      else if (!st.isFile()) skipped.push(r);
      else if (total + st.size > maxBytes) overLimit = true;
      else {
        total += st.size;
        files.push({ path: r, data: readFileSync(path.join(mount, r)) });
      }
    }
  };
  try {
    walk("");
  } catch {
    // the workload removed its own output folder: nothing to ship
  }
  return { files, skipped, overLimit };
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
}

/**
 * Files the workload user owns outside its output folders (it may write /tmp and nowhere else
 * that is shipped): listed for the audit trail, never shipped.
 */
const SKIP = new Set(["/proc", "/sys", "/dev"]);

export function strayFiles(roots: string[], outputMounts: string[], uid = WORKLOAD_UID): { paths: string[]; count: number } {
  const paths: string[] = [];
  let count = 0;
  const walk = (dir: string, depth: number): void => {
    if (depth > 8 || SKIP.has(dir) || outputMounts.some((m) => dir === m || dir.startsWith(`${m}/`))) return;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      const p = path.join(dir, name);
      let st;
      try {
        st = lstatSync(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) walk(p, depth + 1);
      else if (st.uid === uid && !outputMounts.some((m) => p.startsWith(`${m}/`))) {
        count++;
        if (paths.length < 50) paths.push(p);
      }
    }
  };
  for (const r of roots) walk(r, 0);
  return { paths, count };
}
