// The hostile-guest ring fuzzer, shared by its unit test (ring-fuzz.test.ts) and `npm run fuzz`
// (test/fuzz/run.ts). A guest (A, CID 3) writes garbage into its rings and packet headers while a
// well-behaved guest (B, CID 4) shares the fabric with it. An episode is a fresh router and
// devices over reused (zeroed) guest RAM and up to 8 steps ("cases"); after each step: nothing
// threw out of the device, no byte outside either guest's RAM changed (guard zones), B was not
// cut off, A was cut off whenever its ring broke a rule the device must catch, and nothing was
// logged as an internal error. After the episode B must still route.
import pino from "pino";
import { silentLogger } from "../../../proto/src/log.ts";
import { Router } from "./router.ts";
import { GPA_BASE, SyntheticGuest, header } from "./synthetic-guest.ts";
import { RX_QUEUE, TX_QUEUE, VsockDevice } from "./vsock-device.ts";
import { Op } from "./vsock-packet.ts";
import { ringSizes } from "./virtqueue.ts";

/** mulberry32: a small, fast, seedable generator of floats in [0, 1). */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

export const RING_QUEUE_SIZE = 8;
export const RING_MEM = 512 * 1024;
export const RING_GUARD = 4096;

export interface RingFailure {
  /** 1-based index of the failing case (step) over the fuzzer's whole run. */
  case: number;
  /** 0-based episode. */
  episode: number;
  /** What the step did (0..9), or -1 for the end-of-episode checks. */
  action: number;
  message: string;
  /** The hostile guest's ring areas when the step kicked the device (see ringSnapshotLayout). */
  input: Buffer;
}

/** How RingFuzzer.snapshot() lays out A's rings: tx desc, avail, used, then rx desc, avail, used. */
export function ringSnapshotLayout(q = RING_QUEUE_SIZE): string {
  const s = ringSizes(q);
  return `tx desc[${s.desc}] avail[${s.avail}] used[${s.used}], rx desc[${s.desc}] avail[${s.avail}] used[${s.used}]`;
}

export interface RingHooks {
  /** Called as each case starts, with its 1-based index (a watchdog's heartbeat). */
  caseStart?(index: number): void;
  /** Called right before a case kicks the device, with A's ring areas as they are then. */
  caseInput?(input: () => Buffer): void;
}

/** Records error-level logs: the device logs an internal fault of the routing code that way. */
function errorRecorder(): { log: typeof silentLogger; errors: string[] } {
  const errors: string[] = [];
  const log = pino({ level: "error" }, { write: (line: string) => void errors.push(line) });
  return { log, errors };
}

export class RingFuzzer {
  /** Cases (steps) run so far. */
  cases = 0;
  episodes = 0;
  /** Episodes that ended with the hostile guest cut off. */
  cutOff = 0;
  private readonly rnd: () => number;
  private readonly ram: Map<number, SyntheticGuest>;
  private readonly rec = errorRecorder();

  /** `rnd` is the one stream of randomness every episode draws from, in order. */
  constructor(rnd: () => number) {
    this.rnd = rnd;
    // Guest RAM is reused (zeroed) between episodes; router and devices are new each time.
    this.ram = new Map([3, 4].map((cid) => [cid, new SyntheticGuest(cid, { queueSize: RING_QUEUE_SIZE, memSize: RING_MEM, guard: RING_GUARD })]));
  }

  /** A's ring areas (the bytes the hostile guest controls that the device reads first). */
  snapshot(): Buffer {
    const a = this.ram.get(3)!;
    const s = ringSizes(RING_QUEUE_SIZE);
    const area = (off: number, len: number): Buffer => a.ram.subarray(off, off + len);
    return Buffer.concat([a.tx, a.rx].flatMap((r) => [area(r.descOff, s.desc), area(r.availOff, s.avail), area(r.usedOff, s.used)]));
  }

