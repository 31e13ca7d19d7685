// Vsock routing between guests and the host, after rust-vmm's vhost-device-vsock:
//  - guest <-> guest only when the two VMs share a group; packets are relayed as they are (the
//    guests run flow control end to end) but the fabric tracks each connection so that packets
//    for unknown connections, forged sources and credit overruns are refused;
//  - guest -> CID 2 port P reaches a host listener at `<uds-path>_P`, but only for the ports on
//    that VM's allow-list (deny by default): any other port gets RST without the fabric touching
//    the filesystem, and is counted (deniedHostPorts);
//  - host -> guest: a host process connects to `uds-path` and writes `CONNECT <port>\n`; the
//    fabric answers `OK <hostport>\n` once the guest accepts;
//  - anything else gets RST.
// For host connections the fabric is the vsock peer itself, with its own credit accounting.
import { openSync, writeSync } from "node:fs";
import net from "node:net";
import type { Logger } from "../../../proto/src/log.ts";
import { HOST_CID, MAX_PAYLOAD, Op, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM, replyHeader, type VsockHeader } from "./vsock-packet.ts";
import type { PacketSink, VsockDevice } from "./vsock-device.ts";
import { gather } from "./virtqueue.ts";

/** Receive buffer the fabric advertises for host connections. */
export const HOST_BUF_ALLOC = 256 * 1024;
/** Connections one VM may hold at once. */
export const MAX_CONNS_PER_VM = 4096;
/** Host bytes read ahead of the guest's credit before the host socket is paused. */
const HOST_READ_AHEAD = 256 * 1024;
const HOST_CONNECT_TIMEOUT_MS = 10_000;
const CONNECT_LINE_MAX = 64;

export interface RoutedVm {
  cid: number;
  groups: ReadonlySet<string>;
  /** Prefix of host listeners this guest reaches (`<udsPath>_<port>`). */
  udsPath: string;
  /** Host ports this guest may connect to; absent or empty: none. */
  hostPorts?: ReadonlySet<number>;
  device: VsockDevice;
}

/** Per-endpoint view of a guest<->guest connection (what the fabric has seen that side say). */
interface Side {
  cid: number;
  port: number;
  /** Bytes this side sent as RW (mod 2^32). */
  sent: number;
  bufAlloc: number;
  fwdCnt: number;
}

interface GuestConn {
  kind: "guest";
  a: Side; // initiator
  b: Side;
  established: boolean;
}

interface HostConn {
  kind: "host";
  vm: RoutedVm;
  guestPort: number;
  hostPort: number;
  socket: net.Socket;
  /** host->guest: waiting for the guest's RESPONSE; guest->host: waiting for the host connect. */
  established: boolean;
  outbound: boolean; // initiated by the host (CONNECT)
  peerBufAlloc: number;
  peerFwdCnt: number;
  txCnt: number; // bytes sent to the guest
  rxCnt: number; // bytes received from the guest
  fwdCnt: number; // bytes handed to the host socket and flushed
  announced: number; // fwdCnt last told to the guest
  toGuest: Buffer[];
  toGuestBytes: number;
  hostEnded: boolean;
  sentShutdown: boolean;
  guestShut: number;
  closed: boolean;
}

type Conn = GuestConn | HostConn;

function key(localPort: number, peerCid: number, peerPort: number): string {
  return `${localPort}:${peerCid}:${peerPort}`;
}

/**
 * A test tap: with AIRLOCK_FABRIC_TAP=<file> in the environment, every payload byte the router
 * routes (guest to guest, guest to host, host to guest) is appended to that file, so a test can
 * prove what crosses the fabric in clear. Off unless set; never set it outside tests (it writes
 * what the guests send to disk).
 */
function openTap(log: Logger): ((data: Uint8Array) => void) | undefined {
  const file = process.env.AIRLOCK_FABRIC_TAP;
  if (!file) return undefined;
  const fd = openSync(file, "a", 0o600);
  log.warn({ file }, "AIRLOCK_FABRIC_TAP: every routed payload byte is copied to this file");
  return (data) => {
    for (let off = 0; off < data.length; ) off += writeSync(fd, data, off);
  };
}

