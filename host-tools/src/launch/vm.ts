// One QEMU process: started paused, tied to its supervisor's life (setpriv --pdeathsig, so a
// crashed or killed supervisor never leaves a guest behind), reached over QMP, stopped with a
// bound. The console, when there is one, is captured line by line.
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { createWriteStream, existsSync, rmSync, type WriteStream } from "node:fs";
import { AirlockError, isErrnoException } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { QmpClient } from "../qmp/client.ts";
import { QEMU_BINARY, qemuArgs, type VmSpec } from "./qemu-args.ts";
import { checkForwarder, checkNetworkPlan } from "./nic.ts";

export const QMP_SOCKET_TIMEOUT_MS = 10_000;
export const STOP_TIMEOUT_MS = 3_000;
/** How long a dropped QMP link waits for the QEMU exit that usually explains it. */
export const QMP_LOSS_GRACE_MS = 1_000;
/** The same once QEMU announced SHUTDOWN: its exit is certain but may be reaped late (past this, the pair fails closed). */
const QMP_SHUTDOWN_GRACE_MS = 10_000;

export interface VmEvents {
  /** The QEMU process ended; `how` says how in words. */
  exit: [how: string];
  /** The QMP link dropped while QEMU was supposed to be alive. */
  "qmp-lost": [Error];
  /** A console line (only when the console is captured). */
  line: [string];
}

export class Vm extends EventEmitter<VmEvents> {
  private child: ChildProcess | undefined;
  private stderrTail = "";
  private consoleFile: WriteStream | undefined;
  private exited: Promise<string> | undefined;
  private stopping = false;
  qmp: QmpClient | undefined;
  endedHow: string | undefined;
  /** The guest itself powered off (QMP SHUTDOWN with guest=true), as opposed to being stopped. */
  poweredOffByGuest = false;

  constructor(
    readonly spec: VmSpec,
    private readonly log: Logger,
    private readonly consoleLogPath?: string,
  ) {
    super();
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get alive(): boolean {
    return this.child !== undefined && this.endedHow === undefined;
  }

  /** Spawns QEMU (paused by -S) and connects QMP. */
  async start(): Promise<void> {
    const argv = qemuArgs(this.spec);
    // The plan's network before QEMU runs it: none for the sandbox, only the restricted NIC for the firewall.
    checkNetworkPlan(this.spec.role, argv, this.spec.nic, this.spec.apiForward);
    checkForwarder(this.spec.nic);
    rmSync(this.spec.qmpSocket, { force: true });
    const args = ["--pdeathsig", "SIGKILL", "--", QEMU_BINARY, ...argv];
    this.log.debug({ argv: args.slice(3) }, "starting QEMU");
    const child = spawn("setpriv", args, { stdio: ["ignore", this.spec.console === "stdio" ? "pipe" : "ignore", "pipe"] });
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        const how = signal ? `killed by ${signal}` : code === 0 ? "exited normally" : `exited with status ${code}${this.stderrTail ? `: ${this.stderrTail.trim().split("\n").slice(-2).join(" / ")}` : ""}`;
        this.endedHow = how;
        this.consoleFile?.end();
        this.emit("exit", how);
        resolve(how);
      });
    });
    child.on("error", (err) => this.log.error({ err: err.message }, "cannot start QEMU"));
    child.stderr!.on("data", (d: Buffer) => {
      this.stderrTail = (this.stderrTail + d.toString()).slice(-4000);
    });
    if (child.stdout) this.captureConsole(child.stdout);

    const deadline = Date.now() + QMP_SOCKET_TIMEOUT_MS;
    while (!existsSync(this.spec.qmpSocket)) {
      if (this.endedHow) throw new AirlockError("LAUNCH", `${this.spec.role} VM: QEMU ${this.endedHow}`, { hint: "see the QEMU message above; `airlock logs` has the rest" });
      if (Date.now() > deadline) throw new AirlockError("TIMEOUT", `${this.spec.role} VM: QEMU did not open its QMP socket within ${QMP_SOCKET_TIMEOUT_MS} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
    // QEMU creates the socket file (bind) a moment before it listens: a refusal then is not an end.
    for (;;) {
      try {
        this.qmp = await QmpClient.connect(this.spec.qmpSocket, { label: `${this.spec.role} VM` });
        break;
      } catch (err) {
        const refused = isErrnoException((err as { cause?: unknown }).cause ?? err, "ECONNREFUSED");
        if (!refused || this.endedHow || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    let shuttingDown = false;
    this.qmp.on("event", (e) => {
      if (e.event === "SHUTDOWN") {
        this.poweredOffByGuest = e.data.guest === true;
        shuttingDown = true;
      }
    });
    this.qmp.on("close", (err) => {
      if (this.stopping || this.endedHow !== undefined) return;
      // QEMU closes QMP as it exits: give the exit a moment to be seen before calling it a loss —
      // longer once QEMU has said it is shutting down (a loaded host reaps it late).
      const timer = setTimeout(() => {
        if (!this.stopping && this.endedHow === undefined) this.emit("qmp-lost", err ?? new Error("QMP closed"));
      }, shuttingDown ? QMP_SHUTDOWN_GRACE_MS : QMP_LOSS_GRACE_MS);
      void this.exited?.then(() => clearTimeout(timer));
    });
  }

  private captureConsole(stream: NodeJS.ReadableStream): void {
    if (this.consoleLogPath) this.consoleFile = createWriteStream(this.consoleLogPath, { flags: "w", mode: 0o600 });
    let buf = "";
    stream.on("data", (d: Buffer) => {
      this.consoleFile?.write(d);
      buf += d.toString("utf8");
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        this.emit("line", buf.slice(0, nl).replace(/\r$/, ""));
        buf = buf.slice(nl + 1);
      }
      // A guest that never ends a line must not grow our memory.
      if (buf.length > 64 * 1024) buf = buf.slice(-1024);
    });
  }

  async resume(): Promise<void> {
    await this.qmp!.execute("cont");
  }

  /** Stops QEMU: `quit` over QMP, then SIGKILL if it has not ended within the bound. Idempotent. */
  async stop(): Promise<string> {
    this.stopping = true;
    if (!this.child || !this.exited) return "never started";
    if (this.endedHow) return this.endedHow;
    if (this.qmp && !this.qmp.isClosed) this.qmp.execute("quit", undefined, { timeoutMs: 1000 }).catch(() => {});
    const timer = setTimeout(() => this.child?.kill("SIGKILL"), STOP_TIMEOUT_MS);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
      this.qmp?.close();
    }
  }

  /** Kills at once (fail-closed path). */
  kill(): void {
    this.stopping = true;
    if (this.child && !this.endedHow) this.child.kill("SIGKILL");
  }

}
