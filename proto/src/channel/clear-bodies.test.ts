// Clear bodies (secure-stream.ts, issue 12): bytes marked with clearBody() cross unsealed in the
// place and at the length a sealed CLEAR_NEXT record announced; everything around them stays
// sealed. Through a relay standing where the host does: the clear bytes are visible on the wire
// (by design: their reader authenticates them), a changed length, a dropped or an extra clear
// frame breaks the channel, and an end that did not ask for clear bodies refuses them.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Duplex } from "node:stream";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { readMessages, sendClearData, sendData } from "../control.ts";
import { FirewallToAgentSchema } from "../../gen/airlock/v1/agent_pb.ts";
import { secureClient, secureServer, type ChannelOptions } from "./index.ts";
import { testAttest, testIdentity, testVerifyPeer } from "./test-evidence.ts";
import { connect, listen, startRelay, type FrameHook } from "./test-sockets.ts";

const agent = testIdentity("sandbox agent");
const enforcer = testIdentity("enforcer");
const clientOptions = (over: Partial<ChannelOptions> = {}): ChannelOptions => ({ attest: testAttest(agent), verifyPeer: testVerifyPeer(enforcer), timeoutMs: 5000, acceptClearBodies: true, ...over });
const serverOptions: ChannelOptions = { attest: testAttest(enforcer), verifyPeer: testVerifyPeer(agent), timeoutMs: 5000 };

const dir = mkdtempSync(path.join(tmpdir(), "airlock-clear-"));
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const before = Buffer.from("sealed before the clear body");
const after = Buffer.from("sealed after it");

/** The server (the firewall's end) sends: data, a clear body, data; the client reads frames until an error or the end. */
async function exchange(clear: Buffer, hook?: FrameHook, client = clientOptions()): Promise<{ frames: { data: Buffer; clear?: true }[]; error?: Error; wire: Buffer }> {
  let server: Duplex | undefined;
  const l = await listen(dir, (s) => {
    void secureServer(s, serverOptions).then(async ({ stream }) => {
      server = stream;
      stream.on("error", () => undefined);
      await sendData(stream, before);
      await sendClearData(stream, [clear.subarray(0, 1000), clear.subarray(1000)]);
      await sendData(stream, after);
      stream.end();
    }, () => undefined);
  });
  cleanups.push(l.close);
  const relay = await startRelay(dir, l.path, hook ? { s2c: hook } : {});
  cleanups.push(relay.close);
  const { stream } = await secureClient(await connect(relay.path), client);
  cleanups.push(() => {
    stream.destroy();
    server?.destroy();
  });
  const frames: { data: Buffer; clear?: true }[] = [];
  try {
    for await (const m of readMessages(stream, FirewallToAgentSchema, "the firewall", 2 << 20, true)) if (m.kind === "data") frames.push({ data: Buffer.from(m.data), ...(m.clear ? { clear: true as const } : {}) });
    return { frames, wire: Buffer.concat(relay.wire.s2c) };
  } catch (err) {
    return { frames, error: err as Error, wire: Buffer.concat(relay.wire.s2c) };
  }
}

/** Index of the first s2c frame whose body is `len` bytes of clear body (after the handshake). */
const isClearFrame = (frame: Buffer, body: Buffer): boolean => frame.length > 4 && body.includes(frame.subarray(4, Math.min(frame.length, 68)));

describe("clear bodies on the secure channel", () => {
  it("cross unsealed, in order, between sealed data that stays sealed", async () => {
    const clear = randomBytes(600 * 1024); // more than one clear frame (MAX_CLEAR = 256 KiB)
    const r = await exchange(clear);
    expect(r.error).toBeUndefined();
    expect(r.frames.map((f) => f.clear === true)).toEqual([false, true, false]);
    expect(r.frames[0]!.data.equals(before)).toBe(true);
    expect(r.frames[1]!.data.equals(clear)).toBe(true);
    expect(r.frames[2]!.data.equals(after)).toBe(true);
    expect(r.wire.includes(clear.subarray(1000, 5096))).toBe(true);
    expect(r.wire.includes(before)).toBe(false);
    expect(r.wire.includes(after)).toBe(false);
  });

  it("are refused by an end that did not ask for them", async () => {
    const r = await exchange(randomBytes(10_000), undefined, clientOptions({ acceptClearBodies: false }));
    expect(r.error?.message).toMatch(/announced a clear body, which this end does not take/);
    expect(r.frames.every((f) => !f.clear)).toBe(true);
  });

  it("reach their reader changed when the host changes them (their reader authenticates them), never elsewhere", async () => {
    const clear = randomBytes(10_000);
    const r = await exchange(clear, (frame) => {
      if (isClearFrame(frame, clear)) frame[100]! ^= 1;
      return [frame];
    });
    expect(r.error).toBeUndefined();
    expect(r.frames[1]!.data.equals(clear)).toBe(false);
    expect(r.frames[2]!.data.equals(after)).toBe(true);
  });

  it("break the channel when the host changes their length, drops or repeats them", async () => {
    const clear = randomBytes(10_000);
    const shorter = await exchange(clear, (frame) => {
      if (!isClearFrame(frame, clear)) return [frame];
      const cut = frame.subarray(0, frame.length - 10);
      cut.writeUInt32BE(cut.length - 4, 0);
      return [cut];
    });
    expect(shorter.error?.message).toMatch(/clear body of 990 bytes where 1000 were announced/);
    const dropped = await exchange(clear, (frame) => (isClearFrame(frame, clear) ? [] : [frame]));
    expect(dropped.error).toBeDefined();
    expect(dropped.frames.some((f) => f.data.equals(after))).toBe(false);
    const repeated = await exchange(clear, (frame) => (isClearFrame(frame, clear) ? [frame, frame] : [frame]));
    expect(repeated.error).toBeDefined();
    expect(repeated.frames.some((f) => f.data.equals(after))).toBe(false);
  });
});
