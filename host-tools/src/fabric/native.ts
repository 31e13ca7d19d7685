// Typed access to the fabric's native shim (host-tools/native): the few syscalls Node lacks.
import { nativeAddon } from "../../../proto/src/native.ts";

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

/** The addon, found where proto's loader finds it (proto/src/native.ts: the repository's build on the host). */
export function loadNative(): FabricNative {
  return nativeAddon<FabricNative>();
}
