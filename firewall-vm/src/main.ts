// The firewall VM's enforcer: gets the room from the host, checks its signatures, attests, obtains
// the input identities from the key broker, asks governance for consent, serves the sandbox's run,
// ships the audit trail to the host, and ends (init then powers the VM off). Any refusal before
// the workload starts ends the run with nothing in clear having left.
import { mkdirSync } from "node:fs";
import { AGENT_PORT, HOST_CONTROL_PORT } from "../../proto/src/control.ts";
import { AirlockError } from "../../proto/src/errors.ts";
import { createRootLogger } from "../../proto/src/log.ts";
import { inputKeyId, parseRoom, roomKeyId } from "../../proto/src/room.ts";
import { checkSignatures } from "../../proto/src/manifest/sign.ts";
import { parseIdentityFile, type AgeIdentity } from "../../proto/src/age/index.ts";
import { parseReport } from "../../proto/src/attestation/index.ts";
import { AUDIT_KINDS, AuditLog, signerFromPrivateKey } from "../../proto/src/audit/index.ts";
import { connectVsock, listenVsock, type VsockStream } from "../../proto/src/vsock-stream.ts";
import { HostChannel } from "./enforcer/host-channel.ts";
import { auditKey, emulatedProvider, kbsRelay, requestKey } from "./enforcer/keys.ts";
import { serveAgent } from "./enforcer/session.ts";
import { ShippedAudit } from "./enforcer/audit-ship.ts";

const HOST_CID = 2;
const RUN_DIR = "/tmp/airlock";
const log = createRootLogger({ name: "firewall", destination: 1 });
let agentLink: VsockStream | undefined;

async function main(): Promise<number> {
  const hostStream = await connectVsock(HOST_CID, HOST_CONTROL_PORT, 30_000);
  const host = new HostChannel(hostStream);
  const first = await host.nextJson("room");
  const room = parseRoom(first.canonical);
  const hold = first.hold === true;
  // TODO(manifest): pin the broker's identity in the manifest. Today the host names the broker, which
  // is no stronger than the host itself (true of the embedded broker anyway); it is in the audit.
  const brokerPublicKey = typeof first.brokerPublicKey === "string" && first.brokerPublicKey.length < 200 ? first.brokerPublicKey : null;
  log.info({ room: room.name, digest: room.digest }, "room received");

  mkdirSync(RUN_DIR, { recursive: true, mode: 0o700 });
  const key = auditKey();
  const audit = new ShippedAudit(await AuditLog.create(`${RUN_DIR}/audit.log`, { signer: signerFromPrivateKey(key.privateKey), logger: log }), host);
  let exitCode = 1;
  let failure: AirlockError | undefined;
  try {
    exitCode = await run(host, room, hold, audit, key, brokerPublicKey);
  } catch (err) {
    failure = AirlockError.from(err);
    log.error({ code: failure.code, err: failure.message }, "run refused or failed");
    await audit.append("run.failed", { code: failure.code, reason: failure.message.slice(0, 1000) }).catch(() => undefined);
  }
  // The trail has gone to the host record by record; the signed "closed" record ends it.
  await audit.close({ exitCode });
  await host.send({ type: "audit-end" });
  if (failure) await host.send({ type: "refused", code: failure.code, reason: failure.message.slice(0, 2000) });
  await host.send({ type: "done", code: exitCode });
  if (hold && !failure) {
    // `airlock up`: both VMs stay up with their results until the pair is stopped from the host.
    log.info("holding the pair until it is stopped");
    await new Promise(() => setInterval(() => {}, 60_000));
  }
  await new Promise((r) => setTimeout(r, 200));
  agentLink?.destroy();
  hostStream.destroy();
  return failure ? 1 : 0;
}

async function run(host: HostChannel, room: ReturnType<typeof parseRoom>, hold: boolean, audit: ShippedAudit, key: ReturnType<typeof auditKey>, brokerPublicKey: string | null): Promise<number> {
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
  });
  if (report.hostData.toString("hex") !== room.digest) throw new AirlockError("REPORT_REJECTED", "this VM's host_data is not the digest of the room it was sent: the host swapped the room");

  // 3. Keys: each input's identity, and the room's own identity for secure outputs.
  if (!brokerPublicKey) throw new AirlockError("KEY_RELEASE", "the host named no key broker identity");
  await audit.append("key.broker", { publicKey: brokerPublicKey, namedBy: "host" });
  const relay = await kbsRelay(`${RUN_DIR}/kbs.sock`);
  const identities = new Map<string, AgeIdentity[]>();
  let roomRecipient: string | undefined;
  try {
    for (const input of room.inputs) {
      const keyId = inputKeyId(room.name, input.name);
      try {
        const raw = await requestKey({ endpoint: relay.endpoint, keyId, provider, brokerPublicKey });
        identities.set(input.name, parseIdentityFile(raw.toString("utf8"), `key ${keyId}`));
        raw.fill(0);
        await audit.append(AUDIT_KINDS.keyReleased, { keyId, input: input.name, released: true });
      } catch (err) {
        await audit.append(AUDIT_KINDS.keyReleased, { keyId, input: input.name, released: false, reason: AirlockError.from(err).message.slice(0, 500) });
        throw err;
      }
    }
    {
      // Always asked: the console is a secure output, and without the room identity it stays inside.
      const keyId = roomKeyId(room.digest);
      try {
        const raw = await requestKey({ endpoint: relay.endpoint, keyId, provider, brokerPublicKey });
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

  // 5. The sandbox: one agent; any other connection to the agent port is recorded and closed.
  // TODO(channel): this link crosses the host's vsock fabric in clear, so the host process sees the
  // inputs' plaintext in memory (never on disk). proto/src/channel (secureServer/secureClient with
  // snpAttest/snpVerifyPeer) closes that; it needs the sandbox to reach an emulated PSP (a host
  // listener on the sandbox's PSP port), a report verifier the firewall bundle can import (today
  // host-tools/src/attestation), and the sandbox image's expected measurement bound to the room.
  let agent: VsockStream | undefined;
  const agentConn = new Promise<VsockStream>((resolve) => {
    listenVsock(AGENT_PORT, (s) => {
      if (agent) {
        // Closed on the next turn: listenVsock starts receiving on it after this callback returns.
        setImmediate(() => s.destroy());
        void audit.append(AUDIT_KINDS.violation, { what: "a second connection to the agent port: closed" }).catch(() => undefined);
        return;
      }
      agent = s;
      resolve(s);
    });
  });
  await host.send({ type: "firewall-ready", digest: room.digest });
  const conn = await agentConn;
  // Closed by main() once the host has heard how the run ended: the sandbox powers off when its
  // link closes, and the host must learn why before it sees that.
  agentLink = conn;
  const result = await serveAgent(conn, host, room, log, { hold, identities, audit, ...(roomRecipient ? { roomRecipient } : {}) });
  return result.exitCode;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    log.error({ err: err.message }, "enforcer failed");
    process.exit(1);
  },
);
