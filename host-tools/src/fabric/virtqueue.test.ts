import { describe, expect, it } from "vitest";
import { GuestMemory } from "./memory.ts";
import { RingError, SplitVirtqueue, gather, ringSizes } from "./virtqueue.ts";

const GPA = 0x10000;
const Q = 8;

/** Guest RAM with one queue at offset 0; returns helpers to write its rings like a driver. */
function ring() {
  const ram = Buffer.alloc(64 * 1024);
  const mem = new GuestMemory([{ gpa: GPA, uva: 0x7000_0000_0000, size: ram.length, bytes: ram }]);
  const s = ringSizes(Q);
  const desc = 0;
  const avail = s.desc;
  const used = 0x1000;
  const vq = new SplitVirtqueue(Q, mem, { desc: ram.subarray(desc, desc + s.desc), avail: ram.subarray(avail, avail + s.avail), used: ram.subarray(used, used + s.used) });
  let availIdx = 0;
  const d = (i: number, addr: number, len: number, flags: number, next = 0): void => {
    ram.writeBigUInt64LE(BigInt(addr), desc + 16 * i);
    ram.writeUInt32LE(len, desc + 16 * i + 8);
    ram.writeUInt16LE(flags, desc + 16 * i + 12);
    ram.writeUInt16LE(next, desc + 16 * i + 14);
  };
  const publish = (head: number): void => {
    ram.writeUInt16LE(head, avail + 4 + 2 * (availIdx % Q));
    availIdx = (availIdx + 1) & 0xffff;
    ram.writeUInt16LE(availIdx, avail + 2);
  };
  return { ram, vq, d, publish, avail, used };
}

describe("split virtqueue", () => {
  it("pops a readable+writable chain and pushes it to the used ring", () => {
    const { ram, vq, d, publish, used } = ring();
    ram.write("hello", 0x2000);
    d(0, GPA + 0x2000, 5, 1, 3);
    d(3, GPA + 0x3000, 100, 2);
    publish(0);
    const c = vq.pop()!;
    expect(c.head).toBe(0);
    expect(Buffer.from(c.readable[0]!).toString()).toBe("hello");
    expect(c.writableLen).toBe(100);
    c.writable[0]!.set([1, 2, 3]);
    expect(ram.subarray(0x3000, 0x3003)).toEqual(Buffer.from([1, 2, 3]));
    expect(vq.pop()).toBeNull();
    vq.push(0, 3);
    expect([ram.readUInt16LE(used + 2), ram.readUInt32LE(used + 4), ram.readUInt32LE(used + 8)]).toEqual([1, 0, 3]);
    expect(vq.nextAvail).toBe(1);
  });

  const bad: [string, (r: ReturnType<typeof ring>) => void][] = [
    ["a chain that loops", (r) => (r.d(0, GPA, 8, 1, 1), r.d(1, GPA, 8, 1, 0), r.publish(0))],
    ["a next index past the queue", (r) => (r.d(0, GPA, 8, 1, Q), r.publish(0))],
    ["a head past the queue", (r) => r.publish(Q + 3)],
    ["a buffer below guest memory", (r) => (r.d(0, GPA - 1, 8, 0), r.publish(0))],
    ["a buffer running past the region's end", (r) => (r.d(0, GPA + 64 * 1024 - 4, 8, 0), r.publish(0))],
    ["a huge address", (r) => (r.d(0, 2 ** 60, 8, 0), r.publish(0))],
    ["an indirect descriptor", (r) => (r.d(0, GPA, 16, 4), r.publish(0))],
    ["a readable descriptor after a writable one", (r) => (r.d(0, GPA, 8, 2 | 1, 1), r.d(1, GPA, 8, 0), r.publish(0))],
    ["an avail index that jumps past the queue size", (r) => r.ram.writeUInt16LE(Q + 1, r.avail + 2)],
  ];
  for (const [name, make] of bad) {
    it(`refuses ${name}`, () => {
      const r = ring();
      make(r);
      expect(() => r.vq.pop()).toThrow(RingError);
    });
  }

  it("refuses queue sizes that are not powers of two and rings smaller than the size", () => {
    const ram = new Uint8Array(4096);
    const mem = new GuestMemory([{ gpa: 0, uva: 0, size: ram.length, bytes: ram }]);
    const v = { desc: ram, avail: ram, used: ram };
    expect(() => new SplitVirtqueue(3, mem, v)).toThrow(RingError);
    expect(() => new SplitVirtqueue(1024, mem, v)).toThrow(RingError);
  });

  it("gathers across segments from an offset", () => {
    const out = new Uint8Array(5);
    expect(gather([Uint8Array.of(1, 2), Uint8Array.of(3, 4, 5), Uint8Array.of(6)], 1, out, 0, 5)).toBe(5);
    expect([...out]).toEqual([2, 3, 4, 5, 6]);
  });
});
