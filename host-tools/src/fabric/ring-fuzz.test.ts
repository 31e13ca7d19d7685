// Randomized hostile-guest test: a guest (A) that writes garbage into its rings and packet headers
// while a well-behaved guest (B) shares the fabric with it. Thousands of cases; for each: nothing
// throws out of the device, no byte outside A's RAM changes (guard zones), B is never cut off and
// keeps routing, and A is cut off whenever its ring breaks a rule the device must catch.
// AIRLOCK_FUZZ_SEED / AIRLOCK_FUZZ_EPISODES reproduce or extend a run.
import { describe, expect, it } from "vitest";
import { silentLogger } from "../../../proto/src/log.ts";
import { Router } from "./router.ts";
import { GPA_BASE, SyntheticGuest, header } from "./synthetic-guest.ts";
import { RX_QUEUE, TX_QUEUE, VsockDevice } from "./vsock-device.ts";
import { Op } from "./vsock-packet.ts";

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const SEED = Number(process.env.AIRLOCK_FUZZ_SEED ?? 0x5eed);
const EPISODES = Number(process.env.AIRLOCK_FUZZ_EPISODES ?? 3000);
const Q = 8;
const MEM = 512 * 1024;
const GUARD = 4096;

describe("virtqueues under a hostile guest", () => {
  it(`survives ${EPISODES} episodes of malformed rings and packets (seed ${SEED})`, () => {
    const rnd = prng(SEED);
    const int = (n: number): number => Math.floor(rnd() * n);
    const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
    let cases = 0;
    let cutOff = 0;

    // Guest RAM is reused (zeroed) between episodes; router and devices are new each time.
    const ram = new Map([3, 4].map((cid) => [cid, new SyntheticGuest(cid, { queueSize: Q, memSize: MEM, guard: GUARD })]));
    for (let ep = 0; ep < EPISODES; ep++) {
      const router = new Router(silentLogger);
      const faults: number[] = [];
      const mk = (cid: number): SyntheticGuest => {
        const g = ram.get(cid)!;
        g.reset();
        const dev = new VsockDevice(cid, router, () => undefined, () => {
          faults.push(cid);
          router.vmDown(cid);
        }, silentLogger);
        router.addVm({ cid, groups: new Set(["g"]), udsPath: "/nonexistent/airlock-fuzz", device: dev });
        g.attach(dev);
        return g;
      };
      const a = mk(3);
      const b = mk(4);
      const ring = (): typeof a.tx => (rnd() < 0.7 ? a.tx : a.rx);
      const edgeAddr = (): number =>
        pick([0, GPA_BASE - 1, GPA_BASE, GPA_BASE + MEM - 1, GPA_BASE + MEM, GPA_BASE + MEM - 44, GPA_BASE + int(MEM), 2 ** 52, 2 ** 64 - 1, int(2 ** 32)]);
      const edgeLen = (): number => pick([0, 1, 43, 44, 45, 4096, 65536 + 44, 65537 + 44, MEM, 2 ** 32 - 1, int(70000)]);

      const steps = 1 + int(8);
      for (let s = 0; s < steps; s++) {
        cases++;
        let mustFault = false;
        const wasBroken = a.device!.broken;
        const action = int(10);
        try {
          if (action <= 2) {
            // A well-formed ring carrying a hostile packet header.
            const len = rnd() < 0.5 ? int(200) : int(70_000);
            const payload = Buffer.alloc(Math.min(len, 65536), 0x5a);
            const h = header({
              srcCid: rnd() < 0.8 ? 3 : pick([0, 1, 2, 4, 99, 2 ** 32 - 1]),
              dstCid: pick([3, 4, 4, 4, 5, 99, 2 ** 32 - 1]),
              srcPort: pick([1000, 1001, 0, 2 ** 32 - 1]),
              dstPort: pick([80, 81, 0]),
              op: int(10),
              type: rnd() < 0.9 ? 1 : int(4),
              flags: int(8),
              bufAlloc: pick([0, 4096, 256 * 1024, 2 ** 32 - 1]),
              fwdCnt: int(2 ** 32),
            });
            if (a.queuePacket(h, payload.length ? payload : undefined)) {
              // Sometimes lie about the length in the header after the fact.
              if (rnd() < 0.3) a.ram.writeUInt32LE(edgeLen(), 0); // scribbles somewhere in RAM, harmless
              a.device!.kick(TX_QUEUE);
            }
          } else if (action <= 6) {
            // Corrupt a descriptor.
            const r = ring();
            const i = int(Q);
            const field = int(5);
            const o = r.descOff + 16 * i;
            if (field === 0) {
              const v = edgeAddr();
              a.ram.writeUInt32LE(v % 2 ** 32, o);
              a.ram.writeUInt32LE(Math.floor(v / 2 ** 32) % 2 ** 32, o + 4);
            } else if (field === 1) a.ram.writeUInt32LE(edgeLen(), o + 8);
            else if (field === 2) a.ram.writeUInt16LE(int(8), o + 12);
            else if (field === 3) a.ram.writeUInt16LE(pick([i, int(Q), Q, 0xffff]), o + 14);
            else {
              // A chain that loops: head -> itself, published.
              a.writeDesc(r, i, GPA_BASE + 4096, 64, 1, i);
              a.publish(r, i);
              // On tx it is next in line; on rx earlier (good) buffers are used first.
              mustFault = r === a.tx;
            }
            if (field < 4 && rnd() < 0.6) a.publish(r, pick([i, int(Q)]));
            a.device!.kick(r === a.tx ? TX_QUEUE : RX_QUEUE);
            if (r === a.rx) {
              // B talks to A, so B's packets meet A's broken rx ring.
              b.send(header({ srcCid: 4, dstCid: 3, srcPort: 2000 + int(4), dstPort: 80, op: Op.REQUEST }));
            }
          } else if (action <= 8) {
            // Corrupt the avail ring: head out of range, or an index that jumps.
            const r = ring();
            if (rnd() < 0.5) {
              a.ram.writeUInt16LE(Q + int(0xffff - Q), r.availOff + 4 + 2 * (r.availIdx % Q));
              r.availIdx = (r.availIdx + 1) & 0xffff;
              a.ram.writeUInt16LE(r.availIdx, r.availOff + 2);
              mustFault = r === a.tx;
            } else {
              const lastAvail = r === a.tx ? (a.device as unknown as { tx: { nextAvail: number } | null }).tx?.nextAvail : undefined;
              const jump = Q + 1 + int(1000);
              a.ram.writeUInt16LE(((lastAvail ?? r.availIdx) + jump) & 0xffff, r.availOff + 2);
              mustFault = true;
            }
            a.device!.kick(r === a.tx ? TX_QUEUE : RX_QUEUE);
            if (r === a.rx) b.send(header({ srcCid: 4, dstCid: 3, srcPort: 3000 + int(4), dstPort: 80, op: Op.REQUEST }));
          } else {
            // Random bytes over a ring area.
            const r = ring();
            const o = pick([r.descOff, r.availOff, r.usedOff]) + int(16 * Q);
            a.ram.fill(int(256), o, Math.min(o + 1 + int(32), a.ram.length));
            a.device!.kick(r === a.tx ? TX_QUEUE : RX_QUEUE);
          }
          b.receive();
        } catch (err) {
          throw new Error(`case ${cases} (episode ${ep}, action ${action}) threw: ${(err as Error).stack}`);
        }
        expect(a.guardsIntact() && b.guardsIntact(), `guard zones changed in case ${cases}`).toBe(true);
        expect(faults.includes(4), `the well-behaved guest was cut off in case ${cases}`).toBe(false);
        if (mustFault && !wasBroken) expect(a.device!.broken, `malformed ring not caught in case ${cases} (action ${action})`).toBe(true);
        if (a.device!.broken) break;
      }
      if (a.device!.broken) cutOff++;
      expect(faults.filter((c) => c === 3).length).toBeLessThanOrEqual(1);
      // B still routes: a REQUEST to a CID nobody has comes back as RST.
      b.receive();
      b.send(header({ srcCid: 4, dstCid: 77, srcPort: 9, dstPort: 9, op: Op.REQUEST }));
      expect(b.receive().map((p) => p.hdr.op)).toContain(Op.RST);
      expect(b.device!.broken).toBe(false);
    }
    console.log(`ring fuzz: ${cases} cases, ${cutOff} episodes ended with the hostile guest cut off`);
    expect(cases).toBeGreaterThan(5000);
    expect(cutOff).toBeGreaterThan(EPISODES / 4);
  });
});
