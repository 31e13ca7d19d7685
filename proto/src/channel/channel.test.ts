// The secure channel over real Unix sockets, with a relay standing where the untrusted host's
// fabric stands (test-sockets.ts). Evidence is the test-only Ed25519 kind (test-evidence.ts).
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Duplex } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { readMessages, sendBytes, sendMessage } from "../control.ts";
import { plainMessage } from "../test-wire.ts";
import { FirewallToHostSchema } from "../../gen/airlock/v1/control_pb.ts";
import { AirlockError } from "../errors.ts";
import { secureClient, secureServer } from "./index.ts";
import type { ChannelOptions, SecureChannel } from "./index.ts";
import { signTestEvidence, testAttest, testIdentity, testVerifyPeer } from "./test-evidence.ts";
import { connect, listen, socketPair, startRelay } from "./test-sockets.ts";
import type { FrameHook } from "./test-sockets.ts";

const agent = testIdentity("sandbox agent");
const enforcer = testIdentity("enforcer");
const stranger = testIdentity("stranger");

const clientOptions = (over: Partial<ChannelOptions> = {}): ChannelOptions => ({ attest: testAttest(agent), verifyPeer: testVerifyPeer(enforcer), timeoutMs: 5000, ...over });
const serverOptions = (over: Partial<ChannelOptions> = {}): ChannelOptions => ({ attest: testAttest(enforcer), verifyPeer: testVerifyPeer(agent), timeoutMs: 5000, ...over });

let dir: string;
const cleanups: (() => unknown)[] = [];
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), "airlock-channel-"));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Reads a stream to its end; rejects with its error. */
function readAll(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on("data", (c: Buffer) => parts.push(c));
    s.once("end", () => resolve(Buffer.concat(parts)));
    s.once("error", reject);
    s.resume();
  });
}

/** Waits (bounded) until the listener has accepted the connection. */
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  for (const t0 = Date.now(); !cond(); await new Promise((r) => setTimeout(r, 5))) {
    if (Date.now() - t0 > ms) throw new Error("the listener accepted no connection in time");
  }
}

function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

async function pair(client = clientOptions(), server = serverOptions()): Promise<{ c: SecureChannel; s: SecureChannel }> {
  const sp = await socketPair(dir);
  cleanups.push(sp.close);
  const [c, s] = await Promise.all([secureClient(sp.client, client), secureServer(sp.server, server)]);
  cleanups.push(() => c.stream.destroy(), () => s.stream.destroy());
  // Tearing one end down errors the other (truncation): expected at cleanup, not a test failure.
  for (const x of [c, s]) x.stream.on("error", () => undefined);
  return { c, s };
}

/** Outcome of one side of an exchange: what it read, or how it failed. */
type Outcome = { ok: true; received: Buffer } | { ok: false; error: unknown };

const settle = (p: Promise<Buffer>): Promise<Outcome> => p.then((received) => ({ ok: true as const, received }), (error: unknown) => ({ ok: false as const, error }));

const CLIENT_MSG = Buffer.from("client says: the quick brown fox");
const SERVER_MSG = Buffer.from("server says: jumps over the lazy dog");

/**
 * One client↔server exchange through a relay with the given hooks: the client writes CLIENT_MSG
 * and ends, the server reads to the end then answers SERVER_MSG and ends. Bounded: after
 * `boundMs` the relay cuts every connection (a stalled side then fails as truncated).
 */
