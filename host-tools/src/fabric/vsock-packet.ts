// virtio-vsock packet header (virtio 1.2 §5.10.6): 44 bytes, little-endian.
//   src_cid u64, dst_cid u64, src_port u32, dst_port u32, len u32, type u16, op u16, flags u32,
//   buf_alloc u32, fwd_cnt u32
export const HDR_LEN = 44;
/** Largest payload a Linux guest puts in one packet (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
export const MAX_PAYLOAD = 64 * 1024;
export const HOST_CID = 2;
export const TYPE_STREAM = 1;

export const Op = {
  REQUEST: 1,
  RESPONSE: 2,
  RST: 3,
  SHUTDOWN: 4,
  RW: 5,
  CREDIT_UPDATE: 6,
  CREDIT_REQUEST: 7,
} as const;

export const SHUTDOWN_RCV = 1;
export const SHUTDOWN_SEND = 2;

export interface VsockHeader {
  /** -1 when the 64-bit value does not fit a 32-bit CID (never valid). */
  srcCid: number;
  dstCid: number;
  srcPort: number;
  dstPort: number;
  len: number;
  type: number;
  op: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
}

function readCid(dv: DataView, off: number): number {
  return dv.getUint32(off + 4, true) === 0 ? dv.getUint32(off, true) : -1;
}

export function decodeHeader(b: Uint8Array): VsockHeader {
  if (b.length < HDR_LEN) throw new RangeError("short vsock header");
  const dv = new DataView(b.buffer, b.byteOffset, HDR_LEN);
  return {
    srcCid: readCid(dv, 0),
    dstCid: readCid(dv, 8),
    srcPort: dv.getUint32(16, true),
    dstPort: dv.getUint32(20, true),
    len: dv.getUint32(24, true),
    type: dv.getUint16(28, true),
    op: dv.getUint16(30, true),
    flags: dv.getUint32(32, true),
    bufAlloc: dv.getUint32(36, true),
    fwdCnt: dv.getUint32(40, true),
  };
}

export function encodeHeader(h: VsockHeader, b: Uint8Array, off = 0): void {
  writeHeader(new DataView(b.buffer, b.byteOffset + off, HDR_LEN), h, h.len);
}

/** Writes a header with payload length `len` through an existing DataView (the hot path). */
export function writeHeader(dv: DataView, h: VsockHeader, len: number): void {
  dv.setUint32(0, h.srcCid, true);
  dv.setUint32(4, 0, true);
  dv.setUint32(8, h.dstCid, true);
  dv.setUint32(12, 0, true);
  dv.setUint32(16, h.srcPort, true);
  dv.setUint32(20, h.dstPort, true);
  dv.setUint32(24, len, true);
  dv.setUint16(28, h.type, true);
  dv.setUint16(30, h.op, true);
  dv.setUint32(32, h.flags, true);
  dv.setUint32(36, h.bufAlloc, true);
  dv.setUint32(40, h.fwdCnt, true);
}

/** The header of a reply to `h` (source and destination swapped), e.g. an RST. */
export function replyHeader(h: VsockHeader, op: number, flags = 0): VsockHeader {
  return { srcCid: h.dstCid, dstCid: h.srcCid, srcPort: h.dstPort, dstPort: h.srcPort, len: 0, type: TYPE_STREAM, op, flags, bufAlloc: 0, fwdCnt: 0 };
}
