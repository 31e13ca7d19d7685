// The vsock fabric: one vhost-user-vsock backend serving several VMs, routing between them and the
// host. `startFabric` is what `airlock vsock-fabric` and the VM-pair launcher call.
import { EventEmitter } from "node:events";
import { lstatSync, rmSync } from "node:fs";
import { AirlockError } from "../../../proto/src/errors.ts";
import { silentLogger, type Logger } from "../../../proto/src/log.ts";
import { HostListener } from "./host-conn.ts";
import { loadNative, type FabricNative, type Poller } from "./native.ts";
import { checkVmSpecs, type VmSpec } from "./options.ts";
import { Router, type RoutedVm } from "./router.ts";
import { DEVICE_FEATURES, F_ACCESS_PLATFORM, VhostUserSession } from "./vhost-user.ts";
import { VsockDevice } from "./vsock-device.ts";

export interface FabricOptions {
  vms: VmSpec[];
  logger?: Logger;
}

export interface VmDisconnected {
  cid: number;
  /** Why: null when QEMU closed the connection cleanly; otherwise the protocol/ring fault. */
  reason: Error | null;
}

export interface Fabric {
  /** Resolves once every socket listens (QEMU may connect from then on). */
  readonly ready: Promise<void>;
  /** Closes everything; idempotent. */
  stop(): Promise<void>;
  /** A VM's QEMU connected to its vhost-user socket. */
  on(event: "vm-connected", listener: (cid: number) => void): this;
  /** A VM's vhost-user connection ended (QEMU exited, or the VM was cut off for misbehaving). */
  on(event: "vm-disconnected", listener: (ev: VmDisconnected) => void): this;
  /** A per-VM fault (AirlockError FABRIC or GUEST_PROTOCOL with `cid` set) or a fabric failure. */
  on(event: "error", listener: (err: AirlockError & { cid?: number }) => void): this;
  /** The router, for status and tests. */
  readonly router: Router;
  /**
   * Per-VM counters (queued packets, ring positions, drops, connection requests to host ports not
   * on the VM's allow-list), for status and diagnosis.
   */
  stats(): {
    cid: number;
    connected: boolean;
    /**
     * Virtio features the frontend set (SET_FEATURES) in this session, as hex, or null before
     * that. Without a vIOMMU QEMU leaves VIRTIO_F_ACCESS_PLATFORM (bit 33) out of it even when the
     * driver negotiated it; `accessPlatformOffered` says the device offered it.
     */
    negotiatedFeatures: string | null;
    accessPlatformOffered: boolean;
    connections: number;
    deniedHostPorts: number;
    pendingPackets: number;
    pendingBytes: number;
    rxNextAvail: number | null;
    txNextAvail: number | null;
    dropped: number;
  }[];
}

class VmSlot {
  listenFd = -1;
  listenPoller: Poller | null = null;
  session: VhostUserSession | null = null;
  hostListener: HostListener | null = null;
  readonly device: VsockDevice;
  readonly routed: RoutedVm;

  constructor(
    readonly spec: VmSpec,
    fabric: FabricImpl,
    readonly log: Logger,
  ) {
    this.device = new VsockDevice(
      spec.cid,
      fabric.router,
      (q) => this.session?.notify(q),
      (err) => fabric.vmFault(this, err),
      log,
    );
    this.routed = { cid: spec.cid, groups: new Set(spec.groups), udsPath: spec.udsPath, hostPorts: new Set(spec.hostPorts ?? []), device: this.device };
  }
}

