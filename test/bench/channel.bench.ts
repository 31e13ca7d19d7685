// Secure channel throughput (one direction, over a Unix socket pair in this process, so the
// figure includes both encryption and decryption) against node:crypto's ChaCha20-Poly1305 doing
// the same seal+open of its records (64 KiB) with no streams — measured in the same run, the ratio is
// the figure. Plain socket throughput and handshake latency (Ed25519 test evidence, and emulated
// SEV-SNP evidence: report signing over the PSP stream plus full chain verification) for context.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Duplex } from "node:stream";
import v8 from "node:v8";
import vm from "node:vm";
import { EmulatedPsp, listenPsp } from "../../host-tools/src/attestation/emulated-psp.ts";
import { ReportVerifier } from "../../host-tools/src/attestation/verify.ts";
import { EmulatedPspProvider } from "../../proto/src/attestation/provider.ts";
import { encodePolicy } from "../../proto/src/attestation/report.ts";
import { MAX_PAYLOAD, secureClient, secureServer } from "../../proto/src/channel/index.ts";
import type { ChannelOptions } from "../../proto/src/channel/index.ts";
import { snpAttest, snpVerifyPeer } from "../../proto/src/channel/snp-evidence.ts";
import { testAttest, testIdentity, testVerifyPeer } from "../../proto/src/channel/test-evidence.ts";
import { connect, socketPair } from "../../proto/src/channel/test-sockets.ts";
import { medianMs, throughput } from "./harness.ts";
import type { Reporter } from "./harness.ts";

const SIZE = 64 * 1024 * 1024;
const RECORD = MAX_PAYLOAD; // the same records as the channel
const MB = 1e6;
const ROUNDS = 5;

/** Writes `data` in 1 MiB writes honouring backpressure; resolves when the reader has all of it. */
async function pump(writer: Duplex, reader: Duplex, data: Buffer): Promise<void> {
  let received = 0;
  const done = new Promise<void>((resolve, reject) => {
    reader.on("data", (c: Buffer) => {
      received += c.length;
      if (received === data.length) resolve();
    });
    reader.once("error", reject);
  });
  for (let off = 0; off < data.length; off += 1024 * 1024) {
    if (!writer.write(data.subarray(off, off + 1024 * 1024))) await new Promise((r) => writer.once("drain", r));
  }
  await done;
  reader.removeAllListeners("data");
}

/** A full GC between rounds (the raw round leaves 128 MiB of buffers behind). */
function collectGarbage(): void {
  v8.setFlagsFromString("--expose-gc");
  (vm.runInNewContext("gc") as () => void)();
}

