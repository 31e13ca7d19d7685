import { describe, expect, it } from "vitest";
import { EGRESS_CHUNK, EGRESS_WINDOW, EgressMux, MAX_EGRESS_STREAMS, type EgressMessage } from "./egress-mux.ts";

/** Two muxes joined as the agent link joins them: each one's sends are the other's receives. */
function joined(): { a: EgressMux; b: EgressMux; sent: EgressMessage[] } {
  const sent: EgressMessage[] = [];
  const box: { a?: EgressMux; b?: EgressMux } = {};
  const a = new EgressMux(async (m) => {
    sent.push(m);
    await new Promise((r) => setImmediate(r));
    box.b!.receive(m);
  });
  const b = new EgressMux(async (m) => {
    await new Promise((r) => setImmediate(r));
    box.a!.receive(m);
  });
  box.a = a;
  box.b = b;
  return { a, b, sent };
}

const read = async (s: NodeJS.ReadableStream): Promise<Buffer> => {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
};

describe("egress streams over the agent link", () => {
  it("carry bytes both ways, in chunks within the window, and end each direction", async () => {
    const { a, b, sent } = joined();
    const x = a.open(1, 3128);
    const y = b.open(1, 3128);
    const big = Buffer.alloc(3 * EGRESS_WINDOW + 12345, 7);
    const got = read(y);
    x.end(big);
    y.end("pong");
    expect((await got).equals(big)).toBe(true);
    expect((await read(x)).toString()).toBe("pong");
    const data = sent.filter((m) => m.case === "egressData");
    expect(Math.max(...data.map((m) => (m.value as { data: Uint8Array }).data.length))).toBeLessThanOrEqual(EGRESS_CHUNK);
    await new Promise((r) => setTimeout(r, 20));
    expect(a.size).toBe(0);
  });

  it("hold a slow reader's side to one window: the sender waits for acknowledgements", async () => {
    const { a, b, sent } = joined();
    const x = a.open(2, 80);
    const y = b.open(2, 80);
    y.pause();
    x.write(Buffer.alloc(4 * EGRESS_WINDOW));
    await new Promise((r) => setTimeout(r, 100));
    const inFlight = sent.filter((m) => m.case === "egressData").reduce((n, m) => n + (m.value as { data: Uint8Array }).data.length, 0);
    expect(inFlight).toBeLessThanOrEqual(EGRESS_WINDOW + EGRESS_CHUNK);
    x.end();
    expect((await read(y)).length).toBe(4 * EGRESS_WINDOW);
  });

  it("drop what the peer sent to a stream this side has just closed (it crossed the close)", async () => {
    const m = new EgressMux(async () => {});
    const s = m.open(5, 80);
    s.destroy();
    await new Promise((r) => setImmediate(r));
    expect(() => m.receive({ case: "egressData", value: { stream: 5, data: Buffer.from("late") } })).not.toThrow();
    expect(() => m.receive({ case: "egressData", value: { stream: 6, data: Buffer.from("never opened") } })).toThrow(/not open/);
  });

  it("refuse a peer that breaks the protocol", () => {
    const m = new EgressMux(async () => {});
    expect(() => m.receive({ case: "egressData", value: { stream: 9, data: Buffer.from("x") } })).toThrow(/not open/);
    const s = m.open(3, 80);
    s.on("error", () => {});
    expect(() => m.open(3, 80)).toThrow(/twice/);
    expect(() => {
      for (let i = 0; i <= EGRESS_WINDOW / EGRESS_CHUNK; i++) m.receive({ case: "egressData", value: { stream: 3, data: Buffer.alloc(EGRESS_CHUNK) } });
    }).toThrow(/beyond the window/);
    expect(() => m.receive({ case: "egressAck", value: { stream: 3, bytes: 1 } })).toThrow(/more than was sent/);
    for (let i = 10; i < 10 + MAX_EGRESS_STREAMS - 1; i++) m.open(i, 80);
    expect(() => m.open(99, 80)).toThrow(/more than 16/);
    m.closeAll();
    expect(m.size).toBe(0);
    expect(() => m.open(100, 80)).toThrow(/after egress closed/);
  });
});