export class Router implements PacketSink {
  private readonly vms = new Map<number, RoutedVm>();
  /** Per VM: its connections, keyed from its own point of view. */
  private readonly conns = new Map<number, Map<string, Conn>>();
  /** Per VM: connection requests to host ports not on its allow-list. */
  private readonly denied = new Map<number, number>();
  private nextHostPort = 1024;
  private readonly tap: ((data: Uint8Array) => void) | undefined;

  constructor(private readonly log: Logger) {
    this.tap = openTap(log);
  }

  addVm(vm: RoutedVm): void {
    this.vms.set(vm.cid, vm);
    this.conns.set(vm.cid, new Map());
    this.denied.set(vm.cid, 0);
  }

  /** Connection requests a VM made to host ports not on its allow-list (refused with RST). */
  deniedHostPorts(cid: number): number {
    return this.denied.get(cid) ?? 0;
  }

  /** Number of connections a VM holds (tests, status). */
  connectionCount(cid: number): number {
    return this.conns.get(cid)?.size ?? 0;
  }

  /** Forgets every connection of a VM (its guest went away or was cut off): peers get RST. */
  vmDown(cid: number): void {
    const table = this.conns.get(cid);
    if (!table) return;
    for (const c of [...table.values()]) {
      if (c.kind === "guest") this.resetGuestConn(c, cid);
      else this.closeHostConn(c, false);
    }
    table.clear();
  }

  private canTalk(a: RoutedVm, b: RoutedVm): boolean {
    for (const g of a.groups) if (b.groups.has(g)) return true;
    return false;
  }

  fromGuest(dev: VsockDevice, hdr: VsockHeader, payload: readonly Uint8Array[], off: number): void {
    const vm = this.vms.get(dev.cid);
    if (!vm) return;
    if (hdr.srcCid !== dev.cid) {
      dev.drop(`forged source CID ${hdr.srcCid}`);
      return;
    }
    if (hdr.type !== TYPE_STREAM) {
      this.rst(dev, hdr);
      return;
    }
    if (hdr.dstCid === HOST_CID) {
      this.fromGuestToHost(vm, hdr, payload, off);
      return;
    }
    const peer = this.vms.get(hdr.dstCid);
    const table = this.conns.get(vm.cid)!;
    const conn = table.get(key(hdr.srcPort, hdr.dstCid, hdr.dstPort));
    if (!peer || peer === vm || !this.canTalk(vm, peer) || !peer.device.ready) {
      if (conn) this.resetGuestConn(conn as GuestConn, -1);
      else this.rst(dev, hdr);
      return;
    }
    this.guestToGuest(vm, peer, conn, hdr, payload, off);
  }

