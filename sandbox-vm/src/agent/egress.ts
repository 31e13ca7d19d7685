// The sandbox's side of HTTP egress (firewall-vm/src/proxies/README.md): while the workload runs,
// the agent listens on the sandbox's loopback — the HTTP proxy port and each endpoint's port — maps
// each endpoint's host name to 127.0.0.1 in /etc/hosts, and forwards every connection's bytes, as
// they are, over the attested channel to the firewall's proxy. It parses nothing and decides
// nothing: the firewall does. The sandbox has no NIC and no resolver; nothing else routes.
import { writeFileSync } from "node:fs";
import net from "node:net";
import type { Writable } from "node:stream";
import { EgressMux, MAX_EGRESS_STREAMS, type EgressMessage } from "../../../proto/src/egress-mux.ts";
import { PROXY_PORT } from "../../../proto/src/egress.ts";
import { toFirewall } from "./link.ts";

export interface EgressEndpoint {
  host: string;
  port: number;
}

export interface SandboxEgress {
  /** The workload's environment: the proxy for http (and https, to be refused with a reason). */
  env: Record<string, string>;
  /** Messages from the firewall for the streams. */
  receive(m: EgressMessage): void;
  /** Ends every connection and listener (the workload is over). */
  stop(): Promise<void>;
}

const LOOPBACK = "127.0.0.1";

/** Starts the listeners for `endpoints`; null when the room declares none (nothing listens then). */
export async function startEgress(link: Writable, endpoints: EgressEndpoint[], hostsFile = "/etc/hosts", proxyPort = PROXY_PORT): Promise<SandboxEgress | null> {
  if (endpoints.length === 0) return null;
  const mux = new EgressMux((m) => toFirewall(link, m));
  const hosts = [...new Set(endpoints.map((e) => e.host))];
  writeFileSync(hostsFile, `127.0.0.1 localhost\n127.0.0.1 ${hosts.join(" ")}\n`);
  const sockets = new Set<net.Socket>();
  let nextId = 1;
  const freeId = (): number => {
    for (let tries = 0; tries < 1023; tries++) {
      const id = nextId;
      nextId = (nextId % 1023) + 1;
      if (!mux.has(id)) return id;
    }
    throw new Error("no free egress stream id");
  };
  const accept = (port: number) => (socket: net.Socket): void => {
    socket.on("error", () => socket.destroy());
    if (mux.size >= MAX_EGRESS_STREAMS) {
      socket.destroy();
      return;
    }
    const id = freeId();
    const stream = mux.open(id, port);
    sockets.add(socket);
    socket.on("close", () => {
      sockets.delete(socket);
      stream.destroy();
    });
    stream.on("error", () => socket.destroy());
    stream.on("close", () => socket.destroy());
    toFirewall(link, { case: "egressOpen", value: { stream: id, port } }).then(
      () => {
        socket.pipe(stream);
        stream.pipe(socket);
      },
      () => socket.destroy(),
    );
  };
  const ports = [...new Set([proxyPort, ...endpoints.map((e) => e.port)])];
  const servers = await Promise.all(
    ports.map(
      (port) =>
        new Promise<net.Server>((resolve, reject) => {
          const server = net.createServer(accept(port));
          server.once("error", reject);
          server.listen(port, LOOPBACK, () => resolve(server));
        }),
    ),
  );
  const proxy = `http://${LOOPBACK}:${proxyPort}`;
  return {
    env: { HTTP_PROXY: proxy, http_proxy: proxy, HTTPS_PROXY: proxy, https_proxy: proxy },
    receive: (m) => mux.receive(m),
    async stop() {
      await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      for (const s of sockets) s.destroy();
      mux.closeAll();
    },
  };
}