async function exchange(hooks: { c2s?: FrameHook; s2c?: FrameHook }, over: { client?: Partial<ChannelOptions>; server?: Partial<ChannelOptions> } = {}, boundMs = 1500) {
  let serverSide: Promise<Outcome> | undefined;
  const l = await listen(dir, (sock) => {
    serverSide = settle(
      (async () => {
        const { stream } = await secureServer(sock, serverOptions({ timeoutMs: boundMs, ...over.server }));
        const got = await readAll(stream);
        stream.end(SERVER_MSG);
        return got;
      })(),
    );
  });
  const relay = await startRelay(dir, l.path, hooks);
  const sock = await connect(relay.path);
  const timer = setTimeout(() => relay.destroyAll(), boundMs);
  try {
    const clientSide = await settle(
      (async () => {
        const { stream } = await secureClient(sock, clientOptions({ timeoutMs: boundMs, ...over.client }));
        stream.end(CLIENT_MSG);
        return readAll(stream);
      })(),
    );
    await until(() => serverSide !== undefined);
    return { client: clientSide, server: (await serverSide)!, relay };
  } finally {
    clearTimeout(timer);
    sock.destroy();
    await relay.close();
    await l.close();
  }
}

const code = (o: Outcome): string | undefined => (o.ok ? undefined : o.error instanceof AirlockError ? o.error.code : `not an AirlockError: ${String(o.error)}`);

