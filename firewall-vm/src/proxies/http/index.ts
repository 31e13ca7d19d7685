// HTTP egress as the enforcer starts it: the firewall's end of the agent's egress streams
// (proto/src/egress-mux.ts), each handed to the HTTP proxy (proxy.ts) as one connection.
import { AirlockError } from "../../../../proto/src/errors.ts";
import { EgressMux, type EgressMessage } from "../../../../proto/src/egress-mux.ts";
import { firewallAddress, parseEgressUrl } from "../../../../proto/src/egress.ts";
import { HttpEgressProxy, type HttpEgressOptions } from "./proxy.ts";
import { compileEgressRules } from "./rules.ts";

export { HttpEgressProxy } from "./proxy.ts";
export type { HttpEgressOptions } from "./proxy.ts";

/** A message of an egress stream from the agent. */
export type EgressFromAgent = EgressMessage | { case: "egressOpen"; value: { stream: number; port: number } };

export interface HttpEgress {
  receive(m: EgressFromAgent): void;
  /** Ends every stream (the workload is over); later egress messages break the protocol. */
  stop(): void;
}

/** Where the firewall reaches egress entry i: its NIC's forwarding address for it (the launch sets it up). */
export const nicUpstream = (entries: HttpEgressOptions["entries"]) => (i: number): { host: string; port: number } => ({ host: firewallAddress(i), port: parseEgressUrl(entries[i]!.url).port });

/** Starts the proxy for the room's entries; their rules are compiled first, so a bad one fails the run before the workload. */
export function startHttpEgress(options: Omit<HttpEgressOptions, "upstream"> & { upstream?: HttpEgressOptions["upstream"]; send: (m: EgressMessage) => Promise<void> }): HttpEgress {
  for (const e of options.entries) compileEgressRules(e);
  const proxy = new HttpEgressProxy({ ...options, upstream: options.upstream ?? nicUpstream(options.entries) });
  const mux = new EgressMux(options.send);
  let running = true;
  return {
    receive(m) {
      if (!running) throw new AirlockError("GUEST_PROTOCOL", "an egress message after the workload's end");
      if (m.case === "egressOpen") proxy.handle(mux.open(m.value.stream, m.value.port), m.value.port);
      else mux.receive(m);
    },
    stop() {
      running = false;
      proxy.stop();
      mux.closeAll();
    },
  };
}
