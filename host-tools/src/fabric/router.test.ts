import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { silentLogger } from "../../../proto/src/log.ts";
import { MAX_CONNS_PER_VM, Router } from "./router.ts";
import { SyntheticGuest, header, type RxPacket } from "./synthetic-guest.ts";
import { VsockDevice } from "./vsock-device.ts";
import { Op, SHUTDOWN_RCV, SHUTDOWN_SEND } from "./vsock-packet.ts";

const tmp = mkdtempSync(path.join(os.tmpdir(), "airlock-router-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function setup(specs: { cid: number; groups: string[]; hostPorts?: number[] }[]) {
  const router = new Router(silentLogger);
  const faults = new Map<number, Error>();
  const guests = specs.map((s) => {
    const g = new SyntheticGuest(s.cid, { queueSize: 64, memSize: 4 * 1024 * 1024 });
    const dev = new VsockDevice(
      s.cid,
      router,
      (q) => g.interrupts[q]++,
      (e) => {
        faults.set(s.cid, e);
        router.vmDown(s.cid);
      },
      silentLogger,
    );
    router.addVm({ cid: s.cid, groups: new Set(s.groups), udsPath: path.join(tmp, `h${s.cid}`), hostPorts: new Set(s.hostPorts ?? []), device: dev });
    g.attach(dev);
    return g;
  });
  return { router, faults, guests };
}

const ops = (pkts: RxPacket[]): number[] => pkts.map((p) => p.hdr.op);

async function until<T>(fn: () => T | undefined, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Opens A:1000 -> B:80 and returns after the RESPONSE reached A. */
function connect(a: SyntheticGuest, b: SyntheticGuest, bBufAlloc = 256 * 1024): void {
  a.send(header({ srcCid: a.cid, dstCid: b.cid, srcPort: 1000, dstPort: 80, op: Op.REQUEST }));
  expect(ops(b.receive())).toEqual([Op.REQUEST]);
  b.send(header({ srcCid: b.cid, dstCid: a.cid, srcPort: 80, dstPort: 1000, op: Op.RESPONSE, bufAlloc: bBufAlloc }));
  expect(ops(a.receive())).toEqual([Op.RESPONSE]);
}

describe("router: guest to guest", () => {
  it("relays a connection within a group, splitting data across 4 KiB rx buffers", async () => {
    const { guests, router } = setup([
      { cid: 3, groups: ["g"] },
      { cid: 4, groups: ["g", "x"] },
    ]);
    const [a, b] = guests as [SyntheticGuest, SyntheticGuest];
    connect(a, b);
    const data = Buffer.alloc(10_000).map((_, i) => (i * 7) & 0xff);
    a.send(header({ srcCid: 3, dstCid: 4, srcPort: 1000, dstPort: 80, op: Op.RW }), data);
    const got = b.receive();
    expect(got.map((p) => p.hdr.len)).toEqual([4096, 4096, 1808]);
    expect(Buffer.concat(got.map((p) => p.payload)).equals(data)).toBe(true);
    expect(got.every((p) => p.hdr.srcCid === 3 && p.hdr.srcPort === 1000 && p.hdr.dstPort === 80)).toBe(true);
    await new Promise((r) => setImmediate(r)); // interrupts are raised once per batch
    expect(b.interrupts[0]).toBeGreaterThan(0);
    a.send(header({ srcCid: 3, dstCid: 4, srcPort: 1000, dstPort: 80, op: Op.SHUTDOWN, flags: SHUTDOWN_RCV | SHUTDOWN_SEND }));
    expect(ops(b.receive())).toEqual([Op.SHUTDOWN]);
    b.send(header({ srcCid: 4, dstCid: 3, srcPort: 80, dstPort: 1000, op: Op.RST }));
    expect(ops(a.receive())).toEqual([Op.RST]);
    expect(router.connectionCount(3) + router.connectionCount(4)).toBe(0);
  });

  it("answers RST across groups, to unknown CIDs and to the host CID without a listener path", () => {
    const { guests } = setup([
      { cid: 3, groups: ["g"] },
      { cid: 5, groups: ["other"] },
    ]);
    const [a, c] = guests as [SyntheticGuest, SyntheticGuest];
    for (const dst of [5, 99, 3]) {
      a.send(header({ srcCid: 3, dstCid: dst, srcPort: 1000, dstPort: 80, op: Op.REQUEST }));
      const got = a.receive();
      expect(ops(got)).toEqual([Op.RST]);
      expect(got[0]!.hdr).toMatchObject({ srcCid: dst, dstCid: 3, srcPort: 80, dstPort: 1000 });
    }
    expect(c.receive()).toEqual([]);
  });

  it("answers RST at once for a peer whose driver is not running", () => {
    const { guests } = setup([
      { cid: 3, groups: ["g"] },
      { cid: 4, groups: ["g"] },
    ]);
    const [a, b] = guests as [SyntheticGuest, SyntheticGuest];
    b.device!.reset(); // as when QEMU is connected but the guest has not started the device
    a.send(header({ srcCid: 3, dstCid: 4, srcPort: 1000, dstPort: 80, op: Op.REQUEST }));
    expect(ops(a.receive())).toEqual([Op.RST]);
    expect(b.device!.hasPending).toBe(false);
  });

  it("limits the connections a guest opens without locking its peer out", () => {
    const { guests, router } = setup([
      { cid: 3, groups: ["g"] },
      { cid: 4, groups: ["g"] },
      { cid: 5, groups: ["g"] },
    ]);
    const [a, b, c] = guests as [SyntheticGuest, SyntheticGuest, SyntheticGuest];
    let refused = 0;
    for (let port = 0; port < MAX_CONNS_PER_VM + 10; port++) {
      a.send(header({ srcCid: 3, dstCid: 4, srcPort: port, dstPort: 80, op: Op.REQUEST }));
      refused += a.receive().filter((p) => p.hdr.op === Op.RST).length;
      b.receive();
    }
    expect(refused).toBe(10);
    expect(router.connectionCount(3)).toBe(MAX_CONNS_PER_VM);
    c.send(header({ srcCid: 5, dstCid: 4, srcPort: 1, dstPort: 80, op: Op.REQUEST }));
    expect(ops(b.receive())).toEqual([Op.REQUEST]);
  });

  it("drops forged source CIDs and RSTs packets of unknown connections", () => {
    const { guests } = setup([
      { cid: 3, groups: ["g"] },
      { cid: 4, groups: ["g"] },
    ]);
    const [a, b] = guests as [SyntheticGuest, SyntheticGuest];
    a.send(header({ srcCid: 4, dstCid: 4, srcPort: 1, dstPort: 80, op: Op.REQUEST }));
    a.send(header({ srcCid: 7, dstCid: 4, srcPort: 1, dstPort: 80, op: Op.REQUEST }));
    expect(b.receive()).toEqual([]);
    expect(a.receive()).toEqual([]);
    expect(a.device!.dropped).toBe(2);
    a.send(header({ srcCid: 3, dstCid: 4, srcPort: 1, dstPort: 80, op: Op.RW }), Buffer.from("x"));
    a.send(header({ srcCid: 3, dstCid: 4, srcPort: 1, dstPort: 80, op: Op.RESPONSE }));
    expect(ops(a.receive())).toEqual([Op.RST, Op.RST]);
    expect(b.receive()).toEqual([]);
    // RW before the RESPONSE resets the half-open connection.
    a.send(header({ srcCid: 3, dstCid: 4, srcPort: 2, dstPort: 80, op: Op.REQUEST }));
    b.receive();
    a.send(header({ srcCid: 3, dstCid: 4, srcPort: 2, dstPort: 80, op: Op.RW }), Buffer.from("x"));
    expect(ops(a.receive())).toEqual([Op.RST]);
    expect(ops(b.receive())).toEqual([Op.RST]);
  });

  it("resets both ends when a guest overruns its peer's credit", () => {
    const { guests, router } = setup([
      { cid: 3, groups: ["g"] },
      { cid: 4, groups: ["g"] },
    ]);
    const [a, b] = guests as [SyntheticGuest, SyntheticGuest];
    connect(a, b, 4096);
    a.send(header({ srcCid: 3, dstCid: 4, srcPort: 1000, dstPort: 80, op: Op.RW }), Buffer.alloc(4000));
    expect(b.receive().map((p) => p.hdr.len)).toEqual([4000]);
    a.send(header({ srcCid: 3, dstCid: 4, srcPort: 1000, dstPort: 80, op: Op.RW }), Buffer.alloc(200));
    expect(ops(a.receive())).toEqual([Op.RST]);
    expect(ops(b.receive())).toEqual([Op.RST]);
    expect(router.connectionCount(3)).toBe(0);
  });

  it("holds data for a guest whose rx ring is full and delivers it when buffers come back", () => {
    const { guests } = setup([
      { cid: 3, groups: ["g"] },
      { cid: 4, groups: ["g"] },
    ]);
    const [a, b] = guests as [SyntheticGuest, SyntheticGuest];
    connect(a, b);
    // b's rx ring holds 32 chains of 4 KiB: 40 x 4 KiB must wait in part.
    const sent: Buffer[] = [];
    for (let i = 0; i < 40; i++) {
      const d = Buffer.alloc(4096, i);
      sent.push(d);
      a.send(header({ srcCid: 3, dstCid: 4, srcPort: 1000, dstPort: 80, op: Op.RW }), d);
    }
    expect(b.device!.hasPending).toBe(true);
    const got: RxPacket[] = [];
    while (got.length < 40) {
      const n = b.receive();
      if (n.length === 0) break;
      got.push(...n);
    }
    expect(Buffer.concat(got.map((p) => p.payload)).equals(Buffer.concat(sent))).toBe(true);
    expect(b.device!.hasPending).toBe(false);
  });

  it("cuts off only the guest that corrupts its ring; the others keep working", () => {
    const { guests, faults } = setup([
      { cid: 3, groups: ["g"] },
      { cid: 4, groups: ["g"] },
    ]);
    const [a, b] = guests as [SyntheticGuest, SyntheticGuest];
    connect(a, b);
    // A descriptor chain that points at itself.
    a.writeDesc(a.tx, 0, 0x100000, 44, 1, 0);
    a.publish(a.tx, 0);
    a.device!.kick(1);
    expect([...faults.keys()]).toEqual([3]);
    expect(a.device!.broken).toBe(true);
    // Its peer learns the connection is gone; b still routes.
    expect(ops(b.receive())).toEqual([Op.RST]);
    b.send(header({ srcCid: 4, dstCid: 42, srcPort: 5, dstPort: 6, op: Op.REQUEST }));
    expect(ops(b.receive())).toEqual([Op.RST]);
    expect(b.device!.broken).toBe(false);
  });

  it("RSTs a guest's peers when the guest goes away", () => {
    const { guests, router } = setup([
      { cid: 3, groups: ["g"] },
      { cid: 4, groups: ["g"] },
    ]);
    const [a, b] = guests as [SyntheticGuest, SyntheticGuest];
    connect(a, b);
    router.vmDown(3);
    const got = b.receive();
    expect(ops(got)).toEqual([Op.RST]);
    expect(got[0]!.hdr).toMatchObject({ srcCid: 3, srcPort: 1000, dstCid: 4, dstPort: 80 });
    expect(router.connectionCount(4)).toBe(0);
  });
});

describe("router: host side", () => {
  it("connects a guest to <uds-path>_<port> and carries data both ways with half-close", async () => {
    const { guests, router } = setup([{ cid: 3, groups: ["g"], hostPorts: [5000, 5001] }]);
    const a = guests[0]!;
    const fromGuest: Buffer[] = [];
    let hostSaw = "";
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.write("world");
      s.on("data", (d) => fromGuest.push(d));
      s.on("end", () => {
        hostSaw = Buffer.concat(fromGuest).toString();
        s.end();
      });
    });
    await new Promise<void>((r) => server.listen(path.join(tmp, "h3_5000"), r));
    try {
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 1000, dstPort: 5000, op: Op.REQUEST }));
      const resp = await until(() => {
        const p = a.receive();
        return p.length ? p : undefined;
      });
      expect(ops(resp)[0]).toBe(Op.RESPONSE);
      const rest = resp.slice(1);
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 1000, dstPort: 5000, op: Op.RW }), Buffer.from("hello"));
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 1000, dstPort: 5000, op: Op.SHUTDOWN, flags: SHUTDOWN_SEND }));
      const all = [...rest];
      await until(() => {
        all.push(...a.receive());
        return all.some((p) => p.hdr.op === Op.SHUTDOWN) ? true : undefined;
      });
      expect(Buffer.concat(all.filter((p) => p.hdr.op === Op.RW).map((p) => p.payload)).toString()).toBe("world");
      expect(hostSaw).toBe("hello");
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 1000, dstPort: 5000, op: Op.SHUTDOWN, flags: SHUTDOWN_SEND | SHUTDOWN_RCV }));
      expect(ops(a.receive())).toContain(Op.RST);
      expect(router.connectionCount(3)).toBe(0);
      // Allowed, but nobody listens on 5001: RST.
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 1001, dstPort: 5001, op: Op.REQUEST }));
      const rst = await until(() => {
        const p = a.receive();
        return p.length ? p : undefined;
      });
      expect(ops(rst)).toEqual([Op.RST]);
    } finally {
      server.close();
    }
  });

  it("denies host ports not on the VM's allow-list with RST, without looking for a listener, and counts them per VM", async () => {
    const { guests, router } = setup([
      { cid: 3, groups: ["g"], hostPorts: [5100] },
      { cid: 4, groups: ["g"] },
    ]);
    const [a, b] = guests as [SyntheticGuest, SyntheticGuest];
    const accepted: number[] = [];
    const servers = [
      net.createServer((s) => (accepted.push(5100), s.end())),
      net.createServer((s) => (accepted.push(5101), s.end())),
      net.createServer((s) => (accepted.push(4), s.end())),
    ];
    // Listeners exist for every port tried: only the allow-list decides.
    const paths = [path.join(tmp, "h3_5100"), path.join(tmp, "h3_5101"), path.join(tmp, "h4_5100")];
    await Promise.all(servers.map((srv, i) => new Promise<void>((r) => srv.listen(paths[i], r))));
    const connectSpy = vi.spyOn(net, "connect");
    try {
      // A port not on 3's list: RST at once (no connect attempted, so no filesystem access).
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 1000, dstPort: 5101, op: Op.REQUEST }));
      const denied = a.receive();
      expect(ops(denied)).toEqual([Op.RST]);
      expect(denied[0]!.hdr).toMatchObject({ srcCid: 2, dstCid: 3, srcPort: 5101, dstPort: 1000 });
      // 4 has no host ports at all, even the one 3 may use.
      b.send(header({ srcCid: 4, dstCid: 2, srcPort: 1000, dstPort: 5100, op: Op.REQUEST }));
      b.send(header({ srcCid: 4, dstCid: 2, srcPort: 1001, dstPort: 1024, op: Op.REQUEST }));
      expect(ops(b.receive())).toEqual([Op.RST, Op.RST]);
      expect(connectSpy).not.toHaveBeenCalled();
      expect(router.deniedHostPorts(3)).toBe(1);
      expect(router.deniedHostPorts(4)).toBe(2);
      expect(router.connectionCount(3) + router.connectionCount(4)).toBe(0);
      // A denied port's data and RST packets leave no trace either (no connection to refer to).
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 1000, dstPort: 5101, op: Op.RW }), Buffer.from("x"));
      expect(ops(a.receive())).toEqual([Op.RST]);
      expect(router.deniedHostPorts(3)).toBe(1);
      // The allowed port still reaches its listener.
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 1002, dstPort: 5100, op: Op.REQUEST }));
      const resp = await until(() => {
        const p = a.receive();
        return p.length ? p : undefined;
      });
      expect(ops(resp)[0]).toBe(Op.RESPONSE);
      expect(connectSpy).toHaveBeenCalledTimes(1);
      await until(() => (accepted.length > 0 ? true : undefined));
      expect(accepted).toEqual([5100]);
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 1002, dstPort: 5100, op: Op.RST }));
      expect(router.connectionCount(3)).toBe(0);
      expect(router.deniedHostPorts(3)).toBe(1);
    } finally {
      connectSpy.mockRestore();
      for (const srv of servers) srv.close();
    }
  });

  it("lets a host program reach a guest port with CONNECT <port> and answers OK <hostport>", async () => {
    const { guests, router } = setup([{ cid: 3, groups: ["g"] }]);
    const a = guests[0]!;
    const vm = { cid: 3, groups: new Set(["g"]), udsPath: path.join(tmp, "h3"), device: a.device! };
    const sockPath = path.join(tmp, "uds3");
    const server = net.createServer({ allowHalfOpen: true }, (s) => router.acceptHost(vm, s));
    await new Promise<void>((r) => server.listen(sockPath, r));
    try {
      const host = net.connect({ path: sockPath, allowHalfOpen: true });
      let hostGot = "";
      host.on("data", (d) => (hostGot += d.toString()));
      host.write("CONNECT 6000\nearly");
      const req = await until(() => {
        const p = a.receive();
        return p.length ? p[0] : undefined;
      });
      expect(req.hdr).toMatchObject({ op: Op.REQUEST, srcCid: 2, dstCid: 3, dstPort: 6000 });
      const hostPort = req.hdr.srcPort;
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 6000, dstPort: hostPort, op: Op.RESPONSE }));
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 6000, dstPort: hostPort, op: Op.RW }), Buffer.from("hi host"));
      const data = await until(() => {
        const p = a.receive().filter((x) => x.hdr.op === Op.RW);
        return p.length ? p : undefined;
      });
      expect(Buffer.concat(data.map((p) => p.payload)).toString()).toBe("early");
      await until(() => (hostGot.length >= `OK ${hostPort}\nhi host`.length ? true : undefined));
      expect(hostGot).toBe(`OK ${hostPort}\nhi host`);
      host.end();
      // The host half-closed: the guest hears SHUTDOWN(SEND); its full shutdown is answered by RST.
      const shut = await until(() => {
        const p = a.receive();
        return p.length ? p : undefined;
      });
      expect(shut.map((p) => [p.hdr.op, p.hdr.flags])).toEqual([[Op.SHUTDOWN, SHUTDOWN_SEND]]);
      a.send(header({ srcCid: 3, dstCid: 2, srcPort: 6000, dstPort: hostPort, op: Op.SHUTDOWN, flags: SHUTDOWN_SEND | SHUTDOWN_RCV }));
      expect(ops(a.receive())).toEqual([Op.RST]);
      await new Promise<void>((r) => host.once("close", () => r()));
      expect(router.connectionCount(3)).toBe(0);
    } finally {
      server.close();
    }
  });
});
