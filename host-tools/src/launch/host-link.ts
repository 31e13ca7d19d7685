// The host's end of the firewall's control link: the firewall connects to the host (vsock CID 2,
// HOST_CONTROL_PORT), which the fabric delivers to a Unix listener at `<uds-path>_<port>`. The host
// sends the room and receives reports and released outputs. The firewall is measured, but this
// code still checks every message: the link crosses the untrusted host and a bug must not write
// outside the output folder.
import { EventEmitter } from "node:events";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { checkRelativePath, field, readMessages, sendMessage } from "../../../proto/src/control.ts";

export type HostLinkEvent =
  | { type: "firewall-ready" }
  | { type: "sandbox-ready" }
  | { type: "workload-exit"; code: number }
  | { type: "output"; output: string; decision: string; reason: string }
  | { type: "output-file"; output: string; path: string; size: number }
  | { type: "done"; code: number };

export interface HostLinkEvents {
  event: [HostLinkEvent];
  /** The link failed or closed before "done". */
  lost: [Error];
}

export class HostLink extends EventEmitter<HostLinkEvents> {
  private server: net.Server | undefined;
  private conn: net.Socket | undefined;
  private finished = false;

  constructor(
    private readonly socketPath: string,
    private readonly room: unknown,
    private readonly outDir: string,
    private readonly log: Logger,
    /** Keep both VMs running after the workload ends, until the pair is stopped (`airlock up`). */
    private readonly hold = false,
  ) {
    super();
  }

  async listen(): Promise<void> {
    rmSync(this.socketPath, { force: true });
    this.server = net.createServer((c) => this.accept(c));
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(this.socketPath, () => resolve());
    });
  }

  private accept(c: net.Socket): void {
    if (this.conn) {
      // One firewall, one link: a second connection is someone else.
      c.destroy();
      return;
    }
    this.conn = c;
    this.serve(c).then(
      () => {
        if (!this.finished) this.emit("lost", new AirlockError("FABRIC", "the firewall closed its control link before the run finished"));
      },
      (err: unknown) => {
        if (!this.finished) this.emit("lost", AirlockError.from(err, "GUEST_PROTOCOL"));
      },
    );
  }

  private async serve(c: net.Socket): Promise<void> {
    c.on("error", () => {});
    await sendMessage(c, { type: "room", canonical: this.room, hold: this.hold });
    let file: { target: string; size: number; parts: Buffer[]; got: number } | undefined;
    for await (const m of readMessages(c, 8 * 1024 * 1024)) {
      if (m.kind === "data") {
        if (!file || file.got + m.data.length > file.size) throw new AirlockError("GUEST_PROTOCOL", "output data outside a declared file");
        file.parts.push(Buffer.from(m.data));
        file.got += m.data.length;
        if (file.got === file.size) {
          writeFileSync(file.target, Buffer.concat(file.parts), { mode: 0o600 });
          file = undefined;
        }
        continue;
      }
      if (file) throw new AirlockError("GUEST_PROTOCOL", "a message in the middle of a file");
      const msg = m.value;
      switch (msg.type) {
        case "firewall-ready":
        case "sandbox-ready":
          this.emit("event", { type: msg.type });
          break;
        case "workload-exit":
          this.emit("event", { type: "workload-exit", code: field.int(msg, "code", 0, 255) });
          break;
        case "output":
          this.emit("event", { type: "output", output: field.string(msg, "output", 64), decision: field.string(msg, "decision", 16), reason: field.string(msg, "reason", 2000) });
          break;
        case "output-file": {
          const output = checkRelativePath(field.string(msg, "output", 64));
          const rel = checkRelativePath(field.string(msg, "path", 1024));
          const size = field.int(msg, "size", 0, 2 ** 40);
          const target = path.join(this.outDir, output, rel);
          mkdirSync(path.dirname(target), { recursive: true });
          this.emit("event", { type: "output-file", output, path: rel, size });
          if (size === 0) writeFileSync(target, Buffer.alloc(0), { mode: 0o600 });
          else file = { target, size, parts: [], got: 0 };
          break;
        }
        case "done":
          this.finished = true;
          this.emit("event", { type: "done", code: field.int(msg, "code", 0, 255) });
          break;
        default:
          this.log.warn({ type: String(msg.type).slice(0, 40) }, "unknown message from the firewall ignored");
      }
    }
  }

  close(): void {
    this.conn?.destroy();
    this.server?.close();
  }
}
