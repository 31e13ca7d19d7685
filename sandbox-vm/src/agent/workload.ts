// Runs the workload unmodified: as the unprivileged `workload` user, with the manifest's command
// and environment only, its output folders created and owned by that user. Its stdout and stderr
// are data (an output like any other), never the console.
import { spawn } from "node:child_process";
import { chownSync, mkdirSync, readdirSync, lstatSync, readFileSync } from "node:fs";
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
    const child = spawn(spec.command[0]!, spec.command.slice(1), {
      env: { PATH: "/bin:/usr/bin", HOME: "/tmp", ...spec.env },
      cwd: spec.cwd ?? "/workload",
      stdio: ["ignore", "pipe", "pipe"],
      ...(process.getuid?.() === 0 ? { uid, gid } : {}),
    });
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
    const timer = setTimeout(() => child.kill("SIGKILL"), spec.timeoutSeconds * 1000);
    child.on("error", (err) => {
      take(Buffer.from(`airlock: cannot start the workload: ${err.message}\n`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      // Shell convention: death by signal N is status 128+N.
      const sig = signal ? (({ SIGKILL: 9, SIGTERM: 15, SIGSEGV: 11, SIGABRT: 6, SIGINT: 2 }) as Record<string, number>)[signal] ?? 1 : 0;
      resolve({ code: code ?? 128 + sig, console: Buffer.concat(chunks), consoleTruncated: truncated });
    });
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
