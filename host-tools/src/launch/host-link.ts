// The host's end of the firewall's control link: the fabric delivers the firewall's connection to
// host port HOST_CONTROL_PORT to a Unix listener at `<uds-path>_<port>`. On it the host sends the
// room and its signatures, streams the encrypted inputs when asked, and receives reports, released
// outputs and the signed audit trail. The services the firewall reaches besides (emulated PSPs,
// key broker) are the room's
// (room-services.ts); released outputs go through the OutputWriter (output-writer.ts), which names
// every file itself. The firewall is measured, but every message is still checked: a bug must not
// write outside --out.
import { closeSync, createReadStream, fdatasyncSync, mkdirSync, openSync, rmSync, statSync, writeSync } from "node:fs";
import { EventEmitter } from "node:events";
import net from "node:net";
import path from "node:path";
import { AirlockError, errorCodeFromWire } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { bodyOf, HOST_CONTROL_PORT, readMessages, sendData, sendMessage } from "../../../proto/src/control.ts";
import { num } from "../../../proto/src/wire.ts";
import { roomBytes } from "../../../proto/src/room.ts";
import { Decision, FirewallToHostSchema, HostToFirewallSchema } from "../../../proto/gen/airlock/v1/control_pb.ts";
import type { ErrorCode as WireErrorCode } from "../../../proto/gen/airlock/v1/errors_pb.ts";
import { CONSOLE_OUTPUT, type Manifest } from "../../../proto/src/manifest/index.ts";
import { readSignatureFile, signatureFileOf } from "../../../proto/src/manifest/sign.ts";
import { embeddedBrokerDirs } from "../kbs/grant.ts";
import { OutputWriter, type WriterReport } from "./output-writer.ts";
import type { RoomServices } from "./room-services.ts";
import type { RoomIdentity } from "./room-digest.ts";

export type HostLinkEvent =
  | { type: "firewall-ready" }
  | { type: "sandbox-ready" }
  | { type: "workload-started" }
  /** The exact code only when the sandbox's scope allows it (DOMAIN_OWNED or below). */
  | { type: "workload-exit"; succeeded: boolean; code?: number }
  | { type: "output"; output: string; decision: "release" | "encrypt" | "withhold"; reason: string; files?: number; bytes?: number; sealedBytes?: number }
  | { type: "outputs-complete"; written: WriterReport["written"]; refused: WriterReport["refused"] }
  | { type: "audit-log"; path: string }
  | { type: "done"; completed: boolean }
  /** Service rooms: the API serves calls (again, after a reset); the firewall's counts; a reset asked. */
  | { type: "service-ready"; apiPort: number; tls: boolean; apiTlsSpkiSha256: string }
  | { type: "service-stats"; served: number; refused: number; resets: number }
  | { type: "reset-sandbox" };

export interface HostLinkEvents {
  event: [HostLinkEvent];
  /** The link failed or closed before "done", or the firewall refused the run. */
  lost: [Error];
}

export interface HostLinkOptions {
  /** The firewall's vsock uds-path; the host's listeners are `<udsPath>_<port>`. */
  udsPath: string;
  manifest: Manifest;
  /** The room as the launch binds it: canonical manifest with its pins, and digest (room-digest.ts). */
  identity: RoomIdentity;
  /** The room's PSPs and key broker, started before the link listens. */
  services: RoomServices;
  outDir: string;
  /** Where the firewall's audit trail is written (default <outDir>/audit.log). */
  auditPath?: string;
  log: Logger;
  /** Keep both VMs running after the workload ends, until the pair is stopped (`airlock up`). */
  hold?: boolean;
}

// The embedded broker's state folders and key policies, and the data owner's grant: ../kbs/grant.ts.
export { embeddedBrokerDirs };

export class HostLink extends EventEmitter<HostLinkEvents> {
  private server: net.Server | undefined;
  private conn: net.Socket | undefined;
  private finished = false;
  /** The inputs being sent, in the order the firewall asked for them. */
  private inputs: Promise<void> = Promise.resolve();
  /** Where released outputs are staged and put in place. */
  readonly writer: OutputWriter;
  /** The outputs the manifest declares, and the console. */
  private readonly outputNames: Set<string>;
  private auditStarted = false;
  private readonly log: Logger;

  constructor(private readonly options: HostLinkOptions) {
    super();
    this.log = options.log;
    this.outputNames = new Set([CONSOLE_OUTPUT, ...options.manifest.outputs.map((o) => o.name)]);
    this.writer = new OutputWriter(options.outDir, this.outputNames);
  }

  get auditPath(): string {
    return this.options.auditPath ?? path.join(this.options.outDir, "audit.log");
  }

