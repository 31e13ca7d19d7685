// The host's end of the firewall's control link, and the host services the firewall reaches over
// vsock (CID 2): the fabric delivers a guest's connection to host port P to a Unix listener at
// `<uds-path>_<P>`. On the control link the host sends the room and its signatures, streams the
// encrypted inputs when asked, relays the consent question (the firewall has no NIC), and
// receives reports, released outputs and the signed audit trail. On PSP_VSOCK_PORT it serves the
// emulated PSP, on KBS_VSOCK_PORT the embedded key broker, and on HOST_SANDBOX_PSP_PORT a second
// emulated PSP reporting the sandbox's launch (the firewall relays the sandbox to it: the sandbox
// itself never reaches the host). The firewall is measured, but every
// message is still checked: the link crosses the host and a bug must not write outside --out.
import { closeSync, createReadStream, fdatasyncSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { EventEmitter } from "node:events";
import net from "node:net";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { checkRelativePath, field, HOST_CONTROL_PORT, HOST_SANDBOX_PSP_PORT, KBS_VSOCK_PORT, readMessages, sendData, sendMessage } from "../../../proto/src/control.ts";
import { inputKeyId, roomKeyId } from "../../../proto/src/room.ts";
import { manifestDigest, type Manifest } from "../../../proto/src/manifest/index.ts";
import { readSignatureFile, signatureFileOf } from "../../../proto/src/manifest/sign.ts";
import { X25519Identity, formatIdentityFile, parseIdentityFile } from "../../../proto/src/age/index.ts";
import { PSP_VSOCK_PORT } from "../../../proto/src/attestation/psp-wire.ts";
import { EmulatedPsp, listenPsp, type PspListener } from "../attestation/index.ts";
import { startKbs, KeyStore, loadMasterKey, type KbsHandle, type KeyPolicy } from "../kbs/index.ts";
import { readImageDir, snpLaunchDigest } from "../measure/index.ts";
import { DEFAULT_SNP_POLICY } from "./snp-plan.ts";
import { stateDir } from "../paths.ts";

export type HostLinkEvent =
  | { type: "firewall-ready" }
  | { type: "sandbox-ready" }
  | { type: "workload-started" }
  | { type: "workload-exit"; code: number }
  | { type: "output"; output: string; decision: string; reason: string }
  | { type: "output-file"; output: string; path: string; size: number }
  | { type: "audit-log"; path: string }
  | { type: "done"; code: number };

export interface HostLinkEvents {
  event: [HostLinkEvent];
  /** The link failed or closed before "done", or the firewall refused the run. */
  lost: [Error];
}

export interface HostLinkOptions {
  /** The firewall's vsock uds-path; the host's listeners are `<udsPath>_<port>`. */
  udsPath: string;
  manifest: Manifest;
  /** The canonical manifest sent as the room. */
  room: unknown;
  outDir: string;
  /** Where the firewall's audit trail is written (default <outDir>/audit.log). */
  auditPath?: string;
  /** The firewall's image folder: its emulated launch measurement is computed from it. */
  firewallImageDir: string;
  firewallVcpus: number;
  /** The sandbox's image folder: its emulated launch measurement, which the firewall expects. */
  sandboxImageDir: string;
  sandboxVcpus: number;
  log: Logger;
  /** Keep both VMs running after the workload ends, until the pair is stopped (`airlock up`). */
  hold?: boolean;
}

/** The embedded key broker's and emulated PSP's state: AIRLOCK_KBS_STATE or <state>/kbs, <state>/psp. */
export function embeddedBrokerDirs(): { kbs: string; psp: string } {
  return { kbs: process.env.AIRLOCK_KBS_STATE ?? path.join(stateDir(), "kbs"), psp: path.join(stateDir(), "psp") };
}

/**
 * The launch measurement the emulated PSP reports for an image: the SNP launch digest of its
 * declared firmware, kernel, initrd and command line (the measure code, as `airlock measure
 * --image`), so a key policy names exactly this firewall program.
 */
export async function imageMeasurement(imageDir: string, vcpus: number): Promise<Buffer> {
  const img = await readImageDir(imageDir);
  if (!img.ovmfPath) throw new AirlockError("MEASURE", `${imageDir}/image.json declares no firmware, so the emulated launch cannot be measured`, { hint: "rebuild the images (airlock images build)" });
  const { digest } = await snpLaunchDigest({
    ovmf: readFileSync(img.ovmfPath),
    ovmfSource: img.ovmfPath,
    vcpus,
    vcpuType: img.vcpuType ?? "EPYC-v4",
    kernel: img.kernelPath,
    ...(img.initrdPath ? { initrd: img.initrdPath } : {}),
    append: img.append,
    ...(img.guestFeatures !== undefined ? { guestFeatures: img.guestFeatures } : {}),
  });
  return digest;
}

/**
 * AIRLOCK_EXPECT_SANDBOX_MEASUREMENT (96 hex digits): the sandbox measurement the firewall is told
 * to expect, instead of the launch digest of the image being launched — a value reviewed out of
 * band (`airlock measure --image`). A sandbox that does not match is refused and the run ends
 * (tests use this to prove it). Unset: the launched image's digest.
 */
function expectedSandboxMeasurement(): Buffer | undefined {
  const v = process.env.AIRLOCK_EXPECT_SANDBOX_MEASUREMENT;
  if (v === undefined || v === "") return undefined;
  if (!/^[0-9a-fA-F]{96}$/.test(v)) throw new AirlockError("USAGE", "AIRLOCK_EXPECT_SANDBOX_MEASUREMENT must be 96 hex digits (a 48-byte SNP launch digest)");
  return Buffer.from(v, "hex");
}

/** The policy under which the embedded broker releases a room's keys: this firewall, this room. */
export function roomKeyPolicy(measurement: Buffer, digest: Buffer, psp: EmulatedPsp): KeyPolicy {
  return { measurements: [measurement.toString("hex")], hostData: digest.toString("hex"), trustRoots: [psp.arkPem] };
}

/**
 * Registers an input's age identity with the embedded broker, for this room only (the data
 * owner's step: `airlock manifest grant`). Without `identityText` the broker keeps (or makes) an
 * identity of its own, which never leaves it: the data owner encrypts to the returned recipient.
 */
export async function grantInput(manifest: Manifest, input: string, identityText: string | undefined, measurement: Buffer): Promise<{ keyId: string; recipient: string }> {
  const dirs = embeddedBrokerDirs();
  const psp = EmulatedPsp.open(dirs.psp);
  const store = new KeyStore(dirs.kbs, loadMasterKey(path.join(dirs.kbs, "master.key"), { create: true }));
  const keyId = inputKeyId(manifest.name, input);
  const key = identityText !== undefined ? Buffer.from(identityText) : store.list().includes(keyId) ? store.open(keyId) : Buffer.from(formatIdentityFile(X25519Identity.generate()));
  try {
    const recipient = parseIdentityFile(key.toString("utf8"), `key ${keyId}`)[0]!.recipient.toString();
    store.put(keyId, key, roomKeyPolicy(measurement, manifestDigest(manifest), psp));
    return { keyId, recipient };
  } finally {
    key.fill(0);
  }
}

export class HostLink extends EventEmitter<HostLinkEvents> {
  private server: net.Server | undefined;
  private conn: net.Socket | undefined;
  private psp: PspListener | undefined;
  private sandboxPsp: PspListener | undefined;
  private sandboxMeasurement: Buffer | undefined;
  private kbs: KbsHandle | undefined;
  private finished = false;
  private auditStarted = false;
  private readonly log: Logger;

  constructor(private readonly options: HostLinkOptions) {
    super();
    this.log = options.log;
  }

  get auditPath(): string {
    return this.options.auditPath ?? path.join(this.options.outDir, "audit.log");
  }

  /** Starts the emulated PSP, the embedded key broker and the control listener. */
  async listen(): Promise<void> {
    const { manifest, udsPath } = this.options;
    const clash = manifest.outputs.find((o) => ["audit.log", "summary.json"].includes(o.name));
    if (clash) throw new AirlockError("USAGE", `${manifest.file}: output name "${clash.name}" is the name of the run's own ${clash.name} in --out; rename the output`);
    const dirs = embeddedBrokerDirs();
    const digest = manifestDigest(manifest);
    const psp = EmulatedPsp.open(dirs.psp, { log: this.log });
    const measurement = await imageMeasurement(this.options.firewallImageDir, this.options.firewallVcpus);
    this.psp = await listenPsp(`${udsPath}_${PSP_VSOCK_PORT}`, psp, { measurement, hostData: digest, policy: DEFAULT_SNP_POLICY }, { log: this.log });
    // The sandbox's launch, reached through the firewall's relay (the firewall's uds-path, since
    // the firewall is the one dialling CID 2).
    const sandboxLaunch = await imageMeasurement(this.options.sandboxImageDir, this.options.sandboxVcpus);
    this.sandboxPsp = await listenPsp(`${udsPath}_${HOST_SANDBOX_PSP_PORT}`, psp, { measurement: sandboxLaunch, hostData: digest, policy: DEFAULT_SNP_POLICY }, { log: this.log });
    this.sandboxMeasurement = expectedSandboxMeasurement() ?? sandboxLaunch;

    // The room's own identity (secure outputs): created once per manifest digest; its policy
    // follows the current firewall image.
    const store = new KeyStore(dirs.kbs, loadMasterKey(path.join(dirs.kbs, "master.key"), { create: true }));
    const roomId = roomKeyId(digest.toString("hex"));
    const existing = store.list().includes(roomId) ? store.open(roomId) : Buffer.from(formatIdentityFile(X25519Identity.generate()));
    store.put(roomId, existing, roomKeyPolicy(measurement, digest, psp));
    existing.fill(0);
    this.kbs = await startKbs({ stateDir: dirs.kbs, masterKey: loadMasterKey(path.join(dirs.kbs, "master.key")), listen: { path: `${udsPath}_${KBS_VSOCK_PORT}` }, log: this.log });
    this.log.info({ measurement: measurement.toString("hex"), kbsAudit: this.kbs.auditPath }, "emulated PSP and key broker ready");

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
    await sendMessage(c, { type: "room", canonical: this.options.room, hold: this.options.hold ?? false, brokerPublicKey: this.kbs?.publicKey, sandboxMeasurement: this.sandboxMeasurement?.toString("hex") });
    await sendMessage(c, { type: "signatures", signatures: readSignatureFile(signatureFileOf(manifest.file)) });
    let file: { target: string; size: number; parts: Buffer[]; got: number; append?: boolean } | undefined;
    for await (const m of readMessages(c, 8 * 1024 * 1024)) {
      if (m.kind === "data") {
        if (!file || file.got + m.data.length > file.size) throw new AirlockError("GUEST_PROTOCOL", "output data outside a declared file");
        file.parts.push(Buffer.from(m.data));
        file.got += m.data.length;
        if (file.got === file.size) {
          if (file.append) appendDurably(file.target, Buffer.concat(file.parts), !this.auditStarted);
          else writeFileSync(file.target, Buffer.concat(file.parts), { mode: 0o600 });
          if (file.append) this.auditStarted = true;
          file = undefined;
        }
        continue;
      }
      if (file) throw new AirlockError("GUEST_PROTOCOL", "a message in the middle of a file");
      const msg = m.value;
      switch (msg.type) {
        case "firewall-ready":
        case "sandbox-ready":
        case "workload-started":
          this.emit("event", { type: msg.type });
          break;
        case "workload-exit":
          this.emit("event", { type: "workload-exit", code: field.int(msg, "code", 0, 255) });
          break;
        case "input-request":
          await this.sendInput(c, field.string(msg, "name", 64));
          break;
        case "consent-request":
          await sendMessage(c, { type: "consent-answer", ...(await relayConsent(manifest, field.string(msg, "url", 2048), msg.body)) });
          break;
        case "output":
          this.emit("event", { type: "output", output: field.string(msg, "output", 64), decision: field.string(msg, "decision", 16), reason: field.string(msg, "reason", 4000) });
          break;
        case "output-file": {
          const output = checkRelativePath(field.string(msg, "output", 64));
          const rel = checkRelativePath(field.string(msg, "path", 1024));
          const size = field.int(msg, "size", 0, 2 ** 40);
          const target = path.join(this.options.outDir, output, rel);
          mkdirSync(path.dirname(target), { recursive: true });
          this.emit("event", { type: "output-file", output, path: rel, size });
          if (size === 0) writeFileSync(target, Buffer.alloc(0), { mode: 0o600 });
          else file = { target, size, parts: [], got: 0 };
          break;
        }
        case "audit-lines": {
          // Records as the enforcer writes them, kept durably at once (they survive a dead enforcer).
          const size = field.int(msg, "size", 1, 64 * 1024 * 1024);
          mkdirSync(path.dirname(this.auditPath), { recursive: true });
          file = { target: this.auditPath, size, parts: [], got: 0, append: true };
          break;
        }
        case "audit-end":
          writeSummary(this.auditPath, path.join(path.dirname(this.auditPath), "summary.json"));
          this.emit("event", { type: "audit-log", path: this.auditPath });
          break;
        case "refused":
          // The firewall refused to start the workload (signature, key, consent, input...).
          this.finished = true;
          this.emit("lost", refusal(field.string(msg, "code", 40), field.string(msg, "reason", 4000), manifest.file));
          break;
        case "done":
          this.finished = true;
          this.emit("event", { type: "done", code: field.int(msg, "code", 0, 255) });
          break;
        default:
          this.log.warn({ type: String(msg.type).slice(0, 40) }, "unknown message from the firewall ignored");
      }
    }
  }

  /** Streams an input's encrypted file as it is on disk; the firewall decrypts it. */
  private async sendInput(c: net.Socket, name: string): Promise<void> {
    const input = this.options.manifest.inputs.find((i) => i.name === name);
    if (!input) throw new AirlockError("GUEST_PROTOCOL", `the firewall asked for unknown input ${JSON.stringify(name)}`);
    const size = statSync(input.path).size;
    await sendMessage(c, { type: "input-file", name, size });
    let sent = 0;
    for await (const chunk of createReadStream(input.path, { highWaterMark: 256 * 1024, end: size - 1 }) as AsyncIterable<Buffer>) {
      sent += chunk.length;
      await sendData(c, chunk);
    }
    if (sent !== size) throw new AirlockError("USAGE", `input ${name}: ${input.path} changed while it was sent`);
  }

  async close(): Promise<void> {
    this.conn?.destroy();
    this.server?.close();
    await this.psp?.close();
    await this.sandboxPsp?.close();
    await this.kbs?.close();
  }
}

/**
 * Asks the governance endpoint on the firewall's behalf (POST JSON {room, manifestDigest}, 10 s).
 * The host could answer in the endpoint's place: the firewall records the answer as the host's
 * relay of it, and only a "no" or silence can hurt the data owner (fail closed).
 */
async function relayConsent(manifest: Manifest, url: string, body: unknown): Promise<{ status: number; body?: string; error?: string }> {
  if (url !== manifest.governance.consent) return { status: 0, error: "the firewall asked for a URL the manifest does not name" };
  try {
    const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body ?? {}), signal: AbortSignal.timeout(10_000), redirect: "error" });
    const text = (await res.text()).slice(0, 4096);
    return { status: res.status, body: text };
  } catch (err) {
    return { status: 0, error: (err as Error).message.slice(0, 300) };
  }
}

