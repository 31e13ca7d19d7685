// The firewall VM's enforcer: gets the room from the host, checks its signatures, attests, obtains
// the input identities from the key broker, asks governance for consent, serves the sandbox's run,
// ships the audit trail to the host, and ends (init then powers the VM off). Any refusal before
// the workload starts ends the run with nothing in clear having left.
import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import type { Duplex } from "node:stream";
import { AGENT_PORT, HOST_CONTROL_PORT, HOST_SANDBOX_PSP_PORT, SANDBOX_PSP_RELAY_PORT } from "../../proto/src/control.ts";
import { AirlockError } from "../../proto/src/errors.ts";
import { createRootLogger } from "../../proto/src/log.ts";
import { inputKeyId, parseRoom, roomKeyId } from "../../proto/src/room.ts";
import { checkSignatures } from "../../proto/src/manifest/sign.ts";
import type { DataScope } from "../../proto/src/manifest/schema.ts";
import { parseIdentityFile, type AgeIdentity } from "../../proto/src/age/index.ts";
import { parseReport } from "../../proto/src/attestation/index.ts";
import { secureServer, type SecureChannel } from "../../proto/src/channel/index.ts";
import { roomChannelOptions, type RoomPeer } from "../../proto/src/agent-link.ts";
import { AUDIT_KINDS, AuditLog, signerFromPrivateKey } from "../../proto/src/audit/index.ts";
import { connectVsock, listenVsock, type VsockStream } from "../../proto/src/vsock-stream.ts";
import { HostChannel } from "./enforcer/host-channel.ts";
import { auditKey, emulatedProvider, kbsRelay, requestKey } from "./enforcer/keys.ts";
import { serveAgent } from "./enforcer/session.ts";
import { ShippedAudit } from "./enforcer/audit-ship.ts";
import { Violations } from "./enforcer/violations.ts";

const HOST_CID = 2;
const RUN_DIR = "/tmp/airlock";
const log = createRootLogger({ name: "firewall", destination: 1 });
let agentLink: Duplex | undefined;
/** Connections relayed to the sandbox's PSP: the handshake needs exactly one report. */
const MAX_PSP_RELAYS = 1;
/** Extra connections to the agent port or the relay, counted (capped) and written after the workload. */
const violations = new Violations();

async function main(): Promise<number> {
  const hostStream = await connectVsock(HOST_CID, HOST_CONTROL_PORT, 30_000);
  const host = new HostChannel(hostStream);
  const first = await host.nextJson("room");
  const room = parseRoom(first.canonical);
  const hold = first.hold === true;
  // The host names the broker's key; the room (whose digest the launch bound) pins its hash.
  const brokerPublicKey = typeof first.brokerPublicKey === "string" && first.brokerPublicKey.length < 200 ? first.brokerPublicKey : null;
  log.info({ room: room.name, digest: room.digest }, "room received");

  mkdirSync(RUN_DIR, { recursive: true, mode: 0o700 });
  const key = auditKey();
  const audit = new ShippedAudit(await AuditLog.create(`${RUN_DIR}/audit.log`, { signer: signerFromPrivateKey(key.privateKey), logger: log }), host);
  let failure: AirlockError | undefined;
  try {
    await run(host, room, hold, audit, key, brokerPublicKey);
  } catch (err) {
    failure = AirlockError.from(err);
    log.error({ code: failure.code }, "run refused or failed");
    await violations.flush(audit).catch(() => undefined);
    await audit.append("run.failed", { code: failure.code, reason: failure.message.slice(0, 1000) }).catch(() => undefined);
  }
  // The trail has gone to the host record by record; the signed "closed" record ends it, saying
  // whether the run completed (the exit status itself is in workload.exited, at the scope's rules).
  await audit.close({ completed: !failure });
  await host.send({ type: "audit-end" });
  if (failure) await host.send({ type: "refused", code: failure.code, reason: failure.message.slice(0, 2000) });
  await host.send({ type: "done", completed: !failure });
  if (hold && !failure) {
    // `airlock up`: both VMs stay up with their results until the pair is stopped from the host.
    log.info("holding the pair until it is stopped");
    await new Promise(() => setInterval(() => {}, 60_000));
  }
  // An authenticated close, so the agent sees a clean end rather than a truncated channel.
  agentLink?.end();
  await new Promise((r) => setTimeout(r, 200));
  agentLink?.destroy();
  hostStream.destroy();
  return failure ? 1 : 0;
}