  /** Starts the control listener (the room's services are started already). */
  async listen(): Promise<void> {
    const { udsPath } = this.options;
    const socketPath = `${udsPath}_${HOST_CONTROL_PORT}`;
    rmSync(socketPath, { force: true });
    this.server = net.createServer((c) => this.accept(c));
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(socketPath, () => resolve());
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
        // A closed link is most often the symptom of the firewall VM dying: give the VM's own exit a
        // moment to be reported first (the pair fails closed on whichever comes first).
        if (!this.finished) setTimeout(() => this.emit("lost", new AirlockError("FABRIC", "the firewall closed its control link before the run finished")), 300).unref();
      },
      (err: unknown) => {
        if (!this.finished) this.emit("lost", AirlockError.from(err, "GUEST_PROTOCOL"));
      },
    );
  }

  private async serve(c: net.Socket): Promise<void> {
    const { manifest } = this.options;
    c.on("error", () => {});
    // The broker's key is the host's word, checked inside against the hash the room pins.
    await sendMessage(c, HostToFirewallSchema, { case: "room", value: { canonicalJson: roomBytes(this.options.identity.canonical), hold: this.options.hold ?? false, brokerPublicKey: this.options.services.brokerPublicKey ?? "" } });
    await sendMessage(c, HostToFirewallSchema, { case: "signatures", value: { signatures: readSignatureFile(signatureFileOf(manifest.file)) } });
    // Data frames follow a message that announced them: an audit chunk, a sealed piece or an open file.
    let audit: { size: number; parts: Buffer[]; got: number } | undefined;
    let sealed: { output: string; size: number; got: number } | undefined;
    const writer = this.writer;
    for await (const m of readMessages(c, FirewallToHostSchema, "the firewall", 8 * 1024 * 1024)) {
      if (m.kind === "data") {
        if (audit) {
          if (audit.got + m.data.length > audit.size) throw new AirlockError("GUEST_PROTOCOL", "audit data beyond its declared size");
          audit.parts.push(Buffer.from(m.data));
          audit.got += m.data.length;
          if (audit.got === audit.size) {
            appendDurably(this.auditPath, Buffer.concat(audit.parts), !this.auditStarted);
            this.auditStarted = true;
            audit = undefined;
          }
        } else if (sealed) {
          if (sealed.got + m.data.length > sealed.size) throw new AirlockError("GUEST_PROTOCOL", "sealed data beyond its declared size");
          writer.sealedData(sealed.output, m.data);
          sealed.got += m.data.length;
          if (sealed.got === sealed.size) sealed = undefined;
        } else if (writer.inFile) {
          writer.openData(m.data);
        } else {
          throw new AirlockError("GUEST_PROTOCOL", "data outside a declared file");
        }
        continue;
      }
      if (audit || sealed || writer.inFile) throw new AirlockError("GUEST_PROTOCOL", "a message in the middle of a file");
      const msg = bodyOf(m.message);
      switch (msg.case) {
        case "firewallReady":
          this.emit("event", { type: "firewall-ready" });
          break;
        case "sandboxReady":
          this.emit("event", { type: "sandbox-ready" });
          break;
        case "workloadStarted":
          this.emit("event", { type: "workload-started" });
          break;
        case "sandboxAttested":
          // The sandbox had its one attestation: nothing may reach this PSP again.
          await this.options.services.closeSandboxPsp();
          break;
        case "workloadExit":
          this.emit("event", { type: "workload-exit", succeeded: msg.value.succeeded, ...(msg.value.code === undefined ? {} : { code: msg.value.code }) });
          break;
        case "inputRequest":
          // Streamed beside this loop, one input after another: an input waits on the firewall's
          // credit, and a firewall that stops reading it (a tampered file) still has its refusal heard.
          this.inputs = this.inputs.then(() => this.sendInput(c, msg.value.name));
          this.inputs.catch((err: unknown) => {
            if (!this.finished) this.emit("lost", AirlockError.from(err, "GUEST_PROTOCOL"));
          });
          break;
        case "outputDecided": {
          const o = msg.value;
          const counts: { files?: number; bytes?: number; sealedBytes?: number } = {};
          if (o.files !== undefined) counts.files = num(o.files);
          if (o.bytes !== undefined) counts.bytes = num(o.bytes);
          if (o.sealedBytes !== undefined) counts.sealedBytes = num(o.sealedBytes);
          this.emit("event", { type: "output", output: this.outputName(o.output), decision: DECISION_NAMES[o.decision], reason: o.reason, ...counts });
          break;
        }
        case "sealedBegin":
          writer.sealedBegin(this.outputName(msg.value.output));
          break;
        case "sealedData":
          sealed = { output: this.outputName(msg.value.output), size: msg.value.size, got: 0 };
          break;
        case "sealedEnd":
          writer.sealedEnd(this.outputName(msg.value.output), num(msg.value.bytes));
          break;
        case "openFile":
          writer.openBegin(this.outputName(msg.value.output), msg.value.path, num(msg.value.size));
          break;
        case "outputsComplete":
          writer.commit();
          this.emit("event", { type: "outputs-complete", written: writer.result.written, refused: writer.result.refused });
          break;
        case "auditLines":
          // Records as the enforcer writes them, kept durably at once (they survive a dead enforcer).
          audit = { size: msg.value.size, parts: [], got: 0 };
          mkdirSync(path.dirname(this.auditPath), { recursive: true });
          break;
        case "auditEnd":
          this.emit("event", { type: "audit-log", path: this.auditPath });
          break;
        case "refused":
          // The firewall refused or stopped the run (signature, key, consent, input, deadline...).
          this.finished = true;
          writer.discard();
          this.log.info({ code: errorCodeFromWire(msg.value.code) }, "the firewall refused the run");
          this.emit("lost", refusal(msg.value.code, msg.value.reason, manifest.file));
          break;
        case "done":
          this.finished = true;
          this.emit("event", { type: "done", completed: msg.value.completed });
          break;
        case "serviceReady":
          this.emit("event", { type: "service-ready", apiPort: msg.value.apiPort, tls: msg.value.tls, apiTlsSpkiSha256: msg.value.apiTlsSpkiSha256 });
          break;
        case "serviceStats":
          this.emit("event", { type: "service-stats", served: num(msg.value.served), refused: num(msg.value.refused), resets: num(msg.value.resets) });
          break;
        case "resetSandbox":
          // The new sandbox attests afresh: its PSP opens for one more report (closed again after it).
          await this.options.services.openSandboxPsp();
          this.emit("event", { type: "reset-sandbox" });
          break;
        default:
          throw unreachable(msg);
      }
    }
  }

  /** An output name from the firewall: one the manifest declares, or the console. */
  private outputName(name: string): string {
    if (!this.outputNames.has(name)) throw new AirlockError("GUEST_PROTOCOL", "the firewall named an output the manifest does not declare");
    return name;
  }

  /** Streams an input's encrypted file as it is on disk; the firewall decrypts it. */
  private async sendInput(c: net.Socket, name: string): Promise<void> {
    const input = this.options.manifest.inputs.find((i) => i.name === name);
    if (!input) throw new AirlockError("GUEST_PROTOCOL", `the firewall asked for unknown input ${JSON.stringify(name)}`);
    const size = statSync(input.path).size;
    await sendMessage(c, HostToFirewallSchema, { case: "inputFile", value: { name, size: BigInt(size) } });
    let sent = 0;
    for await (const chunk of createReadStream(input.path, { highWaterMark: INPUT_PIECE, end: size - 1 }) as AsyncIterable<Buffer>) {
      sent += chunk.length;
      await sendData(c, chunk);
    }
    if (sent !== size) throw new AirlockError("FILE_UNREADABLE", `input ${name}: ${input.path} changed while it was sent`);
  }

  async close(): Promise<void> {
    this.conn?.destroy();
    this.server?.close();
  }
}