/** The firewall's refusal, with what a user can do about it. */
function refusal(code: string, reason: string, manifestFile: string): AirlockError {
  const hints: Record<string, string> = {
    KEY_RELEASE: `grant each input to this room and this firewall image: airlock manifest grant ${manifestFile} --input NAME [--identity FILE] (again after the manifest or the firewall image changes)`,
    MANIFEST_SIGNATURE: `each collaborator signs: airlock manifest sign ${manifestFile} --key KEY.pem --name NAME; check with airlock manifest verify`,
    CONSENT: "the governance endpoint must answer HTTP 200 with {\"consent\": true}",
    CRYPTO: "the input file does not decrypt with the granted identity: re-encrypt it, or grant the identity it was encrypted to",
  };
  const hint = hints[code];
  // The pair reports the message only, so the hint goes in it.
  return new AirlockError("POLICY", `the firewall refused the run: ${reason}${hint ? ` (to fix: ${hint})` : ""}`);
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

/** The run's summary for people: decisions and every violation, from the (signed) audit trail. */
function writeSummary(auditFile: string, summaryFile: string): void {
  const records = readFileSync(auditFile, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { kind: string; data: Record<string, unknown> });
  const summary = {
    audit: path.basename(auditFile),
    violations: records.filter((r) => r.kind === "violation").map((r) => r.data),
    outputs: records.filter((r) => r.kind === "output.decision").map((r) => r.data),
    refused: records.filter((r) => r.kind === "run.failed").map((r) => r.data),
  };
  writeFileSync(summaryFile, `${JSON.stringify(summary, null, 2)}\n`, { mode: 0o600 });
}
