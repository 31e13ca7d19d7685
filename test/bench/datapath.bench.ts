// Issue 12, points 2 and 6: the data path into the sandbox, hop by hop, in real guests under TCG.
// A room (busybox wc -w) takes one input of DATAPATH_MIB; the firewall times each input's hops in
// its audit trail (firewall-vm/src/enforcer/input-timing.ts: waiting for the host's bytes, and for
// the agent taking them) and the agent its payload opening and tmpfs writes; the host file read is timed
// here on the same file. Each hop is printed in MiB/s and the slowest named. The yardstick is
// guest → guest socat over a fabric of its own (two test guests, as fabric.bench.ts), run in
// alternation with the room in this same process: inputs ÷ socat is the figure (aim ≥ 0.8).
// Then point 6: a 256 MiB corpus through the word-count room end to end with its breakdown, and
// a room with 10 inputs of 1 MiB each (AIRLOCK_BENCH_DATAPATH_ROOMS=0 skips them).
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startFabric } from "../../host-tools/src/fabric/index.ts";
import { buildTestGuest, TestGuest } from "../fabric/guest.ts";
import { prepareRoom, runRoom, type PreparedRoom, type RoomRun } from "./word-count-room.ts";
import type { Reporter } from "./harness.ts";
import { openSealed } from "../room/room-setup.ts";

const MiB = 1024 * 1024;
const DATAPATH_MIB = Number(process.env.AIRLOCK_BENCH_DATAPATH_MIB ?? 64);
const ROUNDS = Number(process.env.AIRLOCK_BENCH_DATAPATH_ROUNDS ?? 3);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Reads a file in 1 MiB pieces (as host-link.ts does); returns ms. */
function readFileMs(file: string): number {
  const buf = Buffer.allocUnsafe(MiB);
  const t0 = performance.now();
  const fd = openSync(file, "r");
  try {
    while (readSync(fd, buf, 0, buf.length, null) > 0);
  } finally {
    closeSync(fd);
  }
  return performance.now() - t0;
}

