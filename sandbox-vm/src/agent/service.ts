// The sandbox's side of a service room (firewall-vm/src/proxies/service/README.md): the workload
// is an ordinary server listening on the sandbox's loopback. The agent starts it as it starts a
// batch workload (workload.ts: the workload user, its environment only), says ServerListening once
// the port accepts connections, then carries each stream the firewall opens (ServiceOpen) to that
// port, byte for byte. It parses nothing and decides nothing: what a call may carry in and out is
// the firewall's decision. If the server ends, the agent reports its exit status (the firewall
// decides what of it the host may see) and stays until the firewall ends the link.
import net from "node:net";
import type { Writable } from "node:stream";
import { bodyOf } from "../../../proto/src/control.ts";
import { EgressMux } from "../../../proto/src/egress-mux.ts";
import { toFirewall, type FromFirewall } from "./link.ts";
import type { RunSpec } from "./protocol.ts";
import { runWorkload } from "./workload.ts";

const LOOPBACK = "127.0.0.1";
/** A server runs as long as the room does: the longest timeout the Run message allows. */
const SERVICE_RUN_SECONDS = 604_800;
const PROBE_INTERVAL_MS = 100;

/** Resolves once something accepts a TCP connection on the loopback port. */
async function waitListening(port: number, timeoutMs: number, ended: Promise<unknown>): Promise<boolean> {
  let over = false;
  void ended.then(() => (over = true));
  const deadline = Date.now() + timeoutMs;
  while (!over && Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, LOOPBACK);
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, PROBE_INTERVAL_MS));
  }
  return false;
}

/** Serves the firewall's streams until it ends the link; resolves with the agent's exit status. */
export async function serveService(link: Writable, messages: AsyncIterator<FromFirewall>, spec: RunSpec, service: { port: number; readyTimeoutSeconds: number }): Promise<number> {
  const mux = new EgressMux((m) => toFirewall(link, m));
  const run = runWorkload({ command: spec.command, env: spec.env, outputMounts: [], timeoutSeconds: SERVICE_RUN_SECONDS, consoleMaxBytes: null });
  const exited = run.then(async (result) => {
    mux.closeAll();
    await toFirewall(link, { case: "exit", value: { code: result.code } }).catch(() => undefined);
  });
  const listening = await waitListening(service.port, service.readyTimeoutSeconds * 1000, run);
  // Not listening in time: the firewall hears the exit status, or silence it bounds itself.
  if (listening) await toFirewall(link, { case: "serverListening", value: {} });

  for (;;) {
    const m = await messages.next();
    if (m.done) break;
    if (m.value.kind !== "message") throw new Error("the firewall sent data outside a stream");
    const body = bodyOf(m.value.message);
    if (body.case === "bye") break;
    if (body.case === "serviceOpen") {
      let stream;
      try {
        stream = mux.open(body.value.stream, service.port);
      } catch {
        // Over the streams' bound (one closing as another opens): this call fails, the rest go on.
        mux.post({ case: "egressClose", value: { stream: body.value.stream } });
        continue;
      }
      const socket = net.connect(service.port, LOOPBACK);
      socket.on("error", () => stream.destroy());
      stream.on("error", () => socket.destroy());
      stream.on("close", () => socket.destroy());
      socket.on("close", () => stream.destroy());
      socket.pipe(stream);
      stream.pipe(socket);
    } else if (body.case === "egressData" || body.case === "egressClose" || body.case === "egressAck") {
      mux.receive(body);
    } else {
      throw new Error(`the firewall sent ${body.case} to a service`);
    }
  }
  mux.closeAll();
  void exited;
  return 0;
}