  private guestToGuest(vm: RoutedVm, peer: RoutedVm, conn: Conn | undefined, hdr: VsockHeader, payload: readonly Uint8Array[], off: number): void {
    if (conn && conn.kind !== "guest") throw new Error("guest connection table mixed up");
    if (!conn) {
      if (hdr.op === Op.REQUEST) {
        // Only the initiator's own table is limited: a guest cannot fill its peer's table and
        // so lock the peer's other links (e.g. the firewall's host control port) out.
        if (this.conns.get(vm.cid)!.size >= MAX_CONNS_PER_VM) {
          this.rst(vm.device, hdr);
          return;
        }
        const c: GuestConn = {
          kind: "guest",
          a: { cid: vm.cid, port: hdr.srcPort, sent: 0, bufAlloc: hdr.bufAlloc, fwdCnt: hdr.fwdCnt },
          b: { cid: peer.cid, port: hdr.dstPort, sent: 0, bufAlloc: 0, fwdCnt: 0 },
          established: false,
        };
        // A listener-side key that is taken means the peer already has this 4-tuple: refuse.
        if (this.conns.get(peer.cid)!.has(key(hdr.dstPort, vm.cid, hdr.srcPort))) {
          this.rst(vm.device, hdr);
          return;
        }
        this.conns.get(vm.cid)!.set(key(hdr.srcPort, peer.cid, hdr.dstPort), c);
        this.conns.get(peer.cid)!.set(key(hdr.dstPort, vm.cid, hdr.srcPort), c);
        if (!peer.device.send(hdr)) this.resetGuestConn(c, -1);
      } else if (hdr.op !== Op.RST) {
        this.rst(vm.device, hdr);
      }
      return;
    }
    const from = conn.a.cid === vm.cid && conn.a.port === hdr.srcPort ? conn.a : conn.b;
    const to = from === conn.a ? conn.b : conn.a;
    from.bufAlloc = hdr.bufAlloc;
    from.fwdCnt = hdr.fwdCnt;
    switch (hdr.op) {
      case Op.RST:
        this.forget(conn);
        peer.device.send(hdr);
        return;
      case Op.REQUEST:
        this.resetGuestConn(conn, -1);
        return;
      case Op.RESPONSE:
        if (conn.established || from !== conn.b) {
          this.resetGuestConn(conn, -1);
          return;
        }
        conn.established = true;
        break;
      case Op.RW: {
        if (!conn.established) {
          this.resetGuestConn(conn, -1);
          return;
        }
        // The sender may not have more in flight than the receiver said it can hold.
        const inFlight = (from.sent - to.fwdCnt) >>> 0;
        if (inFlight + hdr.len > to.bufAlloc) {
          this.log.warn({ cid: vm.cid, port: hdr.srcPort }, "guest overran its peer's credit: connection reset");
          this.resetGuestConn(conn, -1);
          return;
        }
        from.sent = (from.sent + hdr.len) >>> 0;
        break;
      }
      case Op.SHUTDOWN:
      case Op.CREDIT_UPDATE:
      case Op.CREDIT_REQUEST:
        if (!conn.established) {
          this.resetGuestConn(conn, -1);
          return;
        }
        break;
      default:
        this.resetGuestConn(conn, -1);
        return;
    }
    if (this.tap && hdr.op === Op.RW) {
      const data = Buffer.allocUnsafe(hdr.len);
      gather(payload, off, data, 0, hdr.len);
      this.tap(data);
    }
    if (!peer.device.send(hdr, payload, off)) {
      // Control packets to a guest that takes nothing are dropped; data is refused with RST.
      if (hdr.op === Op.RW) this.resetGuestConn(conn, -1);
    }
  }

  /** RSTs both ends of a guest connection (except `except`, a CID that is gone) and forgets it. */
  private resetGuestConn(c: GuestConn, except: number): void {
    this.forget(c);
    for (const [me, other] of [
      [c.a, c.b],
      [c.b, c.a],
    ] as const) {
      if (me.cid === except) continue;
      const dev = this.vms.get(me.cid)?.device;
      dev?.send({ srcCid: other.cid, dstCid: me.cid, srcPort: other.port, dstPort: me.port, len: 0, type: TYPE_STREAM, op: Op.RST, flags: 0, bufAlloc: 0, fwdCnt: 0 });
    }
  }

  private forget(c: Conn): void {
    if (c.kind === "guest") {
      this.conns.get(c.a.cid)?.delete(key(c.a.port, c.b.cid, c.b.port));
      this.conns.get(c.b.cid)?.delete(key(c.b.port, c.a.cid, c.a.port));
    } else {
      this.conns.get(c.vm.cid)?.delete(key(c.guestPort, HOST_CID, c.hostPort));
    }
  }

  private rst(dev: VsockDevice, hdr: VsockHeader): void {
    if (hdr.op === Op.RST) return;
    dev.send(replyHeader(hdr, Op.RST));
  }

  // ---- host side -------------------------------------------------------------------------------

