// A pair's claim on the host, made before anything is started: its name, its share of memory and
// vCPUs, a slot number and any host TCP ports, written under the host lock (host-lock.ts) after
// checking that the name is free and that the host has room. A claim whose process is gone (a
// crashed supervisor, a killed `up`) is reclaimed by the next caller, so nothing leaks for good.
//
// Guest CIDs are not allocated here: every pair runs its own userspace vsock fabric, so CIDs 3
// (firewall) and 4 (sandbox) are a per-pair namespace, and they must stay constant because the
// guests address each other by them (docs/kubernetes.md § vsock says why a kernel vhost-vsock
// backend, whose CIDs are host-global, is not used).
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import { checkPairName, isAlive, PAIR_NAME_RE } from "../launch/pair-state.ts";
import { fleetDir, withHostLock } from "./host-lock.ts";
import { hostCapacity, type Demand } from "./capacity.ts";

export interface Reservation {
  name: string;
  /** The process holding the claim: the pair's supervisor, or `up` until its supervisor adopts it. */
  pid: number;
  /** That process's start time (/proc/PID/stat field 22), so a reused PID is not taken for it. */
  pidStart: string;
  /** Handed by `up` to the supervisor it spawns: the one process that may adopt the claim. */
  token: string;
  demand: Demand;
  /** The lowest number free on this host when the pair started (0, 1, …): for host-unique numbering. */
  slot: number;
  /** Host TCP ports held for the pair (allocatePort), freed with the claim. */
  ports: number[];
  createdAt: string;
}

/** At most this many host ports per pair. */
export const MAX_PORTS_PER_PAIR = 8;

const reservationsDir = (): string => path.join(fleetDir(), "reservations");
const fileOf = (name: string): string => path.join(reservationsDir(), `${checkPairName(name)}.json`);

export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

const holderAlive = (r: Reservation): boolean => isAlive(r.pid) && processStart(r.pid) === r.pidStart;

/** Our own files, but still checked: a malformed one is treated as no claim and removed. */
function parse(text: string, name: string): Reservation | undefined {
  try {
    const r = JSON.parse(text) as Partial<Reservation>;
    const nat = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;
    if (r.name !== name || !nat(r.pid) || typeof r.pidStart !== "string" || typeof r.token !== "string" || !nat(r.slot)) return undefined;
    if (!r.demand || !nat(r.demand.memoryMiB) || !nat(r.demand.vcpus) || !Array.isArray(r.ports) || !r.ports.every(nat)) return undefined;
    return r as Reservation;
  } catch {
    return undefined;
  }
}

