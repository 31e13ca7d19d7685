// Each VM pair has a state folder under stateDir()/pairs/<name>: QMP sockets, the supervisor's pid
// (the lock), console and supervisor logs, and state.json, so `status`, `logs` and `down` work
// from any shell and several named pairs run side by side.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from "node:fs";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import { stateDir } from "../paths.ts";
import type { Accel, VmRole } from "./qemu-args.ts";

export const PAIR_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

export type PairStatus = "starting" | "running" | "stopping" | "completed" | "stopped" | "failed";

export interface VmState {
  role: VmRole;
  pid?: number;
  status: "starting" | "paused" | "running" | "exited";
  /** How the VM ended, in words: "guest powered off", "killed by SIGKILL", ... */
  ended?: string;
  /** PCI devices QEMU reported before the guest was resumed (checked against an allowlist). */
  devices?: string[];
  /** QMP socket for inspecting the guest (the supervisor holds the other one). */
  inspectQmp?: string;
}

export interface PairState {
  name: string;
  manifest: string;
  /** Hex SHA-256 of the canonical manifest (the SNP host_data). */
  manifestDigest: string;
  tee: "emulated" | "snp";
  accel?: Accel;
  debug: boolean;
  status: PairStatus;
  /** Why the pair stopped or failed. */
  reason?: string;
  /** The error code of a refusal or failure, when one named it (errors.ts). */
  code?: string;
  supervisorPid: number;
  startedAt: string;
  updatedAt: string;
  /** Milliseconds from start to both guests' programs running. */
  readyMs?: number;
  /** How the workload ended, as the firewall may tell it: the code only at DOMAIN_OWNED or below. */
  workload?: { succeeded: boolean; code?: number };
  /** SNP launch digests the emulated PSP reports (hex), reproducible with `airlock measure --image`. */
  measurements?: { firewall: string; sandbox: string };
  /** The pair's claim on the host (fleet/reservations.ts): what it holds while it runs. */
  reservation?: { slot: number; ports: number[]; memoryMiB: number; vcpus: number };
  vms: { firewall: VmState; sandbox: VmState };
  /** A service room's API as the firewall reports it, and its counts (calls, not data). */
  service?: ServiceState;
}

export interface ServiceState {
  /** Where callers reach the API: host:port on this host. */
  endpoint: string;
  tls: boolean;
  /** SHA-256 of the API's TLS key (what `airlock call` pins after checking the evidence). */
  apiTlsSpkiSha256?: string;
  /** "starting" until the firewall says the API serves; "resetting" while the sandbox is restarted. */
  status: "starting" | "serving" | "resetting";
  served: number;
  refused: number;
  resets: number;
}

export function checkPairName(name: string): string {
  if (!PAIR_NAME_RE.test(name)) {
    throw new AirlockError("PAIR_NAME", `pair name ${JSON.stringify(name)} is not valid`, { hint: "use lower-case letters, digits and '-', at most 32 characters" });
  }
  return name;
}

export function pairsRoot(): string {
  return path.join(stateDir(), "pairs");
}

export function listPairNames(): string[] {
  const root = pairsRoot();
  return existsSync(root) ? readdirSync(root).filter((n) => PAIR_NAME_RE.test(n)).sort() : [];
}

/** True for a running process; a zombie (dead, not yet reaped by its parent) counts as dead. */
export function isAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

export class PairDir {
  readonly dir: string;

  constructor(readonly name: string) {
    this.dir = path.join(pairsRoot(), checkPairName(name));
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }
  qmpSocket(role: VmRole): string {
    return this.file(`${role}.qmp`);
  }
  inspectSocket(role: VmRole): string {
    return this.file(`${role}.inspect.qmp`);
  }
  /** The vsock fabric's vhost-user socket for this VM (QEMU's -chardev connects to it). */
  vhostSocket(role: VmRole): string {
    return this.file(`vsock/${role}.vhost`);
  }
  /** The fabric's hybrid-vsock path for this VM: host listeners are `<path>_<port>`. */
  vsockUdsPath(role: VmRole): string {
    return this.file(`vsock/${role}.vsock`);
  }
  consoleLog(role: VmRole): string {
    return this.file(`${role}.console.log`);
  }
  get supervisorLog(): string {
    return this.file("supervisor.log");
  }
  get exists(): boolean {
    return existsSync(this.file("state.json")) || existsSync(this.file("supervisor.pid"));
  }

  /**
   * Takes the pair's lock: the supervisor's pid written with O_EXCL. A lock left by a dead
   * supervisor is stale and is taken over; one held by a live process means the name is in use.
   */
  lock(pid = process.pid): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const lockFile = this.file("supervisor.pid");
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(lockFile, "wx", 0o600);
        writeSync(fd, String(pid));
        closeSync(fd);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        const holder = Number(readFileSync(lockFile, "utf8"));
        if (isAlive(holder) && holder !== pid) {
          throw new AirlockError("PAIR_EXISTS", `a pair named ${this.name} is already running (supervisor pid ${holder})`, {
            hint: `choose another --name, or stop it with \`airlock down ${this.name}\``,
          });
        }
        rmSync(lockFile, { force: true });
      }
    }
    throw new AirlockError("PAIR_EXISTS", `cannot lock pair ${this.name}`);
  }

  supervisorPid(): number | undefined {
    try {
      return Number(readFileSync(this.file("supervisor.pid"), "utf8")) || undefined;
    } catch {
      return undefined;
    }
  }

  read(): PairState | undefined {
    try {
      return JSON.parse(readFileSync(this.file("state.json"), "utf8")) as PairState;
    } catch {
      return undefined;
    }
  }

  /** Atomic replace, so a reader never sees half a file. */
  write(state: PairState): void {
    state.updatedAt = new Date().toISOString();
    const tmp = this.file(`state.json.tmp-${process.pid}`);
    writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, this.file("state.json"));
  }

  /** Removes the folder (after the pair is down). */
  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The state as a reader should believe it: a live status whose supervisor is gone is a failure. */
export function observedState(pair: PairDir): PairState | undefined {
  const s = pair.read();
  if (!s) return undefined;
  const live = s.status === "starting" || s.status === "running" || s.status === "stopping";
  if (live && !isAlive(s.supervisorPid)) {
    return { ...s, status: "failed", reason: `the supervisor (pid ${s.supervisorPid}) died; its VMs were killed with it` };
  }
  return s;
}
