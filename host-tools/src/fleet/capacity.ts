// What a pair costs the host and what the host can give. Guest memory is not overcommitted: an
// SEV-SNP guest's memory is private and pinned (it cannot be swapped, shared or ballooned), so
// the sum of the running pairs' memory must fit. vCPUs are threads the host schedules, so they may
// be overcommitted by a documented factor (slower guests, not broken ones).
import { availableParallelism } from "node:os";
import { readFileSync } from "node:fs";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { Manifest } from "../../../proto/src/manifest/index.ts";

/** Memory kept for the host itself (kernel, page cache, supervisors): the larger of these two. */
export const HOST_RESERVE_MIB = 2048;
export const HOST_RESERVE_FRACTION = 0.1;
/** QEMU's own memory per VM beyond guest RAM (device model, TCG translation cache in use, vhost-user maps). */
export const QEMU_OVERHEAD_MIB = 128;
/** Guest vCPUs per host CPU, unless AIRLOCK_VCPU_OVERCOMMIT says otherwise. */
export const DEFAULT_VCPU_OVERCOMMIT = 4;

export const CAPACITY_ENV = { memory: "AIRLOCK_HOST_MEMORY_MIB", vcpus: "AIRLOCK_HOST_VCPUS", overcommit: "AIRLOCK_VCPU_OVERCOMMIT" } as const;

export interface Demand {
  memoryMiB: number;
  vcpus: number;
}

export interface HostCapacity extends Demand {
  /** How each figure was found, for the refusal message. */
  source: string;
}

/** What one pair of this room holds while it runs: both guests' RAM plus QEMU's overhead, and both guests' vCPUs. */
export function pairDemand(manifest: Pick<Manifest, "resources">): Demand {
  const { firewall, sandbox } = manifest.resources;
  return { memoryMiB: firewall.memoryMiB + sandbox.memoryMiB + 2 * QEMU_OVERHEAD_MIB, vcpus: firewall.vcpus + sandbox.vcpus };
}

function envInt(name: string, min: number): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return undefined;
  if (!/^\d{1,9}$/.test(raw) || Number(raw) < min) throw new AirlockError("LAUNCH", `${name}=${JSON.stringify(raw)} is not a whole number of at least ${min}`, { hint: `unset ${name} to use this host's own figure` });
  return Number(raw);
}

export function memTotalMiB(meminfo = readFileSync("/proc/meminfo", "utf8")): number {
  const m = /^MemTotal:\s+(\d+) kB$/m.exec(meminfo);
  if (!m) throw new AirlockError("INTERNAL", "cannot read MemTotal from /proc/meminfo");
  return Math.floor(Number(m[1]) / 1024);
}

/** The host's capacity for pairs: the operator's figures (AIRLOCK_HOST_*) or this host's, less the reserve. */
export function hostCapacity(): HostCapacity {
  const memEnv = envInt(CAPACITY_ENV.memory, 1);
  const vcpuEnv = envInt(CAPACITY_ENV.vcpus, 1);
  const factor = envInt(CAPACITY_ENV.overcommit, 1) ?? DEFAULT_VCPU_OVERCOMMIT;
  const total = memEnv === undefined ? memTotalMiB() : 0;
  const memoryMiB = memEnv ?? total - Math.max(HOST_RESERVE_MIB, Math.ceil(total * HOST_RESERVE_FRACTION));
  const cpus = availableParallelism();
  const vcpus = vcpuEnv ?? cpus * factor;
  return {
    memoryMiB,
    vcpus,
    source: [
      memEnv === undefined ? `${memoryMiB} MiB = MemTotal ${total} MiB less the host's reserve` : `${memoryMiB} MiB from ${CAPACITY_ENV.memory}`,
      vcpuEnv === undefined ? `${vcpus} vCPUs = ${cpus} CPUs × ${factor} (${CAPACITY_ENV.overcommit})` : `${vcpus} vCPUs from ${CAPACITY_ENV.vcpus}`,
    ].join(", "),
  };
}
