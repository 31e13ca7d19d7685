// One run, as the agent sees it: connects to the firewall over vsock (its only channel), opens the
// attested, encrypted channel over it (its PSP relayed by the firewall), places the inputs, checks
// the room and the firewall, runs the workload, ships its outputs and exit status, and waits for
// the firewall's bye.
import { createHash } from "node:crypto";
import { connectVsock } from "../../../proto/src/vsock-stream.ts";
import { AGENT_PORT, FIREWALL_CID, bodyOf } from "../../../proto/src/control.ts";
import type { ReportProvider } from "../../../proto/src/attestation/index.ts";
import { secureClient } from "../../../proto/src/channel/index.ts";
import { roomChannelOptions } from "../../../proto/src/agent-link.ts";
import { runWorkload } from "./workload.ts";
import { parseRun, sendResults } from "./protocol.ts";
import { placeInputs } from "./inputs.ts";
import { fromFirewall, toFirewall, type FromFirewall } from "./link.ts";
import { startEgress, type SandboxEgress } from "./egress.ts";
import { serveService } from "./service.ts";

const CONNECT_DEADLINE_MS = 180_000;
const AGENT_HANDSHAKE_TIMEOUT_MS = 180_000;

async function connectFirewall() {
  const deadline = Date.now() + CONNECT_DEADLINE_MS;
  for (;;) {
    try {
      return await connectVsock(FIREWALL_CID, AGENT_PORT, 5_000);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/**
 * The room the firewall says it serves must be the one this sandbox was launched for (its digest
 * is our host_data, which the handshake proved the firewall shares), and the firewall must run the
 * image that room pins. Otherwise nothing runs: the host launched a firewall of its own making.
 */
export function checkFirewall(room: Buffer, peer: { measurement: string; hostData: string }): void {
  // The launch bound the digest of exactly these bytes (the canonical manifest): no parse before.
  const digest = createHash("sha256").update(room).digest("hex");
  if (digest !== peer.hostData) throw new Error("the room the firewall sent is not the room this sandbox was launched for");
  const pins = (JSON.parse(room.toString("utf8")) as { attestation?: { firewall?: unknown } }).attestation;
  if (typeof pins?.firewall !== "string" || pins.firewall !== peer.measurement) throw new Error("the firewall's launch measurement is not the one the room pins");
}

/**
 * The firewall's messages after the run: egress stream messages go to their streams; resolves at
 * the bye, rejects if the link ends first or sends anything else.
 */
async function dispatch(messages: AsyncIterator<FromFirewall>, egress: SandboxEgress | null): Promise<void> {
  for (;;) {
    const m = await messages.next();
    if (m.done) throw new Error("the firewall closed the link before its bye");
    if (m.value.kind !== "message") throw new Error("the firewall sent data after the run");
    const body = bodyOf(m.value.message);
    if (body.case === "bye") return;
    if (egress && (body.case === "egressData" || body.case === "egressClose" || body.case === "egressAck")) egress.receive(body);
    else throw new Error(`the firewall sent ${body.case} after the run`);
  }
}

/** Runs the agent's side of the room to its end; resolves with the agent's exit status. */
export async function runAgent(provider: ReportProvider): Promise<number> {
  const raw = await connectFirewall();
  // The firewall must show a report from this room's launch (same root, same host_data as ours);
  // its measurement is checked against the room's pin once the room arrives (below).
  // The firewall accepts us as soon as it boots, answers the handshake once it has checked the room
  // (its attestation, key release and consent run beside it), and sends nothing before those pass:
  // give it time.
  const { stream: link, peer } = await secureClient(raw, { ...roomChannelOptions(provider, { peer: "firewall", timeoutMs: AGENT_HANDSHAKE_TIMEOUT_MS }), acceptClearBodies: true });
  link.on("error", () => {}); // reported by the reads below
  await toFirewall(link, { case: "hello", value: { agent: "airlock-sandbox/1" } });
  const messages = fromFirewall(link);
  // Inputs come first, then the run message.
  const spec = parseRun(await placeInputs(link, messages));
  checkFirewall(spec.room, peer);
  // A service room: the workload is a server; the agent carries the firewall's calls to it until
  // the firewall ends the link (a reset or the pair's end powers this VM off).
  if (spec.service) return serveService(link, messages, spec, spec.service);
  // From here the firewall sends only egress stream messages, then its bye.
  const egress = await startEgress(link, spec.egress);
  const bye = dispatch(messages, egress);
  bye.catch(() => undefined);
  const startedAt = Date.now();
  const result = await runWorkload({
    command: spec.command,
    env: { ...spec.env, ...(egress?.env ?? {}) },
    outputMounts: spec.outputs.map((o) => o.mount),
    timeoutSeconds: spec.timeoutSeconds,
    consoleMaxBytes: spec.console ? spec.console.maxBytes : null,
  });
  // Every egress connection ends with the workload, before its results leave.
  await egress?.stop();
  // With padTo, nothing crosses the fabric before the padded time: the run's duration stays inside.
  const padUntil = startedAt + (spec.padToSeconds ?? 0) * 1000;
  if (Date.now() < padUntil) await new Promise((r) => setTimeout(r, padUntil - Date.now()));
  // Throws (no output read, the run fails) if a process of the workload user survived.
  await sendResults(link, spec, result);
  // Wait for the firewall's bye before the VM powers off. Not bounded: a held pair (airlock up)
  // stays up until it is stopped, which closes the link.
  const ok = await bye.then(() => true, () => false);
  link.end();
  await new Promise((r) => setTimeout(r, 100));
  link.destroy();
  return ok ? 0 : 1;
}
