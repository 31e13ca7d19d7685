// Where airlock finds its own files and keeps its state on the host.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

let root: string | undefined;

/** The airlock checkout (the folder holding package.json named "airlock"), from source or bundle. */
export function projectRoot(): string {
  if (root) return root;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "airlock") return (root = dir);
    const up = path.dirname(dir);
    if (up === dir) throw new Error("cannot find the airlock project root above " + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** Built images and unpacked inputs, reused across runs: AIRLOCK_CACHE or ~/.cache/airlock. */
export function cacheDir(): string {
  return process.env.AIRLOCK_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), ".cache"), "airlock");
}

/** Running pairs' state (sockets, pids, logs, locks): AIRLOCK_STATE or /run/airlock (root) or ~/.local/state/airlock. */
export function stateDir(): string {
  if (process.env.AIRLOCK_STATE) return process.env.AIRLOCK_STATE;
  if (process.getuid?.() === 0) return "/run/airlock";
  return path.join(process.env.XDG_STATE_HOME ?? path.join(homedir(), ".local/state"), "airlock");
}
