// The host-wide lock around "is the name free, is there room, which slot and ports": held by the
// kernel (flock(2) through util-linux's flock(1), already a dependency through setpriv), so a holder
// that crashes or is SIGKILLed releases it with its last file descriptor — no stale lock file to
// judge by PID, no race between two processes breaking the same stale lock.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import { stateDir } from "../paths.ts";

/** How long a caller waits for the lock before giving up; the critical section takes milliseconds. */
export const HOST_LOCK_WAIT_S = 60;

export function fleetDir(): string {
  return path.join(stateDir(), "fleet");
}

/**
 * Runs `fn` holding the host lock. The lock is held by a `flock` child whose command waits on its
 * stdin: closing our end (when `fn` settles, or when this process dies however it dies) ends it.
 */
export async function withHostLock<T>(fn: () => T | Promise<T>): Promise<T> {
  mkdirSync(fleetDir(), { recursive: true, mode: 0o700 });
  const file = path.join(fleetDir(), "host.lock");
  const holder = spawn("flock", ["--exclusive", "--wait", String(HOST_LOCK_WAIT_S), file, "-c", "echo locked; exec cat >/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
  const exited = new Promise<number | null>((resolve) => holder.on("close", (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    let out = "";
    let err = "";
    holder.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("locked")) resolve();
    });
    holder.stderr.on("data", (d: Buffer) => (err += d.toString()));
    holder.on("error", (e) => reject(new AirlockError("LAUNCH", `cannot run flock(1) for the host lock: ${e.message}`, { hint: "install util-linux (host-tools/scripts/setup.sh)" })));
    void exited.then((code) =>
      reject(
        code === 1
          ? new AirlockError("TIMEOUT", `the host lock ${file} was not free within ${HOST_LOCK_WAIT_S} s`, { hint: "another airlock process holds it; `fuser -v` on the file names it" })
          : new AirlockError("LAUNCH", `flock(1) on ${file} ended with status ${code}: ${err.trim()}`),
      ),
    );
  });
  try {
    return await fn();
  } finally {
    holder.stdin.end();
    await exited;
  }
}