  private fromGuestToHost(vm: RoutedVm, hdr: VsockHeader, payload: readonly Uint8Array[], off: number): void {
    const table = this.conns.get(vm.cid)!;
    const conn = table.get(key(hdr.srcPort, HOST_CID, hdr.dstPort)) as HostConn | undefined;
    if (!conn) {
      if (hdr.op === Op.REQUEST) this.guestConnectsHost(vm, hdr);
      else this.rst(vm.device, hdr);
      return;
    }
    conn.peerBufAlloc = hdr.bufAlloc;
    conn.peerFwdCnt = hdr.fwdCnt;
    switch (hdr.op) {
      case Op.RST:
        this.closeHostConn(conn, false);
        return;
      case Op.RESPONSE:
        if (conn.established || !conn.outbound) {
          this.closeHostConn(conn, true);
          return;
        }
        conn.established = true;
        conn.socket.write(`OK ${conn.hostPort}\n`);
        conn.socket.resume();
        break;
      case Op.RW: {
        if (!conn.established || conn.guestShut & SHUTDOWN_SEND) {
          this.closeHostConn(conn, true);
          return;
        }
        if (conn.rxCnt - conn.fwdCnt + hdr.len > HOST_BUF_ALLOC) {
          this.log.warn({ cid: vm.cid, port: hdr.srcPort }, "guest overran the host connection's credit: reset");
          this.closeHostConn(conn, true);
          return;
        }
        const data = Buffer.allocUnsafe(hdr.len);
        gather(payload, off, data, 0, hdr.len);
        this.tap?.(data);
        conn.rxCnt += hdr.len;
        conn.socket.write(data, () => {
          conn.fwdCnt += data.length;
          if (!conn.closed && conn.fwdCnt - conn.announced >= HOST_BUF_ALLOC / 4) this.toGuest(conn, Op.CREDIT_UPDATE);
        });
        break;
      }
      case Op.CREDIT_REQUEST:
        if (conn.established) this.toGuest(conn, Op.CREDIT_UPDATE);
        break;
      case Op.CREDIT_UPDATE:
        break;
      case Op.SHUTDOWN:
        conn.guestShut |= hdr.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
        if (conn.guestShut & SHUTDOWN_SEND) conn.socket.end();
        if (conn.guestShut === (SHUTDOWN_RCV | SHUTDOWN_SEND)) {
          // Linux expects the peer of a full shutdown to answer with RST.
          this.closeHostConn(conn, true);
          return;
        }
        break;
      default:
        this.closeHostConn(conn, true);
        return;
    }
    this.pumpToGuest(conn);
  }

  private newHostConn(vm: RoutedVm, guestPort: number, hostPort: number, socket: net.Socket, outbound: boolean, hdr?: VsockHeader): HostConn {
    const c: HostConn = {
      kind: "host",
      vm,
      guestPort,
      hostPort,
      socket,
      established: false,
      outbound,
      peerBufAlloc: hdr?.bufAlloc ?? 0,
      peerFwdCnt: hdr?.fwdCnt ?? 0,
      txCnt: 0,
      rxCnt: 0,
      fwdCnt: 0,
      announced: 0,
      toGuest: [],
      toGuestBytes: 0,
      hostEnded: false,
      sentShutdown: false,
      guestShut: 0,
      closed: false,
    };
    this.conns.get(vm.cid)!.set(key(guestPort, HOST_CID, hostPort), c);
    socket.on("data", (chunk: Buffer) => {
      c.toGuest.push(chunk);
      c.toGuestBytes += chunk.length;
      this.pumpToGuest(c);
    });
    socket.on("end", () => {
      c.hostEnded = true;
      this.pumpToGuest(c);
    });
    socket.on("error", (err) => this.log.debug({ cid: vm.cid, err: err.message }, "host connection error"));
    socket.on("close", () => {
      if (!c.closed) this.closeHostConn(c, true);
    });
    return c;
  }