function write(r: Reservation): void {
  mkdirSync(reservationsDir(), { recursive: true, mode: 0o700 });
  const tmp = `${fileOf(r.name)}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(r, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, fileOf(r.name));
}

/** The live claims (call under the host lock): dead holders' and malformed files are removed. */
function liveReservations(): Reservation[] {
  let names: string[];
  try {
    names = readdirSync(reservationsDir());
  } catch {
    return [];
  }
  const live: Reservation[] = [];
  for (const f of names) {
    const name = f.endsWith(".json") ? f.slice(0, -5) : "";
    const file = path.join(reservationsDir(), f);
    if (!PAIR_NAME_RE.test(name)) {
      if (f.includes(".tmp-") && !isAlive(Number(f.split(".tmp-")[1]))) rmSync(file, { force: true });
      continue;
    }
    let r: Reservation | undefined;
    try {
      r = parse(readFileSync(file, "utf8"), name);
    } catch {
      continue;
    }
    if (r && holderAlive(r)) live.push(r);
    else rmSync(file, { force: true });
  }
  return live;
}

/** Every live claim on this host (for `status` and the tests). */
export function listReservations(): Promise<Reservation[]> {
  return withHostLock(liveReservations);
}

const sum = (rs: Reservation[]): Demand => rs.reduce((a, r) => ({ memoryMiB: a.memoryMiB + r.demand.memoryMiB, vcpus: a.vcpus + r.demand.vcpus }), { memoryMiB: 0, vcpus: 0 });

export interface ReserveOptions {
  name: string;
  demand: Demand;
  /** Adopt the claim `up` made with this token (the supervisor it spawned). */
  token?: string;
}

/**
 * Claims a name and the pair's resources for this process, atomically with respect to every other
 * airlock process using the same state folder. Refuses a name held by a live process
 * (PAIR_EXISTS) and a pair the host has no room for (CAPACITY, saying what is free and who holds the rest).
 */
export function reservePair(opts: ReserveOptions): Promise<Reservation> {
  checkPairName(opts.name);
  return withHostLock(() => {
    const live = liveReservations();
    const held = live.find((r) => r.name === opts.name);
    if (held && !(opts.token !== undefined && held.token === opts.token)) {
      throw new AirlockError("PAIR_EXISTS", `a pair named ${opts.name} is already running or starting (pid ${held.pid})`, { hint: `choose another --name, or stop it with \`airlock down ${opts.name}\`` });
    }
    const others = live.filter((r) => r.name !== opts.name);
    const used = sum(others);
    const cap = hostCapacity();
    const free = { memoryMiB: cap.memoryMiB - used.memoryMiB, vcpus: cap.vcpus - used.vcpus };
    if (opts.demand.memoryMiB > free.memoryMiB || opts.demand.vcpus > free.vcpus) {
      const holders = others.map((r) => `${r.name} (${r.demand.memoryMiB} MiB, ${r.demand.vcpus} vCPUs)`).join(", ") || "none";
      throw new AirlockError(
        "CAPACITY",
        `pair ${opts.name} needs ${opts.demand.memoryMiB} MiB and ${opts.demand.vcpus} vCPUs; this host has ${Math.max(0, free.memoryMiB)} MiB and ${Math.max(0, free.vcpus)} vCPUs free of ${cap.source}; held by: ${holders}`,
        { hint: "stop a pair (`airlock down NAME`), give the room less (resources: in the manifest), or run it on another host" },
      );
    }
    const taken = new Set(others.map((r) => r.slot));
    let slot = held?.slot ?? 0;
    if (!held) while (taken.has(slot)) slot++;
    const r: Reservation = {
      name: opts.name,
      pid: process.pid,
      pidStart: processStart(process.pid) ?? "",
      token: held?.token ?? randomBytes(16).toString("hex"),
      demand: opts.demand,
      slot,
      ports: held?.ports ?? [],
      createdAt: held?.createdAt ?? new Date().toISOString(),
    };
    write(r);
    return r;
  });
}

/** Frees a claim held by this process (or by a process that is gone). Idempotent. */
export function releasePair(name: string): Promise<void> {
  return withHostLock(() => {
    const file = fileOf(name);
    let r: Reservation | undefined;
    try {
      r = parse(readFileSync(file, "utf8"), name);
    } catch {
      return;
    }
    if (!r || r.pid === process.pid || !holderAlive(r)) rmSync(file, { force: true });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A host TCP port for the pair `name` (whose claim this process holds): free on the host when
 * chosen and held by no other pair; recorded in the claim and freed with it. The caller binds it.
 */
export function allocatePort(name: string): Promise<number> {
  return withHostLock(async () => {
    const live = liveReservations();
    const mine = live.find((r) => r.name === name && r.pid === process.pid);
    if (!mine) throw new AirlockError("INTERNAL", `pair ${name} holds no claim of this process to add a port to`);
    if (mine.ports.length >= MAX_PORTS_PER_PAIR) throw new AirlockError("CAPACITY", `pair ${name} already holds ${MAX_PORTS_PER_PAIR} host ports`);
    const held = new Set(live.flatMap((r) => r.ports));
    for (let i = 0; i < 32; i++) {
      const port = await freePort();
      if (held.has(port)) continue;
      mine.ports.push(port);
      write(mine);
      return port;
    }
    throw new AirlockError("CAPACITY", "no free host TCP port found in 32 tries");
  });
}
