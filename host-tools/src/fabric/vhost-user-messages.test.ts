// The pure vhost-user payload decoders: layouts as QEMU writes them, and every short or
// out-of-range payload refused with ProtocolError.
import { describe, expect, it } from "vitest";
import { MAX_REGIONS, ProtocolError, decodeConfig, decodeMemTable, decodeU64, decodeVringAddr, decodeVringBase, decodeVringFd, decodeVringNum, decodeVringState } from "./vhost-user-messages.ts";

const u32 = (...vs: number[]): Buffer => Buffer.concat(vs.map((v) => Buffer.from(new Uint32Array([v]).buffer)));
const u64 = (...vs: bigint[]): Buffer => Buffer.concat(vs.map((v) => Buffer.from(new BigUint64Array([v]).buffer)));
const bad = (f: () => unknown, re: RegExp): void => {
  expect(f).toThrow(ProtocolError);
  expect(f).toThrow(re);
};

describe("vhost-user message decoders", () => {
  it("decodes a u64 and refuses a short one", () => {
    expect(decodeU64(u64(1n << 33n))).toBe(1n << 33n);
    bad(() => decodeU64(Buffer.alloc(7), "SET_FEATURES"), /SET_FEATURES with a 7-byte payload \(need 8\)/);
  });

  it("decodes a memory table, honouring the buffer's offset", () => {
    const body = Buffer.concat([u32(2, 0), u64(0n, 0x10000n, 0x7f0000000000n, 0n), u64(0x100000n, 0x2000n, 0x7f0000100000n, 0x1000n)]);
    const shifted = Buffer.concat([Buffer.alloc(3), body]).subarray(3);
    expect(decodeMemTable(shifted)).toEqual([
      { gpa: 0, size: 0x10000, uva: 0x7f0000000000, mmapOffset: 0 },
      { gpa: 0x100000, size: 0x2000, uva: 0x7f0000100000, mmapOffset: 0x1000 },
    ]);
  });

  it("refuses malformed memory tables", () => {
    bad(() => decodeMemTable(Buffer.alloc(4)), /need 8/);
    bad(() => decodeMemTable(u32(0, 0)), /0 regions/);
    bad(() => decodeMemTable(u32(MAX_REGIONS + 1, 0)), /9 regions/);
    bad(() => decodeMemTable(Buffer.concat([u32(2, 0), u64(0n, 1n, 0n, 0n)])), /2 regions in 40 bytes/);
    bad(() => decodeMemTable(Buffer.concat([u32(1, 0), u64(0n, 0n, 0n, 0n)])), /out of range/);
    bad(() => decodeMemTable(Buffer.concat([u32(1, 0), u64((1n << 52n) - 1n, 2n, 0n, 0n)])), /out of range/);
    bad(() => decodeMemTable(Buffer.concat([u32(1, 0), u64(0n, 2n, 0xffffffffffffffffn, 0n)])), /out of range/);
    bad(() => decodeMemTable(Buffer.concat([u32(1, 0), u64(0n, 2n, 0n, 1n << 40n)])), /out of range/);
  });

  it("decodes vring state, size and base", () => {
    expect(decodeVringState(u32(1, 7))).toEqual({ index: 1, num: 7 });
    expect(decodeVringNum(u32(0, 256))).toEqual({ index: 0, num: 256 });
    expect(decodeVringBase(u32(2, 0x12345))).toEqual({ index: 2, num: 0x2345 });
    bad(() => decodeVringState(u32(1)), /need 8/);
    for (const n of [0, 3, 1 << 16]) bad(() => decodeVringNum(u32(0, n)), new RegExp(`vring size ${n}`));
  });

  it("decodes vring addresses and refuses those beyond 2^52", () => {
    expect(decodeVringAddr(Buffer.concat([u32(1, 0), u64(0x1000n, 0x1800n, 0x1200n, 0n)]))).toEqual({ index: 1, flags: 0, desc: 0x1000, used: 0x1800, avail: 0x1200, log: 0n });
    bad(() => decodeVringAddr(Buffer.alloc(39)), /need 40/);
    bad(() => decodeVringAddr(Buffer.concat([u32(1, 0), u64(0n, 1n << 52n, 0n, 0n)])), /vring address out of range/);
  });

  it("decodes a vring fd request's index and no-fd bit", () => {
    expect(decodeVringFd(u64(2n))).toEqual({ index: 2, noFd: false });
    expect(decodeVringFd(u64(0x101n))).toEqual({ index: 1, noFd: true });
    bad(() => decodeVringFd(Buffer.alloc(4)), /need 8/);
  });

  it("decodes a config access and bounds its size", () => {
    expect(decodeConfig(Buffer.concat([u32(0, 8, 0), Buffer.alloc(8)]))).toEqual({ offset: 0, size: 8, flags: 0 });
    bad(() => decodeConfig(u32(0, 8)), /need 12/);
    bad(() => decodeConfig(Buffer.concat([u32(0, 8, 0), Buffer.alloc(7)])), /GET_CONFIG size/);
    bad(() => decodeConfig(Buffer.concat([u32(0, 257, 0), Buffer.alloc(257)])), /GET_CONFIG size/);
  });
});