  private guestConnectsHost(vm: RoutedVm, hdr: VsockHeader): void {
    // Deny by default: the path `<udsPath>_<port>` is never even looked at for a port not allowed.
    if (!vm.hostPorts?.has(hdr.dstPort)) {
      this.denied.set(vm.cid, (this.denied.get(vm.cid) ?? 0) + 1);
      this.log.debug({ cid: vm.cid, port: hdr.dstPort }, "guest asked for a host port not on its allow-list: RST");
      this.rst(vm.device, hdr);
      return;
    }
    if (this.conns.get(vm.cid)!.size >= MAX_CONNS_PER_VM) {
      this.rst(vm.device, hdr);
      return;
    }
    const socket = net.connect({ path: `${vm.udsPath}_${hdr.dstPort}`, allowHalfOpen: true });
    socket.pause();
    const c = this.newHostConn(vm, hdr.srcPort, hdr.dstPort, socket, false, hdr);
    const timer = setTimeout(() => socket.destroy(), HOST_CONNECT_TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      if (c.closed) return;
      c.established = true;
      this.toGuest(c, Op.RESPONSE);
      socket.resume();
    });
    socket.once("close", () => clearTimeout(timer));
  }

  /** A host process connected to a VM's uds-path: read `CONNECT <port>\n`, then ask the guest. */
  acceptHost(vm: RoutedVm, socket: net.Socket): void {
    let line = "";
    const timer = setTimeout(() => socket.destroy(), HOST_CONNECT_TIMEOUT_MS);
    socket.on("error", () => socket.destroy());
    const onData = (chunk: Buffer): void => {
      const nl = chunk.indexOf(10);
      line += chunk.subarray(0, nl < 0 ? chunk.length : nl).toString("latin1");
      if (line.length > CONNECT_LINE_MAX) {
        clearTimeout(timer);
        socket.destroy();
        return;
      }
      if (nl < 0) return;
      clearTimeout(timer);
      socket.off("data", onData);
      socket.pause();
      const m = /^CONNECT ([0-9]{1,10})\r?$/.exec(line);
      const port = m ? Number(m[1]) : NaN;
      if (!(port <= 0xffffffff) || !vm.device.ready || this.conns.get(vm.cid)!.size >= MAX_CONNS_PER_VM) {
        socket.destroy();
        return;
      }
      const hostPort = this.allocHostPort(vm, port);
      const c = this.newHostConn(vm, port, hostPort, socket, true);
      const rest = chunk.subarray(nl + 1);
      if (rest.length > 0) {
        c.toGuest.push(Buffer.from(rest));
        c.toGuestBytes += rest.length;
      }
      this.toGuest(c, Op.REQUEST);
      // Until the guest answers, bytes wait in the socket (paused).
      setTimeout(() => {
        if (!c.established && !c.closed) this.closeHostConn(c, true);
      }, HOST_CONNECT_TIMEOUT_MS).unref();
    };
    socket.on("data", onData);
  }

  private allocHostPort(vm: RoutedVm, guestPort: number): number {
    const table = this.conns.get(vm.cid)!;
    for (;;) {
      const p = this.nextHostPort;
      this.nextHostPort = p >= 0xfffffffe ? 1024 : p + 1;
      if (!table.has(key(guestPort, HOST_CID, p))) return p;
    }
  }

  private toGuest(c: HostConn, op: number, flags = 0, payload?: Buffer): boolean {
    c.announced = c.fwdCnt;
    const hdr: VsockHeader = {
      srcCid: HOST_CID,
      dstCid: c.vm.cid,
      srcPort: c.hostPort,
      dstPort: c.guestPort,
      len: payload?.length ?? 0,
      type: TYPE_STREAM,
      op,
      flags,
      bufAlloc: HOST_BUF_ALLOC,
      fwdCnt: c.fwdCnt >>> 0,
    };
    if (payload) this.tap?.(payload);
    return c.vm.device.send(hdr, payload ? [payload] : [], 0);
  }

  /** Sends host bytes to the guest as far as its credit allows; pauses the host when far ahead. */
  private pumpToGuest(c: HostConn): void {
    if (c.closed || !c.established) return;
    while (c.toGuest.length > 0 && !(c.guestShut & SHUTDOWN_RCV)) {
      const credit = c.peerBufAlloc - ((c.txCnt - c.peerFwdCnt) >>> 0);
      if (credit <= 0) break;
      const head = c.toGuest[0]!;
      const n = Math.min(head.length, credit, MAX_PAYLOAD);
      if (!this.toGuest(c, Op.RW, 0, head.subarray(0, n))) {
        this.closeHostConn(c, true);
        return;
      }
      c.txCnt = (c.txCnt + n) >>> 0;
      c.toGuestBytes -= n;
      if (n === head.length) c.toGuest.shift();
      else c.toGuest[0] = head.subarray(n);
    }
    if (c.guestShut & SHUTDOWN_RCV) {
      c.toGuest = [];
      c.toGuestBytes = 0;
    }
    if (c.toGuestBytes > HOST_READ_AHEAD) c.socket.pause();
    else if (!c.hostEnded) c.socket.resume();
    if (c.hostEnded && c.toGuest.length === 0 && !c.sentShutdown) {
      c.sentShutdown = true;
      this.toGuest(c, Op.SHUTDOWN, SHUTDOWN_SEND);
    }
  }

  private closeHostConn(c: HostConn, sendRst: boolean): void {
    if (c.closed) return;
    c.closed = true;
    this.forget(c);
    if (sendRst) this.toGuest(c, Op.RST);
    // end() lets bytes already written reach the host program; destroy() if it never drains.
    if (c.guestShut & SHUTDOWN_SEND || !sendRst) c.socket.end();
    else c.socket.destroy();
    setTimeout(() => c.socket.destroy(), 5000).unref();
  }
}