  /** Runs one episode; returns its first failure, or null. */
  episode(hooks: RingHooks = {}): RingFailure | null {
    const rnd = this.rnd;
    const int = (n: number): number => Math.floor(rnd() * n);
    const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
    const Q = RING_QUEUE_SIZE;
    const MEM = RING_MEM;
    const ep = this.episodes++;
    const router = new Router(silentLogger);
    const faults: number[] = [];
    this.rec.errors.length = 0;
    const mk = (cid: number): SyntheticGuest => {
      const g = this.ram.get(cid)!;
      g.reset();
      const dev = new VsockDevice(
        cid,
        router,
        () => undefined,
        () => {
          faults.push(cid);
          router.vmDown(cid);
        },
        this.rec.log,
      );
      router.addVm({ cid, groups: new Set(["g"]), udsPath: "/nonexistent/airlock-fuzz", device: dev });
      g.attach(dev);
      return g;
    };
    const a = mk(3);
    const b = mk(4);
    const fail = (action: number, message: string): RingFailure => ({ case: this.cases, episode: ep, action, message, input: this.snapshot() });
    const ring = (): typeof a.tx => (rnd() < 0.7 ? a.tx : a.rx);
    const edgeAddr = (): number =>
      pick([0, GPA_BASE - 1, GPA_BASE, GPA_BASE + MEM - 1, GPA_BASE + MEM, GPA_BASE + MEM - 44, GPA_BASE + int(MEM), 2 ** 52, 2 ** 64 - 1, int(2 ** 32)]);
    const edgeLen = (): number => pick([0, 1, 43, 44, 45, 4096, 65536 + 44, 65537 + 44, MEM, 2 ** 32 - 1, int(70000)]);
    const kick = (queue: number): void => {
      hooks.caseInput?.(() => this.snapshot());
      a.device!.kick(queue);
    };

    const steps = 1 + int(8);
    for (let s = 0; s < steps; s++) {
      this.cases++;
      hooks.caseStart?.(this.cases);
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
            kick(TX_QUEUE);
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
          kick(r === a.tx ? TX_QUEUE : RX_QUEUE);
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
          kick(r === a.tx ? TX_QUEUE : RX_QUEUE);
          if (r === a.rx) b.send(header({ srcCid: 4, dstCid: 3, srcPort: 3000 + int(4), dstPort: 80, op: Op.REQUEST }));
        } else {
          // Random bytes over a ring area.
          const r = ring();
          const o = pick([r.descOff, r.availOff, r.usedOff]) + int(16 * Q);
          a.ram.fill(int(256), o, Math.min(o + 1 + int(32), a.ram.length));
          kick(r === a.tx ? TX_QUEUE : RX_QUEUE);
        }
        b.receive();
      } catch (err) {
        return fail(action, `case ${this.cases} (episode ${ep}, action ${action}) threw: ${(err as Error).stack ?? String(err)}`);
      }
      if (!(a.guardsIntact() && b.guardsIntact())) return fail(action, `guard zones changed in case ${this.cases}`);
      if (faults.includes(4)) return fail(action, `the well-behaved guest was cut off in case ${this.cases}`);
      if (mustFault && !wasBroken && !a.device!.broken) return fail(action, `malformed ring not caught in case ${this.cases} (action ${action})`);
      if (this.rec.errors.length > 0) return fail(action, `internal error logged in case ${this.cases}: ${this.rec.errors[0]!.trim()}`);
      if (a.device!.broken) break;
    }
    if (a.device!.broken) this.cutOff++;
    if (faults.filter((c) => c === 3).length > 1) return fail(-1, `the hostile guest was reported cut off ${faults.filter((c) => c === 3).length} times in episode ${ep}`);
    // B still routes: a REQUEST to a CID nobody has comes back as RST.
    try {
      b.receive();
      b.send(header({ srcCid: 4, dstCid: 77, srcPort: 9, dstPort: 9, op: Op.REQUEST }));
      if (!b.receive().map((p) => p.hdr.op).includes(Op.RST)) return fail(-1, `the well-behaved guest stopped routing after episode ${ep} (no RST for a REQUEST to an unknown CID)`);
    } catch (err) {
      return fail(-1, `the well-behaved guest's routing check threw after episode ${ep}: ${(err as Error).stack ?? String(err)}`);
    }
    if (b.device!.broken) return fail(-1, `the well-behaved guest's device is cut off after episode ${ep}`);
    return null;
  }
}