/** Two test guests on a fabric of their own: `mib` MiB of random bytes guest A → guest B with socat. */
async function socatYardstick(mib: number): Promise<{ run: () => Promise<number>; stop: () => Promise<void> }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "airlock-datapath-socat-"));
  const fabric = startFabric({
    vms: [
      { cid: 3, socket: `${dir}/a.vhost`, udsPath: `${dir}/a.vsock`, groups: ["bench"] },
      { cid: 4, socket: `${dir}/b.vhost`, udsPath: `${dir}/b.vsock`, groups: ["bench"] },
    ],
  });
  await fabric.ready;
  const image = buildTestGuest();
  const guests = [new TestGuest(image, `${dir}/a.vhost`, 256 + mib), new TestGuest(image, `${dir}/b.vhost`, 256)] as const;
  const stop = async (): Promise<void> => {
    await Promise.all(guests.map((g) => g.kill()));
    await fabric.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const [a, b] = guests;
    await Promise.all([a.booted(), b.booted()]);
    await a.run(`dd if=/dev/urandom of=/tmp/blob bs=1M count=${mib} 2>/dev/null`, 120_000);
    let round = 0;
    const run = async (): Promise<number> => {
      const marker = `SOCAT_DONE_${round++}`;
      b.start(`socat -u VSOCK-LISTEN:1234 STDOUT | wc -c; echo ${marker}`);
      await new Promise((r) => setTimeout(r, 500));
      const t0 = performance.now();
      await a.run("socat -u OPEN:/tmp/blob,rdonly VSOCK-CONNECT:4:1234", 240_000);
      await b.waitFor(new RegExp(marker), 60_000);
      return (mib * MiB) / MiB / ((performance.now() - t0) / 1000);
    };
    return { run, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

function reportRun(report: Reporter, label: string, run: RoomRun, mib: number): void {
  report.figure(`${label}, end to end`, run.totalSeconds, "s");
  for (const [step, seconds, note] of run.steps) report.figure(step, seconds, "s", note);
  report.figure(`${label}: inputs in, throughput`, mib / run.inputsSeconds, "MiB/s", "host clock, sandbox ready → workload started");
}

export default async function bench(report: Reporter): Promise<void> {
  report.log(`input ${DATAPATH_MIB} MiB, ${ROUNDS} alternated rounds; the host is shared with other work, so figures are noisy`);
  const room = await prepareRoom({ name: "datapath", inputsMiB: [DATAPATH_MIB], workload: "datapath" });
  const yard = await socatYardstick(DATAPATH_MIB);
  const socat: number[] = [];
  const inputs: number[] = [];
  const hop: Record<string, number[]> = { file: [], host: [], agent: [], open: [], write: [], whole: [], aead256: [], aead64: [] };
  try {
    const encrypted = statSync(room.inputFiles[0]!).size;
    for (let i = 0; i < ROUNDS; i++) {
      const order = i % 2 === 0 ? ["socat", "room"] : ["room", "socat"];
      for (const which of order) {
        if (which === "socat") {
          socat.push(await yard.run());
          continue;
        }
        hop.file!.push(encrypted / MiB / (readFileMs(room.inputFiles[0]!) / 1000));
        const run = await runRoom(room);
        const h = run.hops[0]!;
        const rate = (bytes: number, ms: number): number => bytes / MiB / (Math.max(ms, 1) / 1000);
        inputs.push(DATAPATH_MIB / run.inputsSeconds);
        hop.host!.push(rate(encrypted, h.hostMs));
        hop.open!.push(rate(h.bytes, h.openMs));
        hop.agent!.push(rate(h.bytes, h.agentMs));
        hop.write!.push(rate(h.bytes, h.writeMs));
        hop.whole!.push(rate(h.bytes, h.ms));
        // The sandbox's own measure of the cipher, from the sealed output (the bench is its analyst).
        const csv = openSealed(path.join(run.outDir, "counts.tar.age"), room.analystKey).get("counts.csv")!.toString();
        for (const kib of [256, 64]) hop[`aead${kib}`]!.push(Number(new RegExp(`^aead${kib},([\\d.]+)$`, "m").exec(csv)![1]));
        report.log(`round ${i}: inputs ${inputs.at(-1)!.toFixed(2)} MiB/s; firewall: ${JSON.stringify(h)}`);
      }
    }
  } finally {
    await yard.stop();
    room.remove();
  }
  const note = `median of ${ROUNDS}`;
  const hops: [string, string][] = [
    ["file", "hop: host file read (page cache)"],
    ["host", "hop: host → firewall (fabric, vsock, framing; firewall waiting)"],
    ["agent", "hop: firewall → agent (channel, vsock; firewall waiting)"],
    ["open", "hop: agent opens the age payload"],
    ["write", "hop: agent → tmpfs (agent's writes)"],
  ];
  for (const [k, label] of hops) report.figure(label, median(hop[k]!), "MiB/s", note);
  const slowest = hops.filter(([k]) => k !== "file").reduce((a, b) => (median(hop[a[0]]!) <= median(hop[b[0]]!) ? a : b));
  report.log(`slowest hop: ${slowest[1].replace(/^hop: /, "")}`);
  report.figure(`slowest hop is ${slowest[0]}`, median(hop[slowest[0]]!), "MiB/s", note);
  report.figure("input through the firewall (request → placed)", median(hop.whole!), "MiB/s", note);
  // For context: the cipher each input byte goes through once, in the sandbox (age's 64 KiB chunks).
  for (const kib of [256, 64]) report.figure(`ChaCha20-Poly1305 in a guest, ${kib} KiB records (node:crypto)`, median(hop[`aead${kib}`]!), "MiB/s", note);
  report.figure("inputs in (host → firewall → sandbox opens → tmpfs)", median(inputs), "MiB/s", `${note}, host clock`);
  report.figure("guest → guest socat (yardstick)", median(socat), "MiB/s", note);
  report.ratio("inputs ÷ socat, alternated runs", median(inputs) / median(socat), "≥ 0.8");

  if (process.env.AIRLOCK_BENCH_DATAPATH_ROOMS === "0") return;
  const rooms: [string, PreparedRoom, number][] = [];
  try {
    rooms.push(["word-count, 256 MiB corpus (wc -w)", await prepareRoom({ name: "large", inputsMiB: [256], workload: "wc", timeoutSeconds: 300 }), 256]);
    rooms.push(["word-count, 10 inputs of 1 MiB", await prepareRoom({ name: "ten-inputs", inputsMiB: Array.from({ length: 10 }, () => 1), workload: "wc" }), 10]);
    for (const [label, prepared, mib] of rooms) reportRun(report, label, await runRoom(prepared), mib);
  } finally {
    for (const [, r] of rooms) r.remove();
  }
}
