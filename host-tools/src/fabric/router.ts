// Vsock routing between guests and the host, after rust-vmm's vhost-device-vsock:
//  - guest <-> guest only when the two VMs share a group; packets are relayed as they are (the
//    guests run flow control end to end) but the fabric tracks each connection so that packets
//    for unknown connections, forged sources and credit overruns are refused;
//  - guest <-> host (CID 2): host-conn.ts, one state machine per connection (`<uds-path>_P`
//    listeners for allow-listed ports only, `CONNECT <port>` from host processes); the router
//    hands it the packets and shares its per-VM connection tables with it;
//  - anything else gets RST.
import { openSync, writeSync } from "node:fs";
import type { Logger } from "../../../proto/src/log.ts";
import { HostConnections, connKey as key, hostConnKey, type HostConn, type HostSocket } from "./host-conn.ts";
import { HOST_CID, Op, TYPE_STREAM, replyHeader, type VsockHeader } from "./vsock-packet.ts";
import type { PacketSink, VsockDevice } from "./vsock-device.ts";
import { gather } from "./virtqueue.ts";

export { HOST_BUF_ALLOC } from "./host-conn.ts";
/** Connections one VM may hold at once. */
export const MAX_CONNS_PER_VM = 4096;

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

type Conn = GuestConn | HostConn;

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
  private readonly tap: ((data: Uint8Array) => void) | undefined;
  private readonly host: HostConnections;

  constructor(private readonly log: Logger) {
    this.tap = openTap(log);
    const conns = this.conns;
    this.host = new HostConnections({
      log,
      tap: this.tap,
      maxConnsPerVm: MAX_CONNS_PER_VM,
      table: {
        size: (cid) => conns.get(cid)?.size ?? 0,
        has: (cid, k) => conns.get(cid)?.has(k) ?? false,
        add: (cid, k, c) => conns.get(cid)?.set(k, c),
        remove: (cid, k) => conns.get(cid)?.delete(k),
      },
    });
  }

  addVm(vm: RoutedVm): void {
    this.vms.set(vm.cid, vm);
    this.conns.set(vm.cid, new Map());
  }

  /** Connection requests a VM made to host ports not on its allow-list (refused with RST). */
  deniedHostPorts(cid: number): number {
    return this.host.deniedHostPorts(cid);
  }

  /** A host process connected to a VM's uds-path: it speaks `CONNECT <port>\n` first. */
  acceptHost(vm: RoutedVm, socket: HostSocket): void {
    this.host.acceptHost(vm, socket);
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
      else this.host.close(c, false);
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
    const table = this.conns.get(vm.cid)!;
    if (hdr.dstCid === HOST_CID) {
      this.host.fromGuest(vm, table.get(key(hdr.srcPort, HOST_CID, hdr.dstPort)) as HostConn | undefined, hdr, payload, off);
      return;
    }
    const peer = this.vms.get(hdr.dstCid);
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
      this.conns.get(c.vm.cid)?.delete(hostConnKey(c));
    }
  }

  private rst(dev: VsockDevice, hdr: VsockHeader): void {
    if (hdr.op === Op.RST) return;
    dev.send(replyHeader(hdr, Op.RST));
  }
}
