// Host-side vsock connections: the fabric is the guest's vsock peer for CID 2.
//  - guest -> host: a guest's REQUEST to CID 2 port P dials the host listener `<uds-path>_P`, but
//    only for ports on that VM's allow-list (deny by default: RST, counted, the filesystem is
//    never touched for another port);
//  - host -> guest: a host process connects to `uds-path` (the listener is HostListener below)
//    and writes `CONNECT <port>\n`; the fabric sends the guest a REQUEST and answers
//    `OK <hostport>\n` once the guest accepts.
// Each connection has exactly one lifecycle state (HostConnState) and moves as the table below
// says; flow control (the fabric's own credit accounting) and the two half-closes ride along.
//
//   handshake  --CONNECT line, guest ready-->    requesting  --guest RESPONSE-->  open
//   (host socket reads `CONNECT <port>\n`)       (REQUEST sent, host paused)      (data flows)
//   dialing    --host listener accepted-->       open
//   (guest REQUEST, `<uds-path>_P` dialled)
//   any        --RST, bad packet, timeout, host socket closed, full shutdown-->  closed
//
// Sockets and the guest's device are reached through small interfaces (HostSocket, HostVm), so
// tests drive the state machine with fake events and no real sockets.
import net from "node:net";
import type { Logger } from "../../../proto/src/log.ts";
import { HOST_CID, MAX_PAYLOAD, Op, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM, replyHeader, type VsockHeader } from "./vsock-packet.ts";
import { gather } from "./virtqueue.ts";

/** Receive buffer the fabric advertises for host connections. */
export const HOST_BUF_ALLOC = 256 * 1024;
/** Host bytes read ahead of the guest's credit before the host socket is paused. */
const HOST_READ_AHEAD = 256 * 1024;
export const HOST_CONNECT_TIMEOUT_MS = 10_000;
const CONNECT_LINE_MAX = 64;

/** One lifecycle state per connection. */
export type HostConnState =
  /** Host -> guest: reading the `CONNECT <port>\n` line; not in the connection table yet. */
  | "handshake"
  /** Host -> guest: REQUEST sent to the guest, waiting for its RESPONSE (host socket paused). */
  | "requesting"
  /** Guest -> host: dialling `<uds-path>_P`, RESPONSE not sent yet. */
  | "dialing"
  /** Data flows both ways (each way until its half-close). */
  | "open"
  /** Gone: forgotten by the table, socket ended or destroyed. */
  | "closed";

/** The host -> guest direction: still reading the host, host sent EOF, SHUTDOWN(SEND) sent to the guest. */
export type HostEnd = "reading" | "ended" | "shutdown-sent";

/** What a host connection needs of a socket (a net.Socket, or a fake in tests). */
export interface HostSocket {
  write(data: Uint8Array | string, cb?: (err?: Error | null) => void): boolean;
  end(): unknown;
  destroy(): unknown;
  pause(): unknown;
  resume(): unknown;
  on(event: "data", fn: (chunk: Buffer) => void): unknown;
  on(event: "end" | "close" | "connect", fn: () => void): unknown;
  on(event: "error", fn: (err: Error) => void): unknown;
  once(event: "connect" | "close", fn: () => void): unknown;
  off(event: "data", fn: (chunk: Buffer) => void): unknown;
}

/** What a host connection needs of a VM. */
export interface HostVm {
  cid: number;
  udsPath: string;
  hostPorts?: ReadonlySet<number>;
  device: { readonly ready: boolean; send(hdr: VsockHeader, payload?: readonly Uint8Array[], off?: number): boolean };
}