async function run(host: HostChannel, room: ReturnType<typeof parseRoom>, hold: boolean, audit: ShippedAudit, key: ReturnType<typeof auditKey>, brokerPublicKey: string | null): Promise<void> {
  // 0. Listen for the agent (and relay its PSP) at once: the sandbox boots alongside us, and an
  // agent that finds no listener waits a second per try (node-vsock's connect). Its handshake
  // simply waits until step 5 answers it; nothing is sent to it before the checks below pass.
  const sandboxPsp = pspRelay();
  let agent: VsockStream | undefined;
  // The first connection is the agent's (the workload starts only once its channel is open); the
  // listener then closes, so the sandbox can reach no firewall port at all while the workload runs
  // and no byte of a second connection crosses the fabric. One that races in is counted and closed.
  const agentConn = new Promise<VsockStream>((resolve) => {
    const listener = listenVsock(AGENT_PORT, (s) => {
      if (agent) {
        // Closed on the next turn: listenVsock starts receiving on it after this callback returns.
        // Counted, not recorded now: a record per connection, or at its time, would be a channel.
        setImmediate(() => s.destroy());
        violations.note("agentPort");
        return;
      }
      agent = s;
      listener.close();
      resolve(s);
    });
  });
  // 1. The room: its digest computed here; every required collaborator's signature over it.
  await audit.append(AUDIT_KINDS.manifestChecked, { room: room.name, digest: room.digest, inputs: room.inputs.length, outputs: room.outputs.length, collaborators: room.collaborators.length });
  const checks = checkSignatures(Buffer.from(room.digest, "hex"), room.collaborators, (await host.nextJson("signatures")).signatures);
  for (const c of checks) await audit.append(AUDIT_KINDS.signatureChecked, { collaborator: c.name, ok: c.ok, reason: c.reason });
  const bad = checks.filter((c) => !c.ok);
  if (bad.length) throw new AirlockError("MANIFEST_SIGNATURE", `manifest not signed by ${bad.map((c) => `${c.name} (${c.reason})`).join(", ")}`);

  // 2. Attestation: a report binding the audit key, so the trail's signatures name this VM.
  const provider = emulatedProvider();
  const evidence = await provider.getReport(key.reportData);
  const report = parseReport(evidence.report);
  await audit.append(AUDIT_KINDS.attestation, {
    provider: provider.kind,
    measurement: report.measurement.toString("hex"),
    hostData: report.hostData.toString("hex"),
    auditKeySpkiSha256: key.spkiSha256,
    report: evidence.report.toString("base64"),
    // What a verifier needs offline (`airlock audit verify`): the VCEK that signed the report and
    // the ASK+ARK the provider returned (absent from configfs-tsm without a host chain: AMD's then).
    vcek: evidence.vcek.toString("base64"),
    ...(evidence.chain ? { chain: evidence.chain } : {}),
  });
  if (report.hostData.toString("hex") !== room.digest) throw new AirlockError("REPORT_REJECTED", "this VM's host_data is not the digest of the room it was sent: the host swapped the room");
  if (report.measurement.toString("hex") !== room.attestation.firewall) throw new AirlockError("REPORT_REJECTED", "this firewall's launch measurement is not the one the signed room pins: the host launched another firewall image");

  // 3. Keys: each input's identity, and the room's own identity for secure outputs.
  if (!brokerPublicKey) throw new AirlockError("KEY_RELEASE", "the host named no key broker identity");
  if (createHash("sha256").update(Buffer.from(brokerPublicKey, "base64")).digest("hex") !== room.attestation.broker) {
    throw new AirlockError("KEY_RELEASE", "the key broker the host named is not the one the signed room pins");
  }
  await audit.append("key.broker", { publicKey: brokerPublicKey, pinnedBy: "room digest" });
  const relay = await kbsRelay(`${RUN_DIR}/kbs.sock`);
  const identities = new Map<string, AgeIdentity[]>();
  // Input name → the scope its owner granted (signed by the broker); the session applies the stricter of it and the manifest's.
  const ownerScopes = new Map<string, DataScope>();
  let roomRecipient: string | undefined;
  try {
    for (const input of room.inputs) {
      // The digest computed here: a grant made for another manifest (a look-alike reusing these names) has another key id.
      const keyId = inputKeyId(room.name, input.name, room.digest);
      try {
        const { key: raw, scope } = await requestKey({ endpoint: relay.endpoint, keyId, provider, brokerPublicKey });
        identities.set(input.name, parseIdentityFile(raw.toString("utf8"), `key ${keyId}`));
        raw.fill(0);
        ownerScopes.set(input.name, scope);
        await audit.append(AUDIT_KINDS.keyReleased, { keyId, input: input.name, released: true, ownerScope: scope, manifestScope: input.scope });
      } catch (err) {
        await audit.append(AUDIT_KINDS.keyReleased, { keyId, input: input.name, released: false, reason: AirlockError.from(err).message.slice(0, 500) });
        throw err;
      }
    }
    {
      // Always asked: the console is a secure output, and without the room identity it stays inside.
      const keyId = roomKeyId(room.digest);
      try {
        const { key: raw } = await requestKey({ endpoint: relay.endpoint, keyId, provider, brokerPublicKey });
        roomRecipient = parseIdentityFile(raw.toString("utf8"), `key ${keyId}`)[0]?.recipient.toString();
        raw.fill(0);
        await audit.append(AUDIT_KINDS.keyReleased, { keyId, purpose: "room identity (secure outputs)", released: roomRecipient !== undefined });
      } catch (err) {
        await audit.append(AUDIT_KINDS.keyReleased, { keyId, purpose: "room identity (secure outputs)", released: false, reason: AirlockError.from(err).message.slice(0, 500) });
      }
    }
  } finally {
    relay.close();
  }

  // 4. Consent, asked through the host (the firewall has no NIC); fail closed.
  if (room.governance.consent) {
    const url = room.governance.consent;
    await audit.append(AUDIT_KINDS.consentAsked, { url, via: "host relay" });
    const answer = await host.askConsent(url, room.digest, room.name);
    await audit.append(AUDIT_KINDS.consentAnswered, { url, status: answer.status, granted: answer.granted, detail: answer.detail });
    if (!answer.granted) throw new AirlockError("CONSENT", `governance did not consent (${answer.detail})`);
  }

  // 5. The sandbox: one agent; any other connection to the agent port is recorded and closed. The
  // link crosses the host's vsock fabric, so it is the attested, encrypted channel: the sandbox
  // must prove it runs the expected image for this room before it is sent anything.
  // The sandbox must run the image the signed room pins; the host has no say in it.
  const sandboxMeasurement = room.attestation.sandbox;
  await audit.append("channel.expected", { peer: "sandbox", measurement: sandboxMeasurement, pinnedBy: "room digest" });
  await host.send({ type: "firewall-ready", digest: room.digest });
  const conn = await agentConn;
  // Closed by main() once the host has heard how the run ended: the sandbox powers off when its
  // link closes, and the host must learn why before it sees that.
  agentLink = conn;
  let channel: SecureChannel<RoomPeer>;
  try {
    channel = await secureServer(conn, roomChannelOptions(provider, { peer: "sandbox", measurement: Buffer.from(sandboxMeasurement, "hex"), hostData: Buffer.from(room.digest, "hex"), log }));
  } catch (err) {
    const e = AirlockError.from(err);
    await audit.append("channel.refused", { peer: "sandbox", code: e.code, reason: e.message.slice(0, 1000) });
    throw new AirlockError(e.code, `the sandbox's attested channel was not established: ${e.message}`);
  } finally {
    sandboxPsp.close();
  }
  // The handshake was the sandbox's one attestation: the host closes its sandbox PSP listener too.
  await host.send({ type: "sandbox-attested" });
  agentLink = channel.stream;
  // A truncated or tampered channel after the run is over is only logged (reads report it before).
  channel.stream.on("error", (err: Error) => log.warn({ err: err.message }, "agent channel failed"));
  await audit.append("channel.opened", { peer: "sandbox", measurement: channel.peer.measurement, hostData: channel.peer.hostData, cipher: "X25519, ChaCha20-Poly1305" });
  await serveAgent(channel.stream, host, room, log, { hold, identities, ownerScopes, audit, violations, ...(roomRecipient ? { roomRecipient } : {}) });
}