export default async function (report: Reporter): Promise<void> {
  const data = randomBytes(SIZE);
  const key = randomBytes(32);

  // node:crypto alone: seal then open each 64 KiB record (what the channel must do at least).
  const rawRound = (): void => {
    const nonce = Buffer.alloc(12);
    for (let off = 0, n = 0; off < SIZE; off += RECORD, n++) {
      nonce.writeUInt32BE(n, 8);
      const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
      const ct = Buffer.concat([c.update(data.subarray(off, off + RECORD)), c.final()]);
      const d = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
      d.setAuthTag(c.getAuthTag());
      d.update(ct);
      d.final();
    }
  };

  const dir = mkdtempSync(path.join(tmpdir(), "airlock-bench-channel-"));
  try {
    const plain = await socketPair(dir);
    try {
      const ms = await medianMs(() => pump(plain.client, plain.server, data), 3, 1);
      report.figure("plain Unix socket (no channel)", throughput(SIZE, ms) / MB, "MB/s", "median of 3 × 64 MiB");
    } finally {
      await plain.close();
    }

    const agent = testIdentity("agent");
    const enforcer = testIdentity("enforcer");
    const testEvidence = { client: { attest: testAttest(agent), verifyPeer: testVerifyPeer(enforcer) }, server: { attest: testAttest(enforcer), verifyPeer: testVerifyPeer(agent) } };
    const open = async (opts: { client: ChannelOptions; server: ChannelOptions } = testEvidence): Promise<{ c: Duplex; s: Duplex; close: () => Promise<void> }> => {
      const sp = await socketPair(dir);
      const [c, s] = await Promise.all([secureClient(sp.client, opts.client), secureServer(sp.server, opts.server)]);
      const close = async (): Promise<void> => {
        c.stream.destroy();
        s.stream.destroy();
        await sp.close();
      };
      return { c: c.stream, s: s.stream, close };
    };

    const handshake = await medianMs(async () => (await open()).close(), 21, 3);
    report.figure("handshake over a Unix socket (Ed25519 test evidence)", handshake, "ms", "median of 21, connect included");

    // Emulated SEV-SNP: each side's report comes from the emulated PSP over a Unix socket, and
    // each verifier is long-lived (its chain cache warm after the first handshake), as in a room.
    const psp = EmulatedPsp.createInMemory({ product: "milan" });
    const room = randomBytes(32);
    const images = { firewall: randomBytes(48), sandbox: randomBytes(48) };
    const psps = await Promise.all(
      (["firewall", "sandbox"] as const).map((vm) => listenPsp(path.join(dir, `psp-${vm}.sock`), psp, { measurement: images[vm], hostData: room, policy: encodePolicy({ smt: true }) })),
    );
    try {
      const provider = (i: number): EmulatedPspProvider => new EmulatedPspProvider({ connect: () => connect(psps[i]!.path) });
      const verifier = new ReportVerifier({ trustRoots: [psp.arkPem] });
      const snp = {
        client: { attest: snpAttest(provider(1)), verifyPeer: snpVerifyPeer(verifier, { name: "firewall", measurement: images.firewall, hostData: room }) },
        server: { attest: snpAttest(provider(0)), verifyPeer: snpVerifyPeer(verifier, { name: "sandbox", measurement: images.sandbox, hostData: room }) },
      };
      const ms = await medianMs(async () => (await open(snp)).close(), 21, 3);
      report.figure("handshake with emulated SEV-SNP evidence", ms, "ms", "median of 21, reports over the PSP stream, chain cached");
    } finally {
      for (const l of psps) await l.close();
    }

    // Raw and channel rounds interleaved, so both see the same load on a shared machine.
    const ch = await open();
    try {
      const raw: number[] = [];
      const channel: number[] = [];
      const rawCpu: number[] = [];
      const channelCpu: number[] = [];
      // CPU time too: on a shared machine wall time follows the load, CPU time the work done.
      const cpuMs = async (fn: () => unknown, into: number[]): Promise<number> => {
        collectGarbage(); // each round pays for its own garbage, not the previous round's
        const c0 = process.cpuUsage();
        const ms = await medianMs(fn, 1, 0);
        const c = process.cpuUsage(c0);
        into.push((c.user + c.system) / 1000);
        return ms;
      };
      rawRound();
      await pump(ch.c, ch.s, data.subarray(0, 8 * 1024 * 1024)); // warm-up
      for (let round = 0; round < ROUNDS; round++) {
        raw.push(await cpuMs(rawRound, rawCpu));
        channel.push(await cpuMs(() => pump(ch.c, ch.s, data), channelCpu));
      }
      const median = (xs: number[]): number => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      const rawMBs = throughput(SIZE, median(raw)) / MB;
      const chMBs = throughput(SIZE, median(channel)) / MB;
      const note = `median of ${ROUNDS} interleaved rounds × 64 MiB`;
      report.figure(`node:crypto ChaCha20-Poly1305 seal+open, ${MAX_PAYLOAD / 1024} KiB records`, rawMBs, "MB/s", note);
      report.figure("secure channel, one direction (1 MiB writes)", chMBs, "MB/s", note);
      report.ratio("channel / raw seal+open (wall time)", chMBs / rawMBs);
      report.figure("raw seal+open CPU time per 64 MiB", median(rawCpu), "ms", note);
      report.figure("secure channel CPU time per 64 MiB (both ends)", median(channelCpu), "ms", note);
      report.ratio("channel / raw seal+open (by CPU time)", median(rawCpu) / median(channelCpu));
    } finally {
      await ch.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
