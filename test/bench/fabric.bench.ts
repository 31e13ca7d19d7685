// Vsock fabric throughput on synthetic rings in one process (no guests): guest A streams RW
// packets of 64 KiB over its tx ring, the fabric routes them into guest B's rx ring, B returns
// credit. rx buffers of 4 KiB are what Linux 6.1's virtio-vsock driver posts; 64 KiB shows the
// per-packet cost apart from the copy. Against plain memcpy (Buffer.copy) of the same volume with
// the same footprint, timed in alternation with the fabric runs so that load from other processes
// on the host hits both alike: the ratio is the figure (aim ≥ 1 GB/s and ≥ 0.25). Then, with two
// real TCG guests (test/fabric/guest.ts), guest-to-guest throughput and host->guest connection
// set-up latency, which the emulated guests bound (AIRLOCK_BENCH_NO_GUESTS=1 skips them).
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { silentLogger } from "../../proto/src/log.ts";
import { startFabric } from "../../host-tools/src/fabric/index.ts";
import { buildTestGuest, TestGuest } from "../fabric/guest.ts";
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
  if (process.env.AIRLOCK_BENCH_NO_GUESTS) return;
  await withGuests(report);
}

/** Two TCG guests on a real fabric: socat streams one way, then 20 host -> guest CONNECTs. */
async function withGuests(report: Reporter): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "airlock-fabric-bench-"));
  const fabric = startFabric({
    vms: [
      { cid: 3, socket: `${dir}/a.vhost`, udsPath: `${dir}/a.vsock`, groups: ["bench"] },
      { cid: 4, socket: `${dir}/b.vhost`, udsPath: `${dir}/b.vsock`, groups: ["bench"] },
    ],
  });
  const guests: TestGuest[] = [];
  try {
    await fabric.ready;
    const image = buildTestGuest();
    guests.push(new TestGuest(image, `${dir}/a.vhost`, 256), new TestGuest(image, `${dir}/b.vhost`, 256));
    const [a, b] = guests as [TestGuest, TestGuest];
    await Promise.all([a.booted(), b.booted()]);
    const mib = 64;
    await a.run(`dd if=/dev/urandom of=/tmp/blob bs=1M count=${mib} 2>/dev/null`, 120_000);
    b.start("socat -u VSOCK-LISTEN:1234 STDOUT | wc -c; echo BENCH_RECV_DONE");
    await new Promise((r) => setTimeout(r, 500));
    const t0 = process.hrtime.bigint();
    await a.run("socat -u OPEN:/tmp/blob,rdonly VSOCK-CONNECT:4:1234", 240_000);
    await b.waitFor(/BENCH_RECV_DONE/, 60_000);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    report.figure("guest->guest under TCG (socat, one way)", throughput(mib * MiB, ms) / MiB, "MiB/s", `${mib} MiB, bounded by the emulated guests`);

    b.start("socat VSOCK-LISTEN:7000,fork,reuseaddr OPEN:/dev/null");
    await new Promise((r) => setTimeout(r, 500));
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t = process.hrtime.bigint();
      await new Promise<void>((resolve, reject) => {
        const s = net.connect({ path: `${dir}/b.vsock` });
        s.setTimeout(10_000, () => s.destroy(new Error("timed out")));
        s.on("error", reject);
        s.on("connect", () => s.write("CONNECT 7000\n"));
        s.once("data", () => {
          times.push(Number(process.hrtime.bigint() - t) / 1e6);
          s.end();
          s.on("close", () => resolve());
        });
      });
    }
    report.figure("host->guest connection set-up under TCG (CONNECT to OK)", median(times), "ms", "median of 20");
  } catch (err) {
    report.log(`guest figures skipped: ${(err as Error).message.split("\n")[0]}`);
  } finally {
    await Promise.all(guests.map((g) => g.kill()));
    await fabric.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