export interface HostConn {
  kind: "host";
  state: HostConnState;
  vm: HostVm;
  guestPort: number;
  hostPort: number;
  socket: HostSocket;
  /** Initiated by the host (CONNECT) rather than by the guest. */
  outbound: boolean;
  peerBufAlloc: number;
  peerFwdCnt: number;
  txCnt: number; // bytes sent to the guest
  rxCnt: number; // bytes received from the guest
  fwdCnt: number; // bytes handed to the host socket and flushed
  announced: number; // fwdCnt last told to the guest
  toGuest: Buffer[];
  toGuestBytes: number;
  hostEnd: HostEnd;
  /** SHUTDOWN flags the guest sent (SHUTDOWN_RCV | SHUTDOWN_SEND). */
  guestShut: number;
}

export function connKey(localPort: number, peerCid: number, peerPort: number): string {
  return `${localPort}:${peerCid}:${peerPort}`;
}

export function hostConnKey(c: HostConn): string {
  return connKey(c.guestPort, HOST_CID, c.hostPort);
}

/** The router's per-VM connection tables, as far as host connections use them. */
export interface ConnTable {
  size(cid: number): number;
  has(cid: number, key: string): boolean;
  add(cid: number, key: string, c: HostConn): void;
  remove(cid: number, key: string): void;
}

export interface HostConnOptions {
  log: Logger;
  table: ConnTable;
  maxConnsPerVm: number;
  tap?: ((data: Uint8Array) => void) | undefined;
  /** Opens a host listener's socket (default: net.connect, half-open allowed). */
  dial?: (path: string) => HostSocket;
}

/** All host-side connections of one router. */
export class HostConnections {
  private readonly denied = new Map<number, number>();
  private nextHostPort = 1024;
  private readonly dial: (path: string) => HostSocket;

  constructor(private readonly o: HostConnOptions) {
    this.dial = o.dial ?? ((p) => net.connect({ path: p, allowHalfOpen: true }));
  }

  /** Connection requests a VM made to host ports not on its allow-list (refused with RST). */
  deniedHostPorts(cid: number): number {
    return this.denied.get(cid) ?? 0;
  }

  /** A guest packet for CID 2, for the connection `conn` (if the table has one). */
  fromGuest(vm: HostVm, conn: HostConn | undefined, hdr: VsockHeader, payload: readonly Uint8Array[], off: number): void {
    if (!conn) {
      if (hdr.op === Op.REQUEST) this.guestConnects(vm, hdr);
      else if (hdr.op !== Op.RST) vm.device.send(replyHeader(hdr, Op.RST));
      return;
    }
    conn.peerBufAlloc = hdr.bufAlloc;
    conn.peerFwdCnt = hdr.fwdCnt;
    switch (hdr.op) {
      case Op.RST:
        this.close(conn, false);
        return;
      case Op.RESPONSE:
        if (conn.state !== "requesting") {
          this.close(conn, true);
          return;
        }
        conn.state = "open";
        conn.socket.write(`OK ${conn.hostPort}\n`);
        conn.socket.resume();
        break;
      case Op.RW: {
        if (conn.state !== "open" || conn.guestShut & SHUTDOWN_SEND) {
          this.close(conn, true);
          return;
        }
        if (conn.rxCnt - conn.fwdCnt + hdr.len > HOST_BUF_ALLOC) {
          this.o.log.warn({ cid: vm.cid, port: hdr.srcPort }, "guest overran the host connection's credit: reset");
          this.close(conn, true);
          return;
        }
        const data = Buffer.allocUnsafe(hdr.len);
        gather(payload, off, data, 0, hdr.len);
        this.o.tap?.(data);
        conn.rxCnt += hdr.len;
        conn.socket.write(data, () => {
          conn.fwdCnt += data.length;
          if (conn.state !== "closed" && conn.fwdCnt - conn.announced >= HOST_BUF_ALLOC / 4) this.toGuest(conn, Op.CREDIT_UPDATE);
        });
        break;
      }
      case Op.CREDIT_REQUEST:
        if (conn.state === "open") this.toGuest(conn, Op.CREDIT_UPDATE);
        break;
      case Op.CREDIT_UPDATE:
        break;
      case Op.SHUTDOWN:
        conn.guestShut |= hdr.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
        if (conn.guestShut & SHUTDOWN_SEND) conn.socket.end();
        if (conn.guestShut === (SHUTDOWN_RCV | SHUTDOWN_SEND)) {
          // Linux expects the peer of a full shutdown to answer with RST.
          this.close(conn, true);
          return;
        }
        break;
      default:
        this.close(conn, true);
        return;
    }
    this.pump(conn);
  }

