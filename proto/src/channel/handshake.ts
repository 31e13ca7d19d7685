// The handshake (design in index.ts): hellos in clear, evidence both ways under handshake keys,
// the server's FINISHED last. Every step is bounded by one deadline; any failure destroys the
// underlying stream, so nothing is ever sent under keys whose peer was not verified.
import { randomBytes } from "node:crypto";
import type { Duplex } from "node:stream";
import { AirlockError } from "../errors.ts";
import { silentLogger } from "../log.ts";
import type { Logger } from "../log.ts";
import { Link } from "./link.ts";
import type { Frame, LinkConsumer } from "./link.ts";
import { alertReason, decodeHello, deriveKeys, encodeFrame, encodeHello, MAX_PAYLOAD, MAX_RECORD, newEphemeral, RecordCipher, RecordType, reportDataFor, transcriptHash } from "./protocol.ts";
import type { Role } from "./protocol.ts";
import { SecureStream } from "./secure-stream.ts";

/** Opaque attestation evidence: an SNP report with its certificates in production. */
export type Evidence = Buffer;

/** What the caller's check learned about the peer; `name` is how logs and errors refer to it. */
export interface PeerIdentity {
  name: string;
}

export interface ChannelOptions<P extends PeerIdentity = PeerIdentity> {
  /** Evidence binding `reportData` (64 bytes), e.g. an SNP report whose report_data it is. */
  attest(reportData: Buffer): Promise<Evidence>;
  /**
   * Checks the peer's evidence: that it binds `expectedReportData` and comes from the expected
   * peer (signature chain, measurement, host_data...). Throws to refuse; returns who the peer is.
   */
  verifyPeer(evidence: Evidence, expectedReportData: Buffer): Promise<P>;
  /** Bound on the whole handshake, attestation and verification included. Default 30 s. */
  timeoutMs?: number;
  /** This end takes clear bodies from the peer (secure-stream.ts): only a reader that authenticates them itself. */
  acceptClearBodies?: boolean;
  log?: Logger;
}

export interface SecureChannel<P extends PeerIdentity = PeerIdentity> {
  /** Plaintext in and out; end() sends an authenticated close. */
  stream: Duplex;
  peer: P;
}

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;

/** The agent's side: connects, proves itself second, waits for the server's verdict. */
export function secureClient<P extends PeerIdentity>(stream: Duplex, options: ChannelOptions<P>): Promise<SecureChannel<P>> {
  return handshake("client", stream, options);
}

/** The enforcer's side: proves itself first, verifies the client, sends FINISHED. */
export function secureServer<P extends PeerIdentity>(stream: Duplex, options: ChannelOptions<P>): Promise<SecureChannel<P>> {
  return handshake("server", stream, options);
}

/** Awaits handshake frames one at a time. */
class FrameWaiter implements LinkConsumer {
  private pending: { what: string; resolve: (f: Frame) => void; reject: (e: Error) => void } | undefined;

  constructor(private readonly link: Link) {
    link.attach(this);
  }

  next(what: string): Promise<Frame> {
    return new Promise((resolve, reject) => {
      this.pending = { what, resolve, reject };
      this.wake();
    });
  }

  wake(): void {
    const p = this.pending;
    if (!p) return;
    try {
      const frame = this.link.source.next();
      if (frame) {
        this.pending = undefined;
        p.resolve(frame);
      } else if (this.link.failure || this.link.ended) {
        this.pending = undefined;
        p.reject(new AirlockError("GUEST_PROTOCOL", `secure channel: the connection ${this.link.failure ? "failed" : "ended"} while waiting for ${p.what}`, { hint: "the peer may have refused this side's evidence; see its log" }));
      } else {
        this.link.resume();
      }
    } catch (err) {
      this.pending = undefined;
      p.reject(err as Error);
    }
  }
}

