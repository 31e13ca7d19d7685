// Step 5: the agent link. The firewall listens for the agent (and relays its PSP) from the start:
// the sandbox boots alongside it, and an agent that finds no listener tries again a quarter of a
// second later. The handshake runs as soon as the room is checked, beside steps 2-4; nothing is
// sent over the channel before those pass. The link crosses the host's vsock fabric, so it is
// the attested, encrypted channel: the sandbox must prove it runs the image the signed room pins
// (the host has no say in it) before it is sent anything — channel.expected, channel.opened or
// channel.refused.
import { AGENT_PORT, HOST_SANDBOX_PSP_PORT, SANDBOX_PSP_RELAY_PORT } from "../../../proto/src/control.ts";
import { AirlockError } from "../../../proto/src/errors.ts";
import { secureServer, type SecureChannel } from "../../../proto/src/channel/index.ts";
import { roomChannelOptions, type RoomPeer } from "../../../proto/src/agent-link.ts";
import { connectVsock, listenVsock, type VsockStream } from "../../../proto/src/vsock-stream.ts";
import { HOST_CID, type RunContext } from "./context.ts";
import type { Violations } from "./violations.ts";

/** Connections relayed to the sandbox's PSP: the handshake needs exactly one report. */
const MAX_PSP_RELAYS = 1;

export interface AgentListeners {
  /** The agent's connection, the first to the agent port. */
  connection: Promise<VsockStream>;
  /** The relay to the sandbox's PSP on the host. */
  pspRelay: { close(): void };
}

/** Opens the agent port and the sandbox's PSP relay. */
export function listenForAgent({ violations }: RunContext): AgentListeners {
  const pspRelay = startPspRelay(violations);
  let agent: VsockStream | undefined;
  // The first connection is the agent's (the workload starts only once its channel is open); the
  // listener then closes, so the sandbox can reach no firewall port at all while the workload runs
  // and no byte of a second connection crosses the fabric. One that races in is counted and closed.
  const connection = new Promise<VsockStream>((resolve) => {
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
  return { connection, pspRelay };
}

/**
 * Waits for the agent and runs the attested handshake with it; the relay closes whatever the
 * outcome. Started as soon as the room is checked, beside attestation, key release and consent
 * (issue 12: the sandbox's half of the handshake then runs while this VM talks to the broker):
 * the handshake shows the sandbox only this VM's report, and nothing is sent over the channel
 * before openAgentChannel, after those steps passed.
 */
export async function handshakeAgent(ctx: RunContext, listeners: AgentListeners, attested: Promise<unknown>): Promise<SecureChannel<RoomPeer>> {
  const { room, host, audit, provider, log } = ctx;
  const sandboxMeasurement = room.attestation.sandbox;
  const handshake = (async () => {
    const conn = await listeners.connection;
    // Closed by the run's end once the host has heard how the run ended: the sandbox powers off when
    // its link closes, and the host must learn why before it sees that.
    ctx.agentLink = conn;
    try {
      return await secureServer(conn, roomChannelOptions(provider, { peer: "sandbox", measurement: Buffer.from(sandboxMeasurement, "hex"), hostData: Buffer.from(room.digest, "hex"), log }));
    } finally {
      listeners.pspRelay.close();
    }
  })();
  handshake.catch(() => undefined); // awaited below, once this VM's own attestation is on record
  // The trail's first records are this VM's attestation (audit verify checks it): the handshake's
  // own records follow it, whenever the handshake itself ran.
  await attested;
  await audit.append("channel.expected", { peer: "sandbox", measurement: sandboxMeasurement, pinnedBy: "room digest" });
  let channel: SecureChannel<RoomPeer>;
  try {
    channel = await handshake;
  } catch (err) {
    const e = AirlockError.from(err);
    await audit.append("channel.refused", { peer: "sandbox", code: e.code, reason: e.message.slice(0, 1000) });
    throw new AirlockError(e.code, `the sandbox's attested channel was not established: ${e.message}`);
  }
  // The handshake was the sandbox's one attestation: the host closes its sandbox PSP listener too.
  await host.send({ case: "sandboxAttested", value: {} });
  ctx.agentLink = channel.stream;
  // A truncated or tampered channel after the run is over is only logged (reads report it before).
  channel.stream.on("error", (err: Error) => log.warn({ err: err.message }, "agent channel failed"));
  await audit.append("channel.opened", { peer: "sandbox", measurement: channel.peer.measurement, hostData: channel.peer.hostData, cipher: "X25519, ChaCha20-Poly1305" });
  return channel;
}

/** After this VM's own checks passed: tells the host the firewall is ready, and waits for the agent's handshake. */
export async function openAgentChannel(ctx: RunContext, handshake: Promise<SecureChannel<RoomPeer>>): Promise<SecureChannel<RoomPeer>> {
  handshake.catch(() => undefined); // its refusal is ours once awaited below, even if the send fails first
  await ctx.host.send({ case: "firewallReady", value: { digest: ctx.room.digest } });
  return handshake;
}

/**
 * The sandbox's emulated PSP: each connection to SANDBOX_PSP_RELAY_PORT is piped byte for byte to
 * the host's HOST_SANDBOX_PSP_PORT. A dumb relay (the report is signed where it is made, and its
 * launch is the sandbox's, not ours), bounded to MAX_PSP_RELAYS connections and closed with all
 * its connections once the handshake is over.
 */
function startPspRelay(violations: Violations): { close(): void } {
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