/** Input bytes per read and per data frame: large writes, the firewall's 8 MiB frame bound far off. */
const INPUT_PIECE = 1024 * 1024;

/** Every case of the firewall's messages is handled above: the compiler checks it. */
function unreachable(never: never): Error {
  return new AirlockError("INTERNAL", `unhandled firewall message ${String((never as { case?: unknown }).case)}`);
}

/** The wire's decisions by name (the enum's zero is refused when the message is decoded). */
const DECISION_NAMES = {
  [Decision.UNSPECIFIED]: "withhold",
  [Decision.RELEASE]: "release",
  [Decision.ENCRYPT]: "encrypt",
  [Decision.WITHHOLD]: "withhold",
} as const satisfies Record<Decision, string>;

/** The firewall's refusal, with what a user can do about it. */
function refusal(wireCode: WireErrorCode, reason: string, manifestFile: string): AirlockError {
  const code = errorCodeFromWire(wireCode);
  const hints: Record<string, string> = {
    KEY_RELEASE: `grant each input to this room and this firewall image: airlock manifest grant ${manifestFile} --input NAME [--identity FILE] (again after the manifest or the firewall image changes)`,
    MANIFEST_SIGNATURE: `each collaborator signs: airlock manifest sign ${manifestFile} --key KEY.pem --name NAME; check with airlock manifest verify`,
    CONSENT: "the governance endpoint must answer HTTP 200 with {\"consent\": true}",
    CRYPTO: "the input file does not decrypt with the granted identity: re-encrypt it, or grant the identity it was encrypted to",
  };
  const hint = hints[code];
  // The firewall's own code, so `airlock run` can say [KEY_RELEASE]; the hint goes in the message.
  return new AirlockError(code, `the firewall refused the run: ${reason}${hint ? ` (to fix: ${hint})` : ""}`);
}

/** Appends and fdatasyncs (the first write of a run starts the file afresh). */
function appendDurably(file: string, data: Buffer, fresh: boolean): void {
  const fd = openSync(file, fresh ? "w" : "a", 0o600);
  try {
    for (let off = 0; off < data.length; ) off += writeSync(fd, data, off);
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
