// Secure channel throughput (one direction, over a Unix socket pair in this process, so the
// figure includes both encryption and decryption) against node:crypto's ChaCha20-Poly1305 doing
// the same seal+open of 64 KiB records with no streams — measured in the same run, the ratio is
// the figure. Plain socket throughput and handshake latency (test evidence) for context.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Duplex } from "node:stream";
import { secureClient, secureServer } from "../../proto/src/channel/index.ts";
import { testAttest, testIdentity, testVerifyPeer } from "../../proto/src/channel/test-evidence.ts";
import { socketPair } from "../../proto/src/channel/test-sockets.ts";
import { medianMs, throughput } from "./harness.ts";
import type { Reporter } from "./harness.ts";

const SIZE = 64 * 1024 * 1024;
const RECORD = 64 * 1024;
const MB = 1e6;

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

export default async function (report: Reporter): Promise<void> {
  const data = randomBytes(SIZE);
  const key = randomBytes(32);

  // node:crypto alone: seal then open each 64 KiB record (what the channel must do at least).
  const raw = await medianMs(() => {
    const nonce = Buffer.alloc(12);
    for (let off = 0, n = 0; off < SIZE; off += RECORD, n++) {
      nonce.writeUInt32BE(n, 8);
      const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
      const ct = Buffer.concat([c.update(data.subarray(off, off + RECORD)), c.final()]);
      const d = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
      d.setAuthTag(c.getAuthTag());
      Buffer.concat([d.update(ct), d.final()]);
    }
  }, 3, 1);
  const rawMBs = throughput(SIZE, raw) / MB;
  report.figure("node:crypto ChaCha20-Poly1305 seal+open, 64 KiB records", rawMBs, "MB/s", "median of 3 × 64 MiB");

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
    const open = async (): Promise<{ c: Duplex; s: Duplex; close: () => Promise<void> }> => {
      const sp = await socketPair(dir);
      const [c, s] = await Promise.all([
        secureClient(sp.client, { attest: testAttest(agent), verifyPeer: testVerifyPeer(enforcer) }),
        secureServer(sp.server, { attest: testAttest(enforcer), verifyPeer: testVerifyPeer(agent) }),
      ]);
      const close = async (): Promise<void> => {
        c.stream.destroy();
        s.stream.destroy();
        await sp.close();
      };
      return { c: c.stream, s: s.stream, close };
    };

    const handshake = await medianMs(async () => (await open()).close(), 21, 3);
    report.figure("handshake over a Unix socket (Ed25519 test evidence)", handshake, "ms", "median of 21, connect included");

    const ch = await open();
    try {
      const ms = await medianMs(() => pump(ch.c, ch.s, data), 3, 1);
      const chMBs = throughput(SIZE, ms) / MB;
      report.figure("secure channel, one direction", chMBs, "MB/s", "median of 3 × 64 MiB, 1 MiB writes");
      report.ratio("channel / raw seal+open", chMBs / rawMBs);
    } finally {
      await ch.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
