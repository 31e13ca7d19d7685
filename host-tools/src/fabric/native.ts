// Typed access to the fabric's native shim (host-tools/native): the few syscalls Node lacks.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { AirlockError } from "../../../proto/src/errors.ts";

export interface RecvResult {
  /** 0 means the peer closed. */
  bytes: number;
  fds: number[];
  /** The kernel dropped some fds (more than the shim accepts in one message). */
  truncated: boolean;
}

export interface Poller {
  start(readable: boolean, writable?: boolean): void;
  stop(): void;
  close(): void;
}

export interface FabricNative {
  listenUnix(path: string, backlog: number): number;
  /** -1 when nothing is pending. */
  accept(fd: number): number;
  /** null when the read would block. */
  recvMsg(fd: number, buf: Uint8Array): RecvResult | null;
  send(fd: number, buf: Uint8Array): number;
  close(fd: number): void;
  mmap(fd: number, length: number): ArrayBuffer;
  /** Detaches the ArrayBuffer, then unmaps it. */
  munmap(buf: ArrayBuffer): void;
  /** The eventfd counter, 0 if nothing was signalled (never blocks). */
  eventfdRead(fd: number): number;
  eventfdWrite(fd: number): void;
  Poller: new (fd: number, callback: (err: string | null, events: number) => void) => Poller;
}

const ADDON = "host-tools/native/build/Release/airlock_fabric.node";

let cached: FabricNative | undefined;

/** Loads the addon from $AIRLOCK_FABRIC_ADDON or the repository this file (or its bundle) sits in. */
export function loadNative(): FabricNative {
  if (cached) return cached;
  const candidates: string[] = [];
  if (process.env.AIRLOCK_FABRIC_ADDON) candidates.push(process.env.AIRLOCK_FABRIC_ADDON);
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    candidates.push(path.join(dir, ADDON));
    if (path.dirname(dir) === dir) break;
  }
  const found = candidates.find((c) => existsSync(c));
  if (!found) {
    throw new AirlockError("FABRIC", "the vsock fabric's native addon is not built", { hint: "run `npm run build` (needs g++, make and python3)" });
  }
  cached = createRequire(import.meta.url)(found) as FabricNative;
  return cached;
}