/**
 * The sandbox's emulated PSP: each connection to SANDBOX_PSP_RELAY_PORT is piped byte for byte to
 * the host's HOST_SANDBOX_PSP_PORT. A dumb relay (the report is signed where it is made, and its
 * launch is the sandbox's, not ours), bounded to MAX_PSP_RELAYS connections and closed with all
 * its connections once the handshake is over.
 */
function pspRelay(): { close(): void } {
  const open = new Set<VsockStream>();
  let count = 0;
  let closed = false;
  const server = listenVsock(SANDBOX_PSP_RELAY_PORT, (local) => {
    if (closed || ++count > MAX_PSP_RELAYS) {
      violations.note("pspRelay");
      return void setImmediate(() => local.destroy());
    }
    open.add(local);
    local.on("error", () => {});
    local.on("close", () => open.delete(local));
    connectVsock(HOST_CID, HOST_SANDBOX_PSP_PORT, 10_000).then(
      (remote) => {
        open.add(remote);
        remote.on("error", () => local.destroy());
        remote.on("close", () => (open.delete(remote), local.destroy()));
        local.on("close", () => remote.destroy());
        local.pipe(remote);
        remote.pipe(local);
      },
      () => local.destroy(),
    );
  });
  return {
    close() {
      closed = true;
      server.close();
      for (const s of open) s.destroy();
    },
  };
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    log.error({ err: err.message }, "enforcer failed");
    process.exit(1);
  },
);
