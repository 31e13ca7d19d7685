// The supervisor of one VM pair: builds or reuses the images, starts the vsock fabric and both
// VMs paused, checks them over QMP, resumes them, follows the firewall's reports, and fails
// closed: when either QEMU dies, its QMP link drops or the fabric fails, the other VM is killed at
// once and the state says what happened.
import { EventEmitter } from "node:events";
import { mkdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { PSP_VSOCK_PORT } from "../../../proto/src/attestation/psp-wire.ts";
import { HOST_CONTROL_PORT, HOST_SANDBOX_PSP_PORT, KBS_VSOCK_PORT } from "../../../proto/src/control.ts";
import { loadManifest, type Manifest } from "../../../proto/src/manifest/index.ts";
import { imageMeasurement, roomIdentity } from "./room-digest.ts";
import { startFabric, type Fabric } from "../fabric/index.ts";
import { chooseAccel, type AccelChoice } from "./accel.ts";
import { PairDir, type PairState } from "./pair-state.ts";
import { HostLink, type HostLinkEvent } from "./host-link.ts";
import { RoomServices } from "./room-services.ts";
import { checkGuest, describeDevices } from "./prelaunch-checks.ts";
import type { VmSpec } from "./qemu-args.ts";
import { hostNicDestinations } from "./nic.ts";
import { Vm } from "./vm.ts";
import { writeRunSummary } from "./run-summary.ts";
import { collectionBoundSeconds } from "../../../proto/src/room.ts";
import { allocatePort, releasePair, reservePair } from "../fleet/reservations.ts";
import { pairDemand } from "../fleet/capacity.ts";

/** Both guests' programs must be running within this bound after resume. */
export const READY_TIMEOUT_MS = 180_000;
/** Bounds kept by the host: inputs in (plus their size at 256 KiB/s), and the firewall's report after a deadline. */
const INPUT_BOUND_S = 120;
const REPORT_MARGIN_S = 30;
const statSize = (file: string): number => {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
};

/** Guest CIDs inside a pair's own fabric. */
export const CID = { firewall: 3, sandbox: 4 } as const;

export interface PairOptions {
  name: string;
  manifestPath: string;
  accel: AccelChoice;
  /** Capture the sandbox's console (never done otherwise). */
  debug: boolean;
  log: Logger;
  /** Keep the pair running after the workload ends, until it is stopped (`airlock up`). */
  hold?: boolean;
  /** Where released outputs are written (default: the pair's state folder, outputs/). */
  outDir?: string;
  onProgress?: (step: string) => void;
  /** A service room's API on this host: address and port (default 127.0.0.1 and a free port). */
  api?: { address?: string; port?: number };
  /** The token of the host claim `airlock up` made for this pair, which the supervisor adopts. */
  reservationToken?: string;
}

export interface PairEvents {
  control: [HostLinkEvent];
  /** The pair reached a terminal status (completed, stopped or failed). */
  end: [PairState];
}

type PairRole = "firewall" | "sandbox";

/** How long the firewall has to say why, when the sandbox powers off before its part is done. */
const EARLY_EXIT_GRACE_MS = 3000;

export class Pair extends EventEmitter<PairEvents> {
  readonly dir: PairDir;
  readonly manifest: Manifest;
  private state: PairState;
  private vms: Partial<Record<PairRole, Vm>> = {};
  private fabric: Fabric | undefined;
  private hostLink: HostLink | undefined;
  private services: RoomServices | undefined;
  private workloadExited = false;
  private firewallDone = false;
  /** The firewall said the run completed and put its outputs in place. */
  private runCompleted = false;
  private outputsComplete = false;
  private deadline: NodeJS.Timeout | undefined;
  private ending: Promise<void> | undefined;
  private readyParts = new Set<string>();
  /** Sandbox VMs a service room's reset replaced: their end is expected. */
  private retired = new Set<Vm>();
  private resetting: Promise<void> | undefined;
  private startedAt = 0;

  constructor(private readonly options: PairOptions) {
    super();
    this.manifest = loadManifest(options.manifestPath);
    this.dir = new PairDir(options.name);
    this.state = {
      name: options.name,
      manifest: this.manifest.file,
      manifestDigest: "",
      tee: "emulated",
      debug: options.debug,
      status: "starting",
      supervisorPid: process.pid,
      startedAt: new Date().toISOString(),
      updatedAt: "",
      vms: { firewall: { role: "firewall", status: "starting" }, sandbox: { role: "sandbox", status: "starting" } },
    };
  }

  get current(): PairState {
    return this.state;
  }

  private save(): void {
    this.dir.write(this.state);
  }

  private progress(step: string): void {
    this.options.log.info(step);
    this.options.onProgress?.(step);
  }

  /** Starts the pair; resolves when both guests' programs run. Fails closed on any error. */
  async start(): Promise<void> {
    // The host claim first (name free, room for it, a slot), atomic with every other pair's: a
    // refusal ends the pair before anything started, and writes nothing into a folder that may
    // belong to the pair that holds the name.
    try {
      const r = await reservePair({ name: this.options.name, demand: pairDemand(this.manifest), ...(this.options.reservationToken !== undefined && { token: this.options.reservationToken }) });
      this.state.reservation = { slot: r.slot, ports: r.ports, ...r.demand };
    } catch (err) {
      const e = AirlockError.from(err);
      this.state = { ...this.state, status: "failed", reason: e.message, code: e.code };
      this.ending = Promise.resolve();
      this.emit("end", this.state);
      throw err;
    }
    this.dir.lock();
    this.save();
    try {
      await this.launch();
    } catch (err) {
      await this.fail(AirlockError.from(err).message);
      throw err;
    }
  }

  /** Stops a launch in progress once the pair is ending (a signal, a failure). */
  private checkNotEnding(): void {
    if (this.ending) throw new AirlockError("PAIR_FAILED", this.state.reason ?? "the pair was stopped while starting");
  }

  private async launch(): Promise<void> {
    const { log } = this.options;
    this.progress("building or reusing images");
    const identity = await roomIdentity(this.manifest);
    const images = { ...identity.images };
    // A host that launches another sandbox than the room pins (AIRLOCK_LAUNCH_SANDBOX_IMAGE, for the
    // tests that prove it is refused): the emulated PSP then reports that image's measurement.
    const other = process.env.AIRLOCK_LAUNCH_SANDBOX_IMAGE;
    if (other) images.sandbox = { ...images.sandbox, dir: other, info: { ...images.sandbox.info, ...(JSON.parse(readFileSync(path.join(other, "image.json"), "utf8")) as object) } };
    this.state.manifestDigest = identity.digest.toString("hex");
    this.state.measurements = { firewall: identity.pins.firewall, sandbox: identity.pins.sandbox };
    this.checkNotEnding();
    const accel = await chooseAccel(this.options.accel, log, (step) => this.progress(step));
    this.state.accel = accel;
    this.save();

    mkdirSync(path.dirname(this.dir.vhostSocket("firewall")), { recursive: true, mode: 0o700 });
    const vsock = (role: PairRole): { socket: string; udsPath: string } => ({ socket: this.dir.vhostSocket(role), udsPath: this.dir.vsockUdsPath(role) });
    this.progress("starting the vsock fabric");
    this.fabric = startFabric({
      vms: [
        // The sandbox's group holds only the firewall; the host never listens on the sandbox's uds-path.
        // Guest -> host is deny-by-default: the firewall reaches exactly the host's control, PSP,
        // key broker and sandbox-PSP relay ports; the sandbox reaches no host port at all.
        { cid: CID.firewall, ...vsock("firewall"), groups: [`pair-${this.options.name}`], hostPorts: [HOST_CONTROL_PORT, PSP_VSOCK_PORT, KBS_VSOCK_PORT, HOST_SANDBOX_PSP_PORT] },
        { cid: CID.sandbox, ...vsock("sandbox"), groups: [`pair-${this.options.name}`], hostPorts: [] },
      ],
      logger: log.child({ part: "fabric" }),
    });
    this.fabric.on("error", (err) => {
      if (err.cid === undefined) void this.fail(`the vsock fabric failed: ${err.message}`);
      else log.warn({ cid: err.cid, err: err.message }, "a VM misbehaved on vsock and was cut off");
    });
    await this.fabric.ready;
    const linkLog = log.child({ part: "host-link" });
    this.services = new RoomServices({
      udsPath: vsock("firewall").udsPath,
      manifest: this.manifest,
      identity,
      // What the emulated PSPs report, as hardware would: the launched images' measurements. They
      // are the pinned ones (computed once, with the digest) unless the host launched another sandbox.
      launched: {
        firewall: Buffer.from(identity.pins.firewall, "hex"),
        sandbox: other ? await imageMeasurement(images.sandbox.dir, this.manifest.resources.sandbox.vcpus) : Buffer.from(identity.pins.sandbox, "hex"),
      },
      log: linkLog,
    });
    this.hostLink = new HostLink({
      udsPath: vsock("firewall").udsPath,
      manifest: this.manifest,
      identity,
      services: this.services,
      outDir: this.outDir,
      log: linkLog,
      hold: this.options.hold ?? false,
    });
    this.hostLink.on("event", (ev) => this.onControl(ev));
    this.hostLink.on("lost", (err) => {
      // The firewall's own code ([KEY_RELEASE], [CONSENT], …) travels with the reason.
      if (err instanceof AirlockError && !this.ending) this.state.code = err.code;
      void this.fail(`firewall control link: ${err.message}`);
    });
    await this.services.start();
    await this.hostLink.listen();

    // A service room's API: one host port forwarded to the firewall's (nothing else reaches it).
    let apiForward: { hostAddress: string; hostPort: number } | undefined;
    if (this.manifest.workload.service) {
      const hostAddress = this.options.api?.address ?? "127.0.0.1";
      // A port of the pair's host claim (fleet/reservations.ts): no other pair gets it while this one lives.
      apiForward = { hostAddress, hostPort: this.options.api?.port ?? (await allocatePort(this.options.name)) };
      this.state.service = { endpoint: `${hostAddress}:${apiForward.hostPort}`, tls: this.manifest.workload.service.api.tls, status: "starting", served: 0, refused: 0, resets: 0 };
    }

    this.startedAt = Date.now();
    this.progress(`starting both VMs paused (${accel})`);
    for (const role of ["firewall", "sandbox"] as const) {
      this.checkNotEnding();
      const res = this.manifest.resources[role];
      const spec: VmSpec = {
        pair: this.options.name,
        role,
        imageDir: images[role].dir,
        cmdline: images[role].info.cmdline,
        memoryMiB: res.memoryMiB,
        vcpus: res.vcpus,
        accel,
        qmpSocket: this.dir.qmpSocket(role),
        inspectSocket: this.dir.inspectSocket(role),
        console: role === "firewall" || this.options.debug ? "stdio" : "none",
        vsockSocket: vsock(role).socket,
        // The firewall's NIC, when the room names destinations (egress, governance); never the sandbox's.
        ...(role === "firewall" && { nic: hostNicDestinations(this.manifest) }),
        ...(role === "firewall" && apiForward ? { apiForward } : {}),
      };
      const vm = new Vm(spec, log.child({ vm: role }), spec.console === "stdio" ? this.dir.consoleLog(role) : undefined);
      this.vms[role] = vm;
      this.watch(role, vm);
      await vm.start();
      this.state.vms[role] = { role, pid: vm.pid!, status: "paused", inspectQmp: spec.inspectSocket! };
      this.save();
    }

    this.checkNotEnding();
    this.progress("checking what the guests got (QMP)");
    for (const role of ["firewall", "sandbox"] as const) {
      const inv = await checkGuest(this.vms[role]!.spec, this.vms[role]!.qmp!);
      this.state.vms[role].devices = describeDevices(inv);
    }

    this.checkNotEnding();
    this.progress("resuming both VMs");
    for (const role of ["firewall", "sandbox"] as const) {
      await this.vms[role]!.resume();
      this.state.vms[role].status = "running";
    }
    this.save();

    this.progress("waiting for both guests' programs");
    await this.waitReady();
    if (this.state.service) {
      this.progress("waiting for the workload's server and the API");
      await this.waitReady("service-ready");
    }
    this.state.status = "running";
    this.state.readyMs = Date.now() - this.startedAt;
    this.save();
    this.progress(`pair ready in ${(this.state.readyMs / 1000).toFixed(1)} s`);
  }

  private waitReady(part?: "service-ready"): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (part ? this.readyParts.has(part) : this.readyParts.has("firewall-ready") && this.readyParts.has("sandbox-ready")) done(undefined);
      };
      const onEnd = (s: PairState): void => done(new AirlockError("PAIR_FAILED", s.reason ?? "the pair stopped before it was ready"));
      const timer = setTimeout(() => done(new AirlockError("TIMEOUT", `the guests were not ready within ${READY_TIMEOUT_MS / 1000} s`, { hint: "see `airlock logs` for the firewall console" })), READY_TIMEOUT_MS);
      const done = (err: Error | undefined): void => {
        clearTimeout(timer);
        this.off("control", check);
        this.off("end", onEnd);
        if (err) reject(err);
        else resolve();
      };
      this.on("control", check);
      this.on("end", onEnd);
      check();
    });
  }

  get outDir(): string {
    return this.options.outDir ?? path.join(this.dir.dir, "outputs");
  }

  private onControl(ev: HostLinkEvent): void {
    this.options.log.info({ control: ev }, "firewall reports");
    if (ev.type === "firewall-ready" || ev.type === "sandbox-ready" || ev.type === "service-ready") this.readyParts.add(ev.type);
    if (ev.type === "service-ready" && this.state.service) {
      this.state.service = { ...this.state.service, status: "serving", ...(ev.tls ? { apiTlsSpkiSha256: ev.apiTlsSpkiSha256 } : {}) };
      this.save();
    }
    if (ev.type === "service-stats" && this.state.service) {
      this.state.service = { ...this.state.service, served: ev.served, refused: ev.refused, resets: ev.resets };
      this.save();
    }
    if (ev.type === "reset-sandbox") this.resetSandbox();
    if (ev.type === "workload-exit") {
      this.workloadExited = true;
      this.state.workload = { succeeded: ev.succeeded, ...(ev.code !== undefined ? { code: ev.code } : {}) };
      this.save();
    }
    if (ev.type === "outputs-complete") this.outputsComplete = true;
    if (ev.type === "done") {
      this.firewallDone = true;
      this.runCompleted = ev.completed && this.outputsComplete;
    }
    // Deadlines kept outside the sandbox: inputs in, then the workload's timeout (+ padTo) plus
    // the collection bound the firewall also enforces, plus a margin for the firewall to report.
    // A service room has no run to bound: it serves until it is stopped.
    if (ev.type === "sandbox-ready" && !this.manifest.workload.service) this.armDeadline(INPUT_BOUND_S + Math.ceil(this.manifest.inputs.reduce((n, i) => n + statSize(i.path), 0) / (256 * 1024)), "the inputs did not reach the sandbox in time");
    if (ev.type === "workload-started") {
      const w = this.manifest.workload;
      this.armDeadline(w.timeoutSeconds + (w.padToSeconds ?? 0) + collectionBoundSeconds(this.manifest) + REPORT_MARGIN_S, `the run passed its deadline (timeout ${w.timeoutSeconds} s plus the collection bound); nothing more was released`);
    }
    this.emit("control", ev);
  }

  /**
   * A service room's reset: the sandbox VM is killed and a new one launched from the same measured
   * image, checked over QMP and resumed as at the start. Its agent attests afresh to the firewall
   * (the room services reopened the sandbox's PSP for it). A failure fails the pair closed.
   */
  private resetSandbox(): void {
    const old = this.vms.sandbox;
    if (!old || this.ending || this.resetting) return void this.fail("the firewall asked for a sandbox reset at an unexpected time");
    if (this.state.service) this.state.service = { ...this.state.service, status: "resetting" };
    this.resetting = (async () => {
      this.progress("resetting the sandbox: a new VM from its measured image");
      this.retired.add(old);
      old.kill();
      await old.stop();
      this.checkNotEnding();
      const vm = new Vm(old.spec, this.options.log.child({ vm: "sandbox" }), old.spec.console === "stdio" ? this.dir.consoleLog("sandbox") : undefined);
      this.vms.sandbox = vm;
      this.watch("sandbox", vm);
      await vm.start();
      this.state.vms.sandbox = { role: "sandbox", pid: vm.pid!, status: "paused", inspectQmp: old.spec.inspectSocket! };
      const inv = await checkGuest(vm.spec, vm.qmp!);
      this.state.vms.sandbox.devices = describeDevices(inv);
      this.checkNotEnding();
      await vm.resume();
      this.state.vms.sandbox.status = "running";
      this.save();
    })().then(
      () => (this.resetting = undefined),
      (err) => void this.fail(`the sandbox reset failed: ${AirlockError.from(err).message}`),
    );
  }

  private watch(role: PairRole, vm: Vm): void {
    const { log } = this.options;
    vm.on("exit", (how) => {
      if (this.retired.has(vm)) return void log.info({ how }, "the reset's old sandbox VM ended");
      this.state.vms[role] = { ...this.state.vms[role], status: "exited", ended: how };
      // A VM may end by itself (the guest powers off, QEMU exits 0) once its part is done; anything
      // else — a signal, a crash, a quit from outside, an early power-off — is a failure.
      const expected = how === "exited normally" && vm.poweredOffByGuest && (role === "sandbox" ? this.workloadExited : this.firewallDone);
      if (this.ending) return this.save();
      if (expected) {
        log.info({ how }, `${role} VM ended after finishing its part`);
        this.save();
        const other = this.vms[role === "sandbox" ? "firewall" : "sandbox"];
        if (role === "firewall" || !other?.alive) void this.finish("completed", "the workload ran to its end");
        return;
      }
      if (role === "sandbox" && how === "exited normally" && vm.poweredOffByGuest && this.vms.firewall?.alive) {
        // The sandbox powered off early: its agent stops when the firewall refuses it (a channel it
        // will not open, a room it will not run), and the firewall says why. Fail closed either
        // way, with the firewall's reason if it comes within the grace.
        setTimeout(() => void this.fail(`${role} VM: QEMU ${how}`), EARLY_EXIT_GRACE_MS).unref();
        return;
      }
      void this.fail(`${role} VM: QEMU ${how}`);
    });
    vm.on("qmp-lost", (err) => void this.fail(`${role} VM: QMP link lost (${err.message})`));
  }

  private armDeadline(seconds: number, reason: string): void {
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => void this.fail(reason), seconds * 1000);
    this.deadline.unref();
  }

  /** Fail closed: kill everything now, record why. */
  fail(reason: string): Promise<void> {
    if (this.ending) return this.ending;
    this.options.log.error({ reason }, "pair failed; stopping every VM (fail closed)");
    for (const vm of Object.values(this.vms)) vm.kill();
    return this.finish("failed", reason);
  }

  /** Orderly stop (`airlock down`, Ctrl-C, end of `airlock run`). */
  stop(reason = "stopped on request"): Promise<void> {
    return this.finish("stopped", reason);
  }

  private finish(status: "completed" | "stopped" | "failed", reason: string): Promise<void> {
    if (this.ending) return this.ending;
    this.ending = (async () => {
      if (status !== "failed") {
        this.state.status = "stopping";
        this.save();
      }
      await Promise.all(
        (["firewall", "sandbox"] as const).map(async (role) => {
          const vm = this.vms[role];
          if (!vm) return;
          const how = await vm.stop();
          this.state.vms[role] = { ...this.state.vms[role], status: "exited", ended: this.state.vms[role].ended ?? how };
        }),
      );
      clearTimeout(this.deadline);
      await this.hostLink?.close();
      await this.services?.close();
      await this.fabric?.stop();
      await releasePair(this.options.name).catch((err: unknown) => this.options.log.warn({ err: String(err) }, "cannot release the host claim; the next pair reclaims it"));
      this.state.status = status;
      this.state.reason = status === "failed" ? `${reason}; the other VM was stopped (fail closed)` : reason;
      // Nothing staged is put in place unless the run completed; the summary is written whatever happened.
      if (!this.runCompleted) this.hostLink?.writer.discard();
      if (this.hostLink) writeRunSummary(this.outDir, this.hostLink.auditPath, this.state, this.hostLink.writer.result, this.runCompleted && status === "completed");
      this.save();
      this.emit("end", this.state);
    })();
    return this.ending;
  }

  /** Resolves with the final state once the pair has ended. */
  waitEnd(): Promise<PairState> {
    const terminal = ["completed", "stopped", "failed"];
    if (terminal.includes(this.state.status) && this.ending) return this.ending.then(() => this.state);
    return new Promise((resolve) => this.once("end", resolve));
  }

}
