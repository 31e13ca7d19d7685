// The host-side connection state machine driven by fake events: a fake socket (no file system,
// no kernel sockets), a fake guest device that records what it is sent, fake timers.
import { EventEmitter } from "node:events";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { silentLogger } from "../../../proto/src/log.ts";
import { HOST_BUF_ALLOC, HOST_CONNECT_TIMEOUT_MS, HostConnections, type HostConn, type HostSocket, type HostVm } from "./host-conn.ts";
import { HOST_CID, Op, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM, type VsockHeader } from "./vsock-packet.ts";

class FakeSocket extends EventEmitter implements HostSocket {
  readonly written: string[] = [];
  paused = false;
  ended = false;
  destroyed = false;
  write(data: Uint8Array | string, cb?: (err?: Error | null) => void): boolean {
    this.written.push(typeof data === "string" ? data : Buffer.from(data).toString("latin1"));
    if (cb) queueMicrotask(() => cb());
    return true;
  }
  end(): void {
    this.ended = true;
  }
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.emit("close");
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
}

interface Sent {
  hdr: VsockHeader;
  data: string;
}

function setup(hostPorts: number[] = [5000]) {
  const sent: Sent[] = [];
  const vm: HostVm = {
    cid: 3,
    udsPath: "/fake/vm3.vsock",
    hostPorts: new Set(hostPorts),
    device: {
      ready: true,
      send: (hdr, payload = [], off = 0) => {
        sent.push({ hdr, data: Buffer.concat(payload.map((p) => Buffer.from(p))).subarray(off, off + hdr.len).toString("latin1") });
        return true;
      },
    },
  };
  const table = new Map<string, HostConn>();
  const dialled: { path: string; socket: FakeSocket }[] = [];
  const host = new HostConnections({
    log: silentLogger,
    maxConnsPerVm: 4,
    table: {
      size: () => table.size,
      has: (_cid, k) => table.has(k),
      add: (_cid, k, c) => table.set(k, c),
      remove: (_cid, k) => table.delete(k),
    },
    dial: (p) => {
      const socket = new FakeSocket();
      dialled.push({ path: p, socket });
      return socket;
    },
  });
  const fromGuest = (h: Partial<VsockHeader>, data = ""): void => {
    const hdr: VsockHeader = { srcCid: 3, dstCid: HOST_CID, srcPort: 1000, dstPort: 5000, len: data.length, type: TYPE_STREAM, op: Op.RW, flags: 0, bufAlloc: 65536, fwdCnt: 0, ...h };
    host.fromGuest(vm, table.get(`${hdr.srcPort}:${HOST_CID}:${hdr.dstPort}`), hdr, [Buffer.from(data, "latin1")], 0);
  };
  const ops = (): number[] => sent.splice(0).map((s) => s.hdr.op);
  return { host, vm, table, sent, dialled, fromGuest, ops };
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("host connections: host -> guest (CONNECT)", () => {
  it("handshake -> requesting -> open -> closed, with data both ways", async () => {
    const { host, vm, table, sent, fromGuest, ops } = setup();
    const s = new FakeSocket();
    const c = host.acceptHost(vm, s);
    expect(c.state).toBe("handshake");
    s.emit("data", Buffer.from("CONN"));
    expect(c.state).toBe("handshake");
    expect(table.size).toBe(0);
    s.emit("data", Buffer.from("ECT 80\nearly"));
    expect(c.state).toBe("requesting");
    expect(s.paused).toBe(true);
    expect(sent[0]!.hdr).toMatchObject({ op: Op.REQUEST, srcCid: HOST_CID, dstCid: 3, dstPort: 80, bufAlloc: HOST_BUF_ALLOC });
    const hostPort = sent[0]!.hdr.srcPort;
    sent.length = 0;
    expect(table.size).toBe(1);
    // The guest accepts: OK to the host, the bytes that came with the CONNECT line go to the guest.
    fromGuest({ srcPort: 80, dstPort: hostPort, op: Op.RESPONSE, len: 0 });
    expect(c.state).toBe("open");
    expect(s.written).toEqual([`OK ${hostPort}\n`]);
    expect(s.paused).toBe(false);
    expect(sent.map((p) => [p.hdr.op, p.data])).toEqual([[Op.RW, "early"]]);
    sent.length = 0;
    // guest -> host data, acknowledged once flushed (credit update after a quarter of the buffer).
    fromGuest({ srcPort: 80, dstPort: hostPort, op: Op.RW }, "x".repeat(HOST_BUF_ALLOC / 4));
    await Promise.resolve();
    expect(ops()).toEqual([Op.CREDIT_UPDATE]);
    // The host ends its side: SHUTDOWN(SEND) to the guest, once.
    s.emit("end");
    expect(sent.map((p) => [p.hdr.op, p.hdr.flags])).toEqual([[Op.SHUTDOWN, SHUTDOWN_SEND]]);
    sent.length = 0;
    expect(c.hostEnd).toBe("shutdown-sent");
    // The guest shuts down fully: RST back and gone.
    fromGuest({ srcPort: 80, dstPort: hostPort, op: Op.SHUTDOWN, flags: SHUTDOWN_RCV | SHUTDOWN_SEND, len: 0 });
    expect(c.state).toBe("closed");
    expect(ops()).toEqual([Op.RST]);
    expect(s.ended).toBe(true);
    expect(table.size).toBe(0);
  });

  it("refuses a malformed or overlong CONNECT line without telling the guest", () => {
    for (const line of ["CONNECT x\n", "HELLO 80\n", "CONNECT 99999999999\n", "C".repeat(65)]) {
      const { host, vm, table, sent } = setup();
      const s = new FakeSocket();
      const c = host.acceptHost(vm, s);
      s.emit("data", Buffer.from(line));
      expect(c.state).toBe("closed");
      expect(s.destroyed).toBe(true);
      expect(sent).toEqual([]);
      expect(table.size).toBe(0);
    }
  });

  it("closes a handshake that never sends its line, and a request the guest never answers", () => {
    const { host, vm, ops } = setup();
    const quiet = new FakeSocket();
    const c1 = host.acceptHost(vm, quiet);
    const s = new FakeSocket();
    const c2 = host.acceptHost(vm, s);
    s.emit("data", Buffer.from("CONNECT 80\n"));
    expect(ops()).toEqual([Op.REQUEST]);
    vi.advanceTimersByTime(HOST_CONNECT_TIMEOUT_MS + 1);
    expect([c1.state, c2.state]).toEqual(["closed", "closed"]);
    expect(quiet.destroyed).toBe(true);
    expect(ops()).toEqual([Op.RST]);
  });

  it("resets a guest that sends beyond the credit the host granted (the guests' receive backpressure rests on it)", () => {
    const { host, vm, fromGuest, sent, ops } = setup();
    const s = new FakeSocket();
    const c = host.acceptHost(vm, s);
    s.emit("data", Buffer.from("CONNECT 80\n"));
    const hostPort = sent[0]!.hdr.srcPort;
    fromGuest({ srcPort: 80, dstPort: hostPort, op: Op.RESPONSE, len: 0 });
    ops();
    // The host program has not taken anything yet: the whole window may be sent, not a byte more.
    fromGuest({ srcPort: 80, dstPort: hostPort, op: Op.RW }, "x".repeat(HOST_BUF_ALLOC));
    expect(c.state).toBe("open");
    expect(ops()).toEqual([]);
    fromGuest({ srcPort: 80, dstPort: hostPort, op: Op.RW }, "y");
    expect(c.state).toBe("closed");
    expect(ops()).toEqual([Op.RST]);
    expect(s.destroyed).toBe(true);
  });
  it("resets on a packet its state does not allow (data before the guest accepted)", () => {
    const { host, vm, fromGuest, sent, ops } = setup();
    const s = new FakeSocket();
    const c = host.acceptHost(vm, s);
    s.emit("data", Buffer.from("CONNECT 80\n"));
    const hostPort = sent[0]!.hdr.srcPort;
    ops();
    fromGuest({ srcPort: 80, dstPort: hostPort, op: Op.RW }, "too soon");
    expect(c.state).toBe("closed");
    expect(ops()).toEqual([Op.RST]);
    expect(s.destroyed).toBe(true);
  });
});

describe("host connections: guest -> host (<uds-path>_P)", () => {
  it("dialing -> open on the listener's accept; RST from the guest closes", () => {
    const { table, dialled, fromGuest, ops } = setup();
    fromGuest({ op: Op.REQUEST, len: 0 });
    expect(dialled.map((d) => d.path)).toEqual(["/fake/vm3.vsock_5000"]);
    const c = [...table.values()][0]!;
    expect(c.state).toBe("dialing");
    expect(ops()).toEqual([]);
    dialled[0]!.socket.emit("connect");
    expect(c.state).toBe("open");
    expect(ops()).toEqual([Op.RESPONSE]);
    fromGuest({ op: Op.RW }, "hello");
    expect(dialled[0]!.socket.written).toEqual(["hello"]);
    dialled[0]!.socket.emit("data", Buffer.from("back"));
    expect(ops()).toEqual([Op.RW]);
    fromGuest({ op: Op.RST, len: 0 });
    expect(c.state).toBe("closed");
    expect(ops()).toEqual([]);
    expect(table.size).toBe(0);
  });

  it("denies a port off the allow-list without dialling, and counts it", () => {
    const { host, dialled, fromGuest, ops } = setup([5000]);
    fromGuest({ op: Op.REQUEST, dstPort: 5001, len: 0 });
    expect(dialled).toEqual([]);
    expect(ops()).toEqual([Op.RST]);
    expect(host.deniedHostPorts(3)).toBe(1);
  });

  it("gives up on a listener that never accepts, and on one that goes away", () => {
    const { table, dialled, fromGuest, ops } = setup();
    fromGuest({ op: Op.REQUEST, srcPort: 1, len: 0 });
    fromGuest({ op: Op.REQUEST, srcPort: 2, len: 0 });
    const [c1, c2] = [...table.values()];
    dialled[1]!.socket.emit("close");
    expect(c2!.state).toBe("closed");
    expect(ops()).toEqual([Op.RST]);
    vi.advanceTimersByTime(HOST_CONNECT_TIMEOUT_MS + 1);
    expect(c1!.state).toBe("closed");
    expect(ops()).toEqual([Op.RST]);
    expect(table.size).toBe(0);
  });

  it("packets for no connection get RST, except RST itself", () => {
    const { fromGuest, ops } = setup();
    fromGuest({ op: Op.RW }, "stray");
    fromGuest({ op: Op.RST, len: 0 });
    expect(ops()).toEqual([Op.RST]);
  });
});
