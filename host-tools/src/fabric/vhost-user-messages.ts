// Pure decoders for vhost-user request payloads (QEMU docs/interop/vhost-user.rst). The frontend is
// QEMU on an untrusted host: each decoder checks the payload's length and every field's range and
// throws ProtocolError, never reads past the buffer. No fds, no state: the session dispatches.
import { MAX_QUEUE_SIZE } from "./virtqueue.ts";

export class ProtocolError extends Error {
  override name = "ProtocolError";
}

/** Most memory regions one SET_MEM_TABLE may carry (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_REGIONS = 8;
/** Guest-physical and user addresses are below 2^52 (x86-64, 5-level paging at most). */
const ADDR_LIMIT = 1n << 52n;
/** A region's mmap offset plus size stays below 2^40 (1 TiB), and so fits a Number. */
const MMAP_LIMIT = 1n << 40n;
const VRING_NOFD = 0x100n;

function view(buf: Uint8Array, need: number, what: string): DataView {
  if (buf.length < need) throw new ProtocolError(`${what} with a ${buf.length}-byte payload (need ${need})`);
  return new DataView(buf.buffer, buf.byteOffset, buf.length);
}

/** A u64 payload (SET_FEATURES, SET_PROTOCOL_FEATURES). */
export function decodeU64(buf: Uint8Array, what = "u64 request"): bigint {
  return view(buf, 8, what).getBigUint64(0, true);
}

export interface MemRegionMsg {
  gpa: number;
  size: number;
  uva: number;
  mmapOffset: number;
}

/** SET_MEM_TABLE: u32 nregions, u32 padding, then nregions × {u64 gpa, size, uva, mmap_offset}. */
export function decodeMemTable(buf: Uint8Array): MemRegionMsg[] {
  const dv = view(buf, 8, "SET_MEM_TABLE");
  const n = dv.getUint32(0, true);
  if (n === 0 || n > MAX_REGIONS) throw new ProtocolError(`SET_MEM_TABLE with ${n} regions`);
  if (buf.length < 8 + 32 * n) throw new ProtocolError(`SET_MEM_TABLE with ${n} regions in ${buf.length} bytes`);
  const out: MemRegionMsg[] = [];
  for (let i = 0; i < n; i++) {
    const o = 8 + 32 * i;
    const gpa = dv.getBigUint64(o, true);
    const size = dv.getBigUint64(o + 8, true);
    const uva = dv.getBigUint64(o + 16, true);
    const mmapOffset = dv.getBigUint64(o + 24, true);
    if (size === 0n || gpa + size > ADDR_LIMIT || uva + size > ADDR_LIMIT || mmapOffset + size > MMAP_LIMIT) {
      throw new ProtocolError("memory region out of range");
    }
    out.push({ gpa: Number(gpa), size: Number(size), uva: Number(uva), mmapOffset: Number(mmapOffset) });
  }
  return out;
}

/** struct vhost_vring_state (SET_VRING_NUM, SET_VRING_BASE, GET_VRING_BASE, SET_VRING_ENABLE). */
export interface VringState {
  index: number;
  num: number;
}

export function decodeVringState(buf: Uint8Array, what = "vring state"): VringState {
  const dv = view(buf, 8, what);
  return { index: dv.getUint32(0, true), num: dv.getUint32(4, true) };
}

/** SET_VRING_NUM: the size must be a power of two up to MAX_QUEUE_SIZE. */
export function decodeVringNum(buf: Uint8Array): VringState {
  const s = decodeVringState(buf, "SET_VRING_NUM");
  if (s.num === 0 || s.num > MAX_QUEUE_SIZE || (s.num & (s.num - 1)) !== 0) throw new ProtocolError(`vring size ${s.num}`);
  return s;
}

/** SET_VRING_BASE: the next available index, a u16. */
export function decodeVringBase(buf: Uint8Array): VringState {
  const s = decodeVringState(buf, "SET_VRING_BASE");
  return { index: s.index, num: s.num & 0xffff };
}

export interface VringAddrMsg {
  index: number;
  flags: number;
  desc: number;
  used: number;
  avail: number;
  log: bigint;
}

/** SET_VRING_ADDR: struct vhost_vring_addr {u32 index, flags; u64 desc, used, avail, log} (user addresses). */
export function decodeVringAddr(buf: Uint8Array): VringAddrMsg {
  const dv = view(buf, 40, "SET_VRING_ADDR");
  const addr = (o: number): number => {
    const x = dv.getBigUint64(o, true);
    if (x >= ADDR_LIMIT) throw new ProtocolError("vring address out of range");
    return Number(x);
  };
  return { index: dv.getUint32(0, true), flags: dv.getUint32(4, true), desc: addr(8), used: addr(16), avail: addr(24), log: dv.getBigUint64(32, true) };
}

export interface VringFdMsg {
  index: number;
  /** VHOST_USER_VRING_NOFD_MASK: no fd comes with the message. */
  noFd: boolean;
}

/** SET_VRING_KICK / SET_VRING_CALL / SET_VRING_ERR: u64, index in bits 0-7, bit 8 "no fd". */
export function decodeVringFd(buf: Uint8Array, what = "vring fd request"): VringFdMsg {
  const u = decodeU64(buf, what);
  return { index: Number(u & 0xffn), noFd: (u & VRING_NOFD) !== 0n };
}

export interface ConfigMsg {
  offset: number;
  size: number;
  flags: number;
}

/** Largest config space access accepted. */
export const MAX_CONFIG_SIZE = 256;

/** GET_CONFIG / SET_CONFIG: struct vhost_user_config {u32 offset, size, flags; u8 region[size]}. */
export function decodeConfig(buf: Uint8Array, what = "GET_CONFIG"): ConfigMsg {
  const dv = view(buf, 12, what);
  const offset = dv.getUint32(0, true);
  const size = dv.getUint32(4, true);
  if (size > MAX_CONFIG_SIZE || buf.length < 12 + size) throw new ProtocolError(`${what} size`);
  return { offset, size, flags: dv.getUint32(8, true) };
}
