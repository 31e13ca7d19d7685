// Vsock fabric throughput on synthetic rings in one process (no guests): guest A streams RW
// packets of 64 KiB over its tx ring, the fabric routes them into guest B's rx ring, B returns
// credit. rx buffers of 4 KiB are what Linux 6.1's virtio-vsock driver posts; 64 KiB shows the
// per-packet cost apart from the copy. Against plain memcpy (Buffer.copy) of the same volume with
// the same footprint, timed in alternation with the fabric runs so that load from other processes
// on the host hits both alike: the ratio is the figure (aim ≥ 1 GB/s and ≥ 0.25). Guest-to-guest
// figures under TCG come from test/fabric/fabric-guests.test.ts (bounded by the emulated guests).
import { silentLogger } from "../../proto/src/log.ts";
import { Router } from "../../host-tools/src/fabric/router.ts";
import { SyntheticGuest, header } from "../../host-tools/src/fabric/synthetic-guest.ts";
import { VsockDevice } from "../../host-tools/src/fabric/vsock-device.ts";
import { MAX_PAYLOAD, Op } from "../../host-tools/src/fabric/vsock-packet.ts";
import type { Reporter } from "./harness.ts";
import { throughput } from "./harness.ts";

const MiB = 1024 * 1024;
const TOTAL = 256 * MiB;
const RUNS = 7;
// Linux's default vsock buffer (SO_VM_SOCKETS_BUFFER_SIZE): 256 KiB of credit.
const B_BUF_ALLOC = 256 * 1024;

function pair(rxBufSize: number): { a: SyntheticGuest; b: SyntheticGuest } {
  const router = new Router(silentLogger);
  const mk = (cid: number): SyntheticGuest => {
    const g = new SyntheticGuest(cid, { queueSize: 256, rxBufSize, memSize: 32 * MiB });
    const dev = new VsockDevice(cid, router, () => undefined, (e) => {
      throw e;
    }, silentLogger);
    router.addVm({ cid, groups: new Set(["bench"]), udsPath: "/nonexistent", device: dev });
    g.attach(dev);
    return g;
  };
  const a = mk(3);
  const b = mk(4);
  a.send(header({ srcCid: 3, dstCid: 4, srcPort: 1000, dstPort: 80, op: Op.REQUEST }));
  b.receive();
  b.send(header({ srcCid: 4, dstCid: 3, srcPort: 80, dstPort: 1000, op: Op.RESPONSE, bufAlloc: B_BUF_ALLOC }));
  a.receive();
  // The guest's tx buffers get their contents once; the timed loop sends them as they are.
  a.fillTxPayloads(0x42);
  return { a, b };
}

/** Streams `total` bytes A -> B through the fabric with credit flow control; returns bytes B got. */
function stream(a: SyntheticGuest, b: SyntheticGuest, total: number): number {
  let sent = 0;
  let got = 0;
  let peerFwd = 0;
  let lastAnnounced = 0;
  const rw = header({ srcCid: 3, dstCid: 4, srcPort: 1000, dstPort: 80, op: Op.RW });
  while (got < total) {
    // A: fill its tx ring while B's credit allows.
    while (sent < total && a.txRoom() > 0 && B_BUF_ALLOC - (sent - peerFwd) >= MAX_PAYLOAD) {
      a.queuePacket(rw, MAX_PAYLOAD);
      sent += MAX_PAYLOAD;
    }
    a.device!.kick(1);
    // B: take what arrived and give credit back every 64 KiB.
    got += b.receiveCount();
    if (got - lastAnnounced >= 64 * 1024 || got >= total) {
      b.send(header({ srcCid: 4, dstCid: 3, srcPort: 80, dstPort: 1000, op: Op.CREDIT_UPDATE, bufAlloc: B_BUF_ALLOC, fwdCnt: got % 2 ** 32 }));
      lastAnnounced = got;
    }
    for (const p of a.receive(false)) if (p.hdr.op === Op.CREDIT_UPDATE) peerFwd = got - ((got - p.hdr.fwdCnt) >>> 0);
  }
  return got;
}

/** 64 KiB blocks from an 8 MiB window (like A's tx buffers) into a 16 MiB one (B's RAM). */
function memcpy(src: Buffer, dst: Buffer, total: number): void {
  for (let off = 0, i = 0; off < total; off += MAX_PAYLOAD, i++) {
    const s = (i * MAX_PAYLOAD) % src.length;
    src.copy(dst, (i * MAX_PAYLOAD) % dst.length, s, s + MAX_PAYLOAD);
  }
}

function timeMs(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;

export default async function fabricBench(report: Reporter): Promise<void> {
  const src = Buffer.alloc(8 * MiB, 1);
  const dst = Buffer.alloc(16 * MiB);
  const copyRates: number[] = [];
  for (const rxBuf of [4096, 65536]) {
    const rates: number[] = [];
    const ratios: number[] = [];
    // One warm-up pair plus one fresh pair per run (flow-control counters start at 0), all set
    // up (and their RAM touched) before the clock starts.
    const pairs = Array.from({ length: RUNS + 2 }, () => pair(rxBuf));
    // Warm-up long enough for the JIT to reach its optimizing tier on the whole path.
    stream(pairs[0]!.a, pairs[0]!.b, 512 * MiB);
    stream(pairs[1]!.a, pairs[1]!.b, 512 * MiB);
    memcpy(src, dst, 64 * MiB);
    for (let i = 2; i < RUNS + 2; i++) {
      let got = 0;
      const fabricMs = timeMs(() => (got = stream(pairs[i]!.a, pairs[i]!.b, TOTAL)));
      if (got !== TOTAL) throw new Error(`fabric delivered ${got} of ${TOTAL} bytes`);
      const copyMs = timeMs(() => memcpy(src, dst, TOTAL));
      rates.push(throughput(TOTAL, fabricMs));
      copyRates.push(throughput(TOTAL, copyMs));
      ratios.push(copyMs / fabricMs);
    }
    report.figure(`fabric guest->guest, ${rxBuf / 1024} KiB rx buffers`, median(rates) / 1e9, "GB/s", `${TOTAL / MiB} MiB, median of ${RUNS}`);
    report.ratio(`fabric (${rxBuf / 1024} KiB rx buffers) / memcpy, alternated runs`, median(ratios), "≥ 0.25 and ≥ 1 GB/s");
  }
  report.figure("memcpy (Buffer.copy, 64 KiB blocks)", median(copyRates) / 1e9, "GB/s", `${TOTAL / MiB} MiB, median of ${copyRates.length}`);
}