async function handshake<P extends PeerIdentity>(role: Role, stream: Duplex, options: ChannelOptions<P>): Promise<SecureChannel<P>> {
  const log = options.log ?? silentLogger;
  const link = new Link(stream, MAX_RECORD);
  const timeoutMs = options.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AirlockError("TIMEOUT", `secure channel: the ${role} handshake did not finish within ${timeoutMs} ms`)), timeoutMs);
  });
  const started = Date.now();
  let failed = false;
  try {
    const channel = await Promise.race([run(role, link, options, log, () => failed), deadline]);
    log.debug({ peer: channel.peer.name, ms: Date.now() - started }, "secure channel open");
    return channel;
  } catch (err) {
    failed = true;
    link.closeAfterFlush();
    const e = AirlockError.from(err, "GUEST_PROTOCOL");
    log.warn({ code: e.code, reason: e.message }, "secure channel handshake failed");
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** `failed` turns true when the handshake was given up (timeout): run() must then not open anything. */
async function run<P extends PeerIdentity>(role: Role, link: Link, options: ChannelOptions<P>, log: Logger, failed: () => boolean): Promise<SecureChannel<P>> {
  const peerRole: Role = role === "client" ? "server" : "client";
  const frames = new FrameWaiter(link);
  const own = newEphemeral();
  const ownHello = encodeHello({ publicRaw: own.publicRaw, nonce: randomBytes(32) });

  if (role === "client") link.write(encodeFrame(ownHello));
  const peerHelloBody = (await frames.next(`the ${peerRole}'s hello`)).body;
  const peerHello = decodeHello(peerHelloBody, peerRole);
  if (role === "server") link.write(encodeFrame(ownHello));

  const transcript = role === "client" ? transcriptHash(ownHello, peerHelloBody) : transcriptHash(peerHelloBody, ownHello);
  const keys = deriveKeys(own, peerHello.publicRaw, transcript);
  const c2s = role === "client";
  const sendHs = new RecordCipher(c2s ? keys.handshake.clientToServer : keys.handshake.serverToClient);
  const recvHs = new RecordCipher(c2s ? keys.handshake.serverToClient : keys.handshake.clientToServer);

  // Our evidence is made while the peer's travels (the server sends it at once).
  const ownEvidence = attestOwn(options, reportDataFor(role, transcript));
  ownEvidence.catch(() => undefined); // awaited below; a rejection before then is not unhandled
  if (role === "server") link.write(sendHs.seal(RecordType.EVIDENCE, await ownEvidence));

  const evidence = expect(recvHs, await frames.next(`the ${peerRole}'s evidence`), RecordType.EVIDENCE, peerRole);
  let peer: P;
  try {
    peer = await options.verifyPeer(evidence, reportDataFor(peerRole, transcript));
  } catch (err) {
    const e = err instanceof AirlockError ? err : new AirlockError("REPORT_REJECTED", (err as Error).message ?? String(err), { cause: err });
    // Tell the peer why before hanging up, so both logs say what happened.
    link.write(sendHs.seal(RecordType.ALERT, Buffer.from(`${e.code}: ${e.message}`.slice(0, 300))));
    throw new AirlockError(e.code, `secure channel: the ${peerRole}'s evidence was refused: ${e.message}`, { cause: err, ...(e.hint ? { hint: e.hint } : {}) });
  }
  if (failed()) throw new AirlockError("TIMEOUT", "secure channel: the peer's evidence verified after the handshake was given up");
  log.debug({ peer: peer.name }, `${peerRole} evidence verified`);

  if (role === "client") {
    link.write(sendHs.seal(RecordType.EVIDENCE, await ownEvidence));
    const fin = expect(recvHs, await frames.next("the server's verdict on our evidence"), RecordType.FINISHED, peerRole);
    if (fin.length !== 0) throw new AirlockError("GUEST_PROTOCOL", "secure channel: the server's FINISHED has a payload");
  } else {
    link.write(sendHs.seal(RecordType.FINISHED, Buffer.alloc(0)));
  }
  if (failed()) throw new AirlockError("TIMEOUT", "secure channel: the handshake finished after it was given up");
  const app = keys.application;
  const stream = new SecureStream(link, { send: c2s ? app.clientToServer : app.serverToClient, receive: c2s ? app.serverToClient : app.clientToServer }, log, options.acceptClearBodies === true);
  return { stream, peer };
}

async function attestOwn(options: ChannelOptions<PeerIdentity>, reportData: Buffer): Promise<Buffer> {
  const evidence = await options.attest(reportData);
  if (!Buffer.isBuffer(evidence) || evidence.length === 0 || evidence.length > MAX_PAYLOAD) {
    throw new AirlockError("INTERNAL", `secure channel: our own evidence must be 1 to ${MAX_PAYLOAD} bytes, got ${Buffer.isBuffer(evidence) ? evidence.length : typeof evidence}`);
  }
  return evidence;
}

/** Opens a handshake record and insists on its type; an ALERT is the peer refusing us. */
function expect(cipher: RecordCipher, frame: Frame, type: number, from: Role): Buffer {
  const record = cipher.open(frame.head, frame.body);
  if (record.type === RecordType.ALERT) {
    throw new AirlockError("REPORT_REJECTED", `secure channel: the ${from} refused the handshake: ${alertReason(record.payload)}`, { hint: `see the ${from}'s log; its expectations (measurement, host_data) must match this VM` });
  }
  if (record.type !== type) throw new AirlockError("GUEST_PROTOCOL", `secure channel: expected record type ${type} from the ${from}, got ${record.type}`);
  return record.payload;
}
