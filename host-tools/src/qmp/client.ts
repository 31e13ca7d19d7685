// A QMP client: typed, promise-based, replies matched by id, events with their data, framing by
// lines whatever the read boundaries, a timeout on every command, and a clean close.
//
// Why not the `qemu-qmp` npm package (0.5.0): it parses the greeting from the first read chunk
// (breaks when a read splits or joins lines), matches replies by arrival order instead of `id`,
// drops event data, has no timeouts and no promises. This file is the replacement.
import { EventEmitter } from "node:events";
import net from "node:net";
import { AirlockError } from "../../../proto/src/errors.ts";

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** Longest line accepted from QEMU; anything larger means a broken peer. */
const MAX_LINE = 16 * 1024 * 1024;
export const DEFAULT_QMP_TIMEOUT_MS = 10_000;

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [Error | undefined];
}

export class QmpClient extends EventEmitter<QmpClientEvents> {
  private buffer = "";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed: Error | undefined;
  greeting: QmpGreeting | undefined;

  private constructor(
    private readonly socket: net.Socket,
    readonly label: string,
  ) {
    super();
  }

  /** Connects to a QMP Unix socket, reads the greeting and negotiates capabilities. */
  static async connect(path: string, options: { timeoutMs?: number; label?: string } = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_QMP_TIMEOUT_MS;
    const label = options.label ?? path;
    const socket = net.createConnection({ path });
    const client = new QmpClient(socket, label);
    const greeting = new Promise<QmpGreeting>((resolve, reject) => {
      client.onGreeting = resolve;
      client.onEarlyFailure = reject;
    });
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => client.onData(chunk));
    socket.on("error", (err) => client.shutdown(new AirlockError("QMP_CLOSED", `QMP ${label}: ${err.message}`, { cause: err })));
    socket.on("close", () => client.shutdown(new AirlockError("QMP_CLOSED", `QMP ${label}: connection closed by QEMU`)));
    let timer: NodeJS.Timeout | undefined;
    try {
      client.greeting = await Promise.race([
        greeting,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new AirlockError("TIMEOUT", `QMP ${label}: no greeting within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      await client.execute("qmp_capabilities", undefined, { timeoutMs });
    } catch (err) {
      client.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return client;
  }

  private onGreeting: ((g: QmpGreeting) => void) | undefined;
  private onEarlyFailure: ((e: Error) => void) | undefined;

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, nl).replace(/\r$/, "");
      this.buffer = this.buffer.slice(nl + 1);
      if (line.trim()) this.onLine(line);
    }
    if (this.buffer.length > MAX_LINE) this.protocolError(`a line longer than ${MAX_LINE} bytes`);
  }

  private protocolError(what: string): void {
    this.shutdown(new AirlockError("QMP_PROTOCOL", `QMP ${this.label}: ${what}`));
    this.socket.destroy();
  }

  private onLine(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return this.protocolError(`not JSON: ${line.slice(0, 80)}`);
    }
    if (msg === null || typeof msg !== "object") return this.protocolError("a message that is not an object");
    if ("QMP" in msg) {
      const g = this.onGreeting;
      this.onGreeting = undefined;
      g?.(msg.QMP as QmpGreeting);
      return;
    }
    if (typeof msg.event === "string") {
      this.emit("event", { event: msg.event, data: (msg.data as Record<string, unknown>) ?? {}, timestamp: msg.timestamp as QmpEvent["timestamp"] });
      return;
    }
    const id = typeof msg.id === "string" ? msg.id : undefined;
    const pending = id === undefined ? undefined : this.pending.get(id);
    if (!pending) return; // a reply to a command that already timed out
    this.pending.delete(id!);
    clearTimeout(pending.timer);
    if ("error" in msg) {
      const e = msg.error as { class?: string; desc?: string };
      pending.reject(new AirlockError("QMP_COMMAND", `QMP ${this.label}: ${pending.command} failed: ${e.desc ?? "unknown error"} (${e.class ?? "?"})`));
    } else if ("return" in msg) {
      pending.resolve(msg.return);
    } else {
      pending.reject(new AirlockError("QMP_PROTOCOL", `QMP ${this.label}: reply to ${pending.command} has neither return nor error`));
    }
  }

  /** Runs a command; rejects with QMP_COMMAND on an error reply, TIMEOUT past the bound. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closed) return Promise.reject(this.closed);
    const id = `airlock-${this.nextId++}`;
    const timeoutMs = options.timeoutMs ?? DEFAULT_QMP_TIMEOUT_MS;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new AirlockError("TIMEOUT", `QMP ${this.label}: ${command} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id })}\n`);
    });
  }

  /** Resolves with the next event of that name (and matching `filter`), or rejects past the bound. */
  waitForEvent(name: string, timeoutMs: number, filter: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off("event", onEvent);
        this.off("close", onClose);
      };
      const onEvent = (e: QmpEvent): void => {
        if (e.event === name && filter(e)) {
          cleanup();
          resolve(e);
        }
      };
      const onClose = (err: Error | undefined): void => {
        cleanup();
        reject(err ?? new AirlockError("QMP_CLOSED", `QMP ${this.label}: closed while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new AirlockError("TIMEOUT", `QMP ${this.label}: no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      this.on("event", onEvent);
      this.on("close", onClose);
    });
  }

  get isClosed(): boolean {
    return this.closed !== undefined;
  }

  private shutdown(reason: Error): void {
    if (this.closed) return;
    this.closed = reason;
    this.onEarlyFailure?.(reason);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(reason);
    }
    this.pending.clear();
    this.emit("close", reason);
  }

  /** Closes the link; pending commands reject with QMP_CLOSED. */
  close(): void {
    this.shutdown(new AirlockError("QMP_CLOSED", `QMP ${this.label}: closed by airlock`));
    this.socket.destroy();
  }
}