describe("secure channel", () => {
  it("round-trips small messages both ways, with half-close", async () => {
    const r = await exchange({});
    expect(r.server).toEqual({ ok: true, received: CLIENT_MSG });
    expect(r.client).toEqual({ ok: true, received: SERVER_MSG });
  });

  it("returns the peer's identity as verifyPeer named it", async () => {
    const { c, s } = await pair();
    expect(c.peer.name).toBe("enforcer");
    expect(s.peer.name).toBe("sandbox agent");
  });

  it("carries control.ts messages unchanged (the integration is the stream swap)", async () => {
    const { c, s } = await pair();
    const payload = randomBytes(300_000);
    await sendMessage(c.stream, FirewallToHostSchema, { case: "openFile", value: { output: "out", path: "result.csv", size: BigInt(payload.length) } });
    await sendBytes(c.stream, payload);
    c.stream.end();
    const got: unknown[] = [];
    const data: Buffer[] = [];
    for await (const m of readMessages(s.stream, FirewallToHostSchema, "the peer")) {
      if (m.kind === "message") got.push(plainMessage(m.message));
      else data.push(m.data);
    }
    expect(got).toEqual([{ type: "openFile", output: "out", path: "result.csv", size: payload.length }]);
    expect(Buffer.concat(data).equals(payload)).toBe(true);
  });

  it("carries 64 MiB each way with equal SHA-256", async () => {
    const { c, s } = await pair();
    // 4 MiB of random bytes repeated (making 128 MiB of random bytes is the slow part otherwise).
    const big = (): Buffer => Buffer.concat(Array<Buffer>(16).fill(randomBytes(4 * 1024 * 1024)));
    const up = big();
    const down = big();
    expect(up).toHaveLength(64 * 1024 * 1024);
    const [gotUp, gotDown] = await Promise.all([readAll(s.stream), readAll(c.stream), c.stream.end(up), s.stream.end(down)]);
    expect(sha256(gotUp)).toBe(sha256(up));
    expect(sha256(gotDown)).toBe(sha256(down));
  }, 60_000);

  it("never shows a marker in clear on the wire (and the relay does see clear text when it is sent so)", async () => {
    const marker = Buffer.from("AIRLOCK-MARKER-7f3c9e1d-never-in-clear");
    let serverGot: Promise<Buffer> | undefined;
    const l = await listen(dir, (sock) => {
      // The second connection (the control below) is not a channel: its failure is expected.
      if (serverGot !== undefined) return void secureServer(sock, serverOptions()).catch(() => undefined);
      serverGot = secureServer(sock, serverOptions()).then(async ({ stream }) => {
        const got = readAll(stream);
        stream.end(marker);
        return got;
      });
    });
    cleanups.push(l.close);
    const relay = await startRelay(dir, l.path);
    cleanups.push(relay.close);
    const { stream } = await secureClient(await connect(relay.path), clientOptions());
    // The marker whole, split across writes, and inside a large record.
    stream.write(marker);
    stream.write(marker.subarray(0, 10));
    stream.write(marker.subarray(10));
    stream.end(Buffer.concat([randomBytes(100_000), marker, randomBytes(100_000)]));
    const clientGot = await readAll(stream);
    expect(clientGot).toEqual(marker);
    expect((await serverGot!).indexOf(marker)).toBe(0);
    const wire = Buffer.concat([...relay.wire.c2s, ...relay.wire.s2c]);
    expect(wire.length).toBeGreaterThan(200_000);
    expect(wire.indexOf(marker)).toBe(-1);
    // The evidence travels encrypted too: neither side's identity key shows on the wire.
    expect(wire.indexOf(agent.publicRaw)).toBe(-1);
    expect(wire.indexOf(enforcer.publicRaw)).toBe(-1);

    // Control: the same relay sees a marker sent without the channel.
    const plain = await startRelay(dir, l.path);
    cleanups.push(plain.close);
    const raw = await connect(plain.path);
    await sendBytes(raw, Buffer.from(marker));
    await new Promise((r) => setTimeout(r, 50));
    raw.destroy();
    expect(Buffer.concat(plain.wire.c2s).indexOf(marker)).toBeGreaterThan(0);
  });

  it("fails on a single altered byte anywhere on the wire, in either direction", async () => {
    // A clean run measures each direction's bytes; then one run per byte position (bit 0 flipped).
    const clean = await exchange({});
    const sizes = { c2s: Buffer.concat(clean.relay.wire.c2s).length, s2c: Buffer.concat(clean.relay.wire.s2c).length };
    const flipAt = (offset: number): FrameHook => {
      let start = 0;
      return (frame) => {
        if (offset >= start && offset < start + frame.length) frame[offset - start]! ^= 0x01;
        start += frame.length;
        return [frame];
      };
    };
    let runs = 0;
    // Every third byte of the handshake and the records (the stride keeps the suite within
    // seconds); the phase changes from run to run, so over runs every byte is covered.
    // AIRLOCK_TAMPER_STRIDE=1 tries every byte in one run.
    const stride = Number(process.env.AIRLOCK_TAMPER_STRIDE ?? 3);
    const phase = Math.floor(Math.random() * stride);
    for (const dirName of ["c2s", "s2c"] as const) {
      for (let off = phase; off < sizes[dirName]; off += stride) {
        const r = await exchange({ [dirName]: flipAt(off) }, {}, 600);
        runs++;
        const ctx = `${dirName} byte ${off} (phase ${phase})`;
        expect(r.client.ok && r.server.ok, ctx).toBe(false);
        // Nothing altered is ever delivered as good data.
        if (r.server.ok) expect(r.server.received, ctx).toEqual(CLIENT_MSG);
        if (r.client.ok) expect(r.client.received, ctx).toEqual(SERVER_MSG);
        for (const o of [r.client, r.server]) if (!o.ok) expect(o.error, ctx).toBeInstanceOf(AirlockError);
      }
    }
    expect(runs).toBeGreaterThan(450 / stride);
  }, 120_000);

  // After the handshake the client's records are: DATA, CLOSE (the server's: FINISHED first).
  const afterHandshake = 2; // c2s frames: hello, evidence
  it.each([
    ["dropped", (f: Buffer, i: number) => (i === afterHandshake ? [] : [f])],
    ["duplicated", (f: Buffer, i: number) => (i === afterHandshake ? [f, f] : [f])],
  ])("fails when a record is %s", async (_name, hook) => {
    const r = await exchange({ c2s: hook });
    expect(r.server.ok).toBe(false);
    expect(code(r.server)).toBe("CRYPTO");
  });

  it("fails when records are reordered", async () => {
    let held: Buffer | undefined;
    const r = await exchange({
      c2s: (f, i) => {
        if (i === afterHandshake) {
          held = f;
          return [];
        }
        return i === afterHandshake + 1 ? [f, held!] : [f];
      },
    });
    expect(code(r.server)).toBe("CRYPTO");
  });

  it("fails when a record from another session is spliced in", async () => {
    const other = await exchange({ c2s: (f) => [f] });
    const foreignData = other.relay.wire.c2s[afterHandshake]!;
    const r = await exchange({ c2s: (f, i) => (i === afterHandshake ? [foreignData] : [f]) });
    expect(code(r.server)).toBe("CRYPTO");
  });

  it("reports truncation (the wire ends before the authenticated close) as an error, not an end", async () => {
    // Cut the server's direction right after FINISHED and its first data record: the client sees
    // a clean FIN on the socket but no CLOSE record.
    const r = await exchange({ s2c: (f, i) => (i === 3 ? "cut" : [f]) });
    expect(code(r.client)).toBe("CRYPTO");
    expect((r.client as { error: Error }).error.message).toMatch(/truncated/);
  });

  it("reports a wire that ends inside a record as truncation", async () => {
    const r = await exchange({ s2c: (f, i) => (i === 3 ? [f.subarray(0, 10)] : i === 4 ? "cut" : [f]) });
    expect(code(r.client)).toBe("CRYPTO");
    expect((r.client as { error: Error }).error.message).toMatch(/partial record.*truncated/);
  });

  it("refuses an oversized frame without buffering it", async () => {
    const r = await exchange({
      c2s: (f, i) => {
        if (i !== afterHandshake) return [f];
        f.writeUInt32BE(0x7fffffff, 0);
        return [f];
      },
    });
    expect(code(r.server)).toBe("GUEST_PROTOCOL");
    expect((r.server as { error: Error }).error.message).toMatch(/exceeds the limit/);
  });

  it("fails when the host flips the top bit of a hello's X25519 key (X25519 itself ignores that bit)", async () => {
    const r = await exchange({
      s2c: (f, i) => {
        if (i === 0) f[4 + 1 + 31]! ^= 0x80;
        return [f];
      },
    });
    expect(r.client.ok || r.server.ok).toBe(false);
    expect(code(r.client)).toBe("CRYPTO");
  });

  it("refuses a peer's low-order X25519 key", async () => {
    const r = await exchange({ s2c: (f, i) => (i === 0 ? [Buffer.concat([f.subarray(0, 5), Buffer.alloc(32), f.subarray(37)])] : [f]) });
    expect(code(r.client)).toBe("GUEST_PROTOCOL");
    expect((r.client as { error: Error }).error.message).toMatch(/X25519/);
  });

  it("refuses a client whose evidence fails, on both sides", async () => {
    const r = await exchange({}, { client: { attest: testAttest(stranger) } });
    expect(code(r.server)).toBe("REPORT_REJECTED");
    expect((r.server as { error: Error }).error.message).toMatch(/client's evidence was refused.*stranger/);
    expect(code(r.client)).toBe("REPORT_REJECTED");
    expect((r.client as { error: Error }).error.message).toMatch(/server refused the handshake/);
  });

  it("refuses a server whose evidence fails, on both sides", async () => {
    const r = await exchange({}, { server: { attest: testAttest(stranger) } });
    expect(code(r.client)).toBe("REPORT_REJECTED");
    expect((r.client as { error: Error }).error.message).toMatch(/server's evidence was refused/);
    expect(code(r.server)).toBe("REPORT_REJECTED");
    expect((r.server as { error: Error }).error.message).toMatch(/client refused the handshake/);
  });

  it("refuses evidence made for another session (transcript mismatch)", async () => {
    // The genuine agent's evidence from an earlier session, replayed into a new one.
    let captured: Buffer | undefined;
    await exchange({}, { client: { attest: async (rd) => (captured = signTestEvidence(agent, rd)) } });
    expect(captured).toBeDefined();
    const r = await exchange({}, { client: { attest: async () => captured! } });
    expect(code(r.server)).toBe("REPORT_REJECTED");
    expect((r.server as { error: Error }).error.message).toMatch(/does not bind this session/);
    expect(r.client.ok).toBe(false);
  });

  it("refuses evidence that binds the other role's report data (reflection)", async () => {
    const { reportDataFor } = await import("./protocol.ts");
    const r = await exchange({}, { client: { attest: async (rd) => signTestEvidence(agent, reportDataFor("server", rd)) } });
    expect(code(r.server)).toBe("REPORT_REJECTED");
  });

  it("times out a handshake whose peer says nothing, on either side", async () => {
    const silent = await listen(dir, () => undefined);
    cleanups.push(silent.close);
    const sock = await connect(silent.path);
    const t0 = Date.now();
    await expect(secureClient(sock, clientOptions({ timeoutMs: 200 }))).rejects.toMatchObject({ code: "TIMEOUT" });
    expect(Date.now() - t0).toBeLessThan(2000);
    // The channel hung up on the silent peer (within a bound).
    const closed = await new Promise((r) => {
      if (sock.closed) return r(true);
      sock.once("close", () => r(true));
      setTimeout(() => r(false), 2000);
    });
    expect(closed).toBe(true);

    let serverResult: Promise<unknown> | undefined;
    const l = await listen(dir, (s) => (serverResult = secureServer(s, serverOptions({ timeoutMs: 200 }))));
    cleanups.push(l.close);
    const mute = await connect(l.path);
    cleanups.push(() => mute.destroy());
    await until(() => serverResult !== undefined);
    await expect(serverResult).rejects.toMatchObject({ code: "TIMEOUT" });
  });

  it("times out when attestation hangs", async () => {
    const r = await exchange({}, { server: { attest: () => new Promise(() => undefined), timeoutMs: 200 } }, 3000);
    expect(code(r.server)).toBe("TIMEOUT");
    expect(r.client.ok).toBe(false);
  });

  it("does not open a channel whose verification ends after the timeout", async () => {
    const slow = testVerifyPeer(agent);
    const r = await exchange({}, { server: { timeoutMs: 100, verifyPeer: async (e, rd) => new Promise((resolve) => setTimeout(() => resolve(slow(e, rd)), 300)) } }, 3000);
    expect(code(r.server)).toBe("TIMEOUT");
    expect(r.client.ok).toBe(false);
    // Past the late verification: nothing may surface (vitest fails the run on an unhandled error).
    await new Promise((resolve) => setTimeout(resolve, 400));
  });

  it("applies backpressure: a reader that stops holds a drain-respecting writer to a bounded amount", async () => {
    const { c, s } = await pair();
    s.stream.pause();
    const chunk = randomBytes(256 * 1024);
    const total = 32 * 1024 * 1024;
    let written = 0;
    const writer = (async () => {
      while (written < total) {
        const ok = c.stream.write(chunk);
        written += chunk.length;
        if (!ok) await new Promise((r) => c.stream.once("drain", r));
      }
      c.stream.end();
    })();
    // The reader sleeps: the writer must get stuck once socket buffers and high-water marks fill.
    await new Promise((r) => setTimeout(r, 400));
    const whileAsleep = written;
    expect(whileAsleep).toBeGreaterThan(0);
    expect(whileAsleep).toBeLessThan(4 * 1024 * 1024);
    expect(s.stream.readableLength).toBeLessThanOrEqual(256 * 1024);
    // The reader wakes: everything arrives, in order.
    const all = await readAll(s.stream);
    await writer;
    expect(all.length).toBe(total);
    expect(all.subarray(total - chunk.length).equals(chunk)).toBe(true);
  });

  it("errors an open channel whose connection is cut under it", async () => {
    const sp = await socketPair(dir);
    cleanups.push(sp.close);
    const [c, s] = await Promise.all([secureClient(sp.client, clientOptions()), secureServer(sp.server, serverOptions())]);
    const err = new Promise<Error>((resolve) => c.stream.once("error", resolve));
    c.stream.resume();
    (sp.server as net.Socket).destroy();
    s.stream.destroy();
    expect(await err).toMatchObject({ code: "CRYPTO" });
  });
});