  private newConn(vm: HostVm, state: HostConnState, socket: HostSocket, outbound: boolean, hdr?: VsockHeader): HostConn {
    return {
      kind: "host",
      state,
      vm,
      guestPort: hdr?.srcPort ?? 0,
      hostPort: hdr?.dstPort ?? 0,
      socket,
      outbound,
      peerBufAlloc: hdr?.bufAlloc ?? 0,
      peerFwdCnt: hdr?.fwdCnt ?? 0,
      txCnt: 0,
      rxCnt: 0,
      fwdCnt: 0,
      announced: 0,
      toGuest: [],
      toGuestBytes: 0,
      hostEnd: "reading",
      guestShut: 0,
    };
  }

  /** Puts a connection in its VM's table and wires its socket's data, EOF and close. */
  private attach(c: HostConn): void {
    this.o.table.add(c.vm.cid, hostConnKey(c), c);
    c.socket.on("data", (chunk: Buffer) => {
      c.toGuest.push(chunk);
      c.toGuestBytes += chunk.length;
      this.pump(c);
    });
    c.socket.on("end", () => {
      if (c.hostEnd === "reading") c.hostEnd = "ended";
      this.pump(c);
    });
    c.socket.on("error", (err) => this.o.log.debug({ cid: c.vm.cid, err: err.message }, "host connection error"));
    c.socket.on("close", () => this.close(c, true));
  }

