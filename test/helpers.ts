// Shared helpers for end-to-end tests: run the real `airlock` CLI (the built bundle) with its
// state in a temporary folder, and make sure no QEMU outlives a test.
import { execFileSync, spawn, type SpawnOptions } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { scratchDir } from "./scratch.ts";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const airlockBin = path.join(repoRoot, "host-tools/bin/airlock.mjs");

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A fresh, empty airlock state folder (AIRLOCK_STATE), removed when the test or test file ends. */
export function testStateDir(): string {
  return scratchDir("airlock-state-");
}

/** Runs `airlock ...args` to its end (bounded), returning its exit status and output. */
export function airlock(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 240_000, options: SpawnOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [airlockBin, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], ...options });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`airlock ${args.join(" ")} did not finish within ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** QEMU processes whose command line names a pair of this test's (airlock-<prefix>...). */
export function qemuPids(namePrefix: string): number[] {
  try {
    return execFileSync("pgrep", ["-f", `qemu-system-x86_64 -name airlock-${namePrefix}`]).toString().trim().split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export function killQemus(namePrefix: string): void {
  for (const pid of qemuPids(namePrefix)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

export async function waitFor(what: string, cond: () => boolean, timeoutMs: number, stepMs = 50): Promise<number> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return Date.now() - t0;
}