/** Removes a stale socket file left by an earlier run; refuses to delete anything else. */
function removeStaleSocket(p: string): void {
  let st;
  try {
    st = lstatSync(p);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new AirlockError("FABRIC", `${p} exists and is not a socket`, { hint: "choose another path or remove the file" });
  rmSync(p);
}

class FabricImpl extends EventEmitter implements Fabric {
  readonly router: Router;
  readonly ready: Promise<void>;
  private readonly slots: VmSlot[];
  private readonly native: FabricNative;
  private stopped = false;

  constructor(opts: FabricOptions) {
    super();
    checkVmSpecs(opts.vms);
    const log = (opts.logger ?? silentLogger).child({ module: "fabric" });
    this.native = loadNative();
    this.router = new Router(log);
    this.slots = opts.vms.map((spec) => new VmSlot(spec, this, log.child({ cid: spec.cid })));
    for (const s of this.slots) this.router.addVm(s.routed);
    this.ready = this.listenAll();
    this.ready.catch(() => this.stop());
  }

  private async listenAll(): Promise<void> {
    try {
      await this.listenEach();
    } catch (err) {
      if (err instanceof AirlockError) throw err;
      throw new AirlockError("FABRIC", `cannot listen: ${(err as Error).message}`, { cause: err, hint: "check that the socket directories exist and are writable" });
    }
  }

  private async listenEach(): Promise<void> {
    for (const slot of this.slots) {
      removeStaleSocket(slot.spec.socket);
      removeStaleSocket(slot.spec.udsPath);
      try {
        slot.listenFd = this.native.listenUnix(slot.spec.socket, 4);
      } catch (err) {
        throw new AirlockError("FABRIC", `VM ${slot.spec.cid}: cannot listen on ${slot.spec.socket}: ${(err as Error).message}`, {
          cause: err,
          hint: "check that the socket's directory exists and is writable",
        });
      }
      slot.listenPoller = new this.native.Poller(slot.listenFd, () => this.acceptVhost(slot));
      slot.listenPoller.start(true);
      slot.hostListener = new HostListener(slot.spec.udsPath, (sock) => this.router.acceptHost(slot.routed, sock), slot.log);
      await slot.hostListener.listen();
      slot.log.info({ socket: slot.spec.socket, udsPath: slot.spec.udsPath, groups: slot.spec.groups, hostPorts: slot.spec.hostPorts ?? [] }, "vsock fabric listening");
    }
  }

  private acceptVhost(slot: VmSlot): void {
    if (this.stopped) return;
    for (;;) {
      let fd: number;
      try {
        fd = this.native.accept(slot.listenFd);
      } catch (err) {
        slot.log.error({ err: (err as Error).message }, "accept failed");
        return;
      }
      if (fd < 0) return;
      if (slot.session || slot.device.broken) {
        // One frontend per VM; a VM that was cut off stays cut off.
        slot.log.warn("refused a second vhost-user connection");
        this.native.close(fd);
        continue;
      }
      slot.log.info("QEMU connected");
      slot.device.reset();
      try {
        slot.session = new VhostUserSession(
          this.native,
          fd,
          slot.spec.cid,
          slot.device,
          slot.log,
          (reason) => this.sessionClosed(slot, reason),
          () => {
            slot.device.dropPending();
            this.router.vmDown(slot.spec.cid);
          },
        );
      } catch (err) {
        slot.log.error({ err: (err as Error).message }, "cannot serve the vhost-user connection");
        this.native.close(fd);
        continue;
      }
      this.emit("vm-connected", slot.spec.cid);
    }
  }

  private sessionClosed(slot: VmSlot, reason: Error | null): void {
    slot.session = null;
    slot.device.reset();
    this.router.vmDown(slot.spec.cid);
    if (this.stopped) return;
    if (reason) {
      slot.log.error({ err: reason.message }, "VM cut off");
      this.emitError(new AirlockError("GUEST_PROTOCOL", `VM ${slot.spec.cid}: ${reason.message}`, { cause: reason }), slot.spec.cid);
    } else {
      slot.log.info("QEMU disconnected");
    }
    this.emit("vm-disconnected", { cid: slot.spec.cid, reason } satisfies VmDisconnected);
  }

  /** The device found the guest's rings malformed: end its session (and only its). */
  vmFault(slot: VmSlot, err: Error): void {
    if (slot.session) slot.session.close(err);
    else this.router.vmDown(slot.spec.cid);
  }

  private emitError(err: AirlockError, cid: number): void {
    const e = Object.assign(err, { cid });
    if (this.listenerCount("error") > 0) this.emit("error", e);
  }

  stats(): ReturnType<Fabric["stats"]> {
    return this.slots.map((s) => ({
      cid: s.spec.cid,
      connected: s.session !== null,
      negotiatedFeatures: s.session?.featuresSet ? `0x${s.session.negotiatedFeatures.toString(16)}` : null,
      accessPlatformOffered: (DEVICE_FEATURES & F_ACCESS_PLATFORM) !== 0n,
      connections: this.router.connectionCount(s.spec.cid),
      deniedHostPorts: this.router.deniedHostPorts(s.spec.cid),
      ...s.device.stats(),
    }));
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const closing: Promise<void>[] = [];
    for (const slot of this.slots) {
      slot.session?.close(null);
      slot.listenPoller?.close();
      if (slot.listenFd >= 0) this.native.close(slot.listenFd);
      slot.listenFd = -1;
      if (slot.hostListener) closing.push(slot.hostListener.close());
      rmSync(slot.spec.socket, { force: true });
    }
    await Promise.all(closing);
  }
}

/** Starts the fabric for these VMs; await `ready` before launching QEMU. */
export function startFabric(opts: FabricOptions): Fabric {
  return new FabricImpl(opts);
}