  private guestConnects(vm: HostVm, hdr: VsockHeader): void {
    // Deny by default: the path `<udsPath>_<port>` is never even looked at for a port not allowed.
    if (!vm.hostPorts?.has(hdr.dstPort)) {
      this.denied.set(vm.cid, (this.denied.get(vm.cid) ?? 0) + 1);
      this.o.log.debug({ cid: vm.cid, port: hdr.dstPort }, "guest asked for a host port not on its allow-list: RST");
      vm.device.send(replyHeader(hdr, Op.RST));
      return;
    }
    if (this.o.table.size(vm.cid) >= this.o.maxConnsPerVm) {
      vm.device.send(replyHeader(hdr, Op.RST));
      return;
    }
    const socket = this.dial(`${vm.udsPath}_${hdr.dstPort}`);
    socket.pause();
    const c = this.newConn(vm, "dialing", socket, false, hdr);
    this.attach(c);
    const timer = setTimeout(() => socket.destroy(), HOST_CONNECT_TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      if (c.state !== "dialing") return;
      c.state = "open";
      this.toGuest(c, Op.RESPONSE);
      socket.resume();
    });
    socket.once("close", () => clearTimeout(timer));
  }

  /** A host process connected to a VM's uds-path: read `CONNECT <port>\n`, then ask the guest. */
  acceptHost(vm: HostVm, socket: HostSocket): HostConn {
    const c = this.newConn(vm, "handshake", socket, true);
    let line = "";
    const timer = setTimeout(() => socket.destroy(), HOST_CONNECT_TIMEOUT_MS);
    const refuse = (): void => {
      clearTimeout(timer);
      c.state = "closed";
      socket.destroy();
    };
    socket.on("error", () => socket.destroy());
    socket.once("close", () => {
      clearTimeout(timer);
      if (c.state === "handshake") c.state = "closed";
    });
    const onData = (chunk: Buffer): void => {
      if (c.state !== "handshake") return;
      const nl = chunk.indexOf(10);
      line += chunk.subarray(0, nl < 0 ? chunk.length : nl).toString("latin1");
      if (line.length > CONNECT_LINE_MAX) return refuse();
      if (nl < 0) return;
      clearTimeout(timer);
      socket.off("data", onData);
      socket.pause();
      const m = /^CONNECT ([0-9]{1,10})\r?$/.exec(line);
      const port = m ? Number(m[1]) : NaN;
      if (!(port <= 0xffffffff) || !vm.device.ready || this.o.table.size(vm.cid) >= this.o.maxConnsPerVm) return refuse();
      c.guestPort = port;
      c.hostPort = this.allocHostPort(vm, port);
      c.state = "requesting";
      this.attach(c);
      const rest = chunk.subarray(nl + 1);
      if (rest.length > 0) {
        c.toGuest.push(Buffer.from(rest));
        c.toGuestBytes += rest.length;
      }
      this.toGuest(c, Op.REQUEST);
      // Until the guest answers, bytes wait in the socket (paused).
      setTimeout(() => {
        if (c.state === "requesting") this.close(c, true);
      }, HOST_CONNECT_TIMEOUT_MS).unref();
    };
    socket.on("data", onData);
    return c;
  }

  private allocHostPort(vm: HostVm, guestPort: number): number {
    for (;;) {
      const p = this.nextHostPort;
      this.nextHostPort = p >= 0xfffffffe ? 1024 : p + 1;
      if (!this.o.table.has(vm.cid, connKey(guestPort, HOST_CID, p))) return p;
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
    if (payload) this.o.tap?.(payload);
    return c.vm.device.send(hdr, payload ? [payload] : [], 0);
  }

  /** Sends host bytes to the guest as far as its credit allows; pauses the host when far ahead. */
  private pump(c: HostConn): void {
    if (c.state !== "open") return;
    while (c.toGuest.length > 0 && !(c.guestShut & SHUTDOWN_RCV)) {
      const credit = c.peerBufAlloc - ((c.txCnt - c.peerFwdCnt) >>> 0);
      if (credit <= 0) break;
      const head = c.toGuest[0]!;
      const n = Math.min(head.length, credit, MAX_PAYLOAD);
      if (!this.toGuest(c, Op.RW, 0, head.subarray(0, n))) {
        this.close(c, true);
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
    else if (c.hostEnd === "reading") c.socket.resume();
    if (c.hostEnd === "ended" && c.toGuest.length === 0) {
      c.hostEnd = "shutdown-sent";
      this.toGuest(c, Op.SHUTDOWN, SHUTDOWN_SEND);
    }
  }

  /** Ends a connection (RST to the guest when `sendRst`) and forgets it; idempotent. */
  close(c: HostConn, sendRst: boolean): void {
    if (c.state === "closed") return;
    const wasInTable = c.state !== "handshake";
    c.state = "closed";
    if (wasInTable) this.o.table.remove(c.vm.cid, hostConnKey(c));
    if (sendRst && wasInTable) this.toGuest(c, Op.RST);
    // end() lets bytes already written reach the host program; destroy() if it never drains.
    if (c.guestShut & SHUTDOWN_SEND || !sendRst) c.socket.end();
    else c.socket.destroy();
    setTimeout(() => c.socket.destroy(), 5000).unref();
  }
}

/** The host's door to one VM: a Unix socket at `uds-path` whose connections start with CONNECT. */
export class HostListener {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly path: string,
    private readonly accept: (socket: net.Socket) => void,
    private readonly log: Logger,
  ) {}

  async listen(): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true }, (sock) => {
      this.sockets.add(sock);
      sock.once("close", () => this.sockets.delete(sock));
      this.accept(sock);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.path, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (err) => this.log.error({ err: err.message }, "host socket server error"));
  }

  /** Destroys every host connection and stops listening. */
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = null;
    return server ? new Promise((resolve) => server.close(() => resolve())) : Promise.resolve();
  }
}
