// The firewall VM's enforcer: gets the room from the host, opens the agent port, serves the
// sandbox's run, reports to the host, and ends (init then powers the VM off).
import { AGENT_PORT, HOST_CONTROL_PORT, readMessages, sendMessage } from "../../proto/src/control.ts";
import { createRootLogger } from "../../proto/src/log.ts";
import { parseRoom } from "../../proto/src/room.ts";
import { connectVsock, listenVsock, type VsockStream } from "../../proto/src/vsock-stream.ts";
import { serveAgent } from "./enforcer/session.ts";

const HOST_CID = 2;
const log = createRootLogger({ name: "firewall", destination: 1 });

async function main(): Promise<number> {
  const host = await connectVsock(HOST_CID, HOST_CONTROL_PORT, 30_000);
  const hostMessages = readMessages(host);
  const first = await hostMessages.next();
  if (first.done || first.value.kind !== "json" || first.value.value.type !== "room") throw new Error("the host did not send the room");
  const room = parseRoom(first.value.value.canonical);
  const hold = first.value.value.hold === true;
  log.info({ room: room.name, digest: room.digest }, "room received");

  const agentConn = new Promise<VsockStream>((resolve) => {
    const server = listenVsock(AGENT_PORT, (s) => {
      // One agent per run: later connections are closed at once.
      server.close();
      resolve(s);
    });
  });
  await sendMessage(host, { type: "firewall-ready", digest: room.digest });
  const agent = await agentConn;
  const result = await serveAgent(agent, host, room, log, { hold });
  await sendMessage(host, { type: "done", code: result.exitCode });
  if (hold) {
    // `airlock up`: both VMs stay up with their results until the pair is stopped from the host.
    log.info("holding the pair until it is stopped");
    await new Promise(() => setInterval(() => {}, 60_000));
  }
  await new Promise((r) => setTimeout(r, 200));
  host.destroy();
  agent.destroy();
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    log.error({ err: err.message }, "enforcer failed");
    process.exit(1);
  },
);
