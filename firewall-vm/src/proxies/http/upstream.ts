// One exchange from the firewall's NIC to an endpoint the manifest names (an egress entry, the
// governance endpoint): plain HTTP, or TLS pinned to the manifest's CA (the chain must end at it
// and name the host) or key (checked before a byte of the request is written). The firewall carries
// no CA bundle: an https endpoint without a pin is never reached.
import { createHash, X509Certificate } from "node:crypto";
import http from "node:http";
import https from "node:https";
import tls, { type TLSSocket } from "node:tls";
import type { EgressTls } from "../../../../proto/src/manifest/schema.ts";

export interface SendOptions {
  host: string;
  port: number;
  servername: string;
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
  tls: EgressTls | undefined;
  timeoutMs: number;
}

/**
 * A TLS connection to an endpoint pinned by its key: the handshake is finished and the key checked
 * before a byte of the request is written (the chain itself is not judged: the pin is the trust).
 */
function pinnedTls(o: SendOptions, pin: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: o.host, port: o.port, servername: o.servername, minVersion: "TLSv1.2", rejectUnauthorized: false, timeout: o.timeoutMs });
    socket.once("secureConnect", () => {
      const raw = socket.getPeerCertificate().raw;
      const spki = raw ? createHash("sha256").update(new X509Certificate(raw).publicKey.export({ type: "spki", format: "der" })).digest("hex") : "";
      if (spki === pin.toLowerCase()) resolve(socket);
      else {
        socket.destroy();
        reject(Object.assign(new Error("the endpoint's key is not the pinned one"), { code: "PIN_MISMATCH" }));
      }
    });
    socket.once("error", reject);
    socket.once("timeout", () => socket.destroy(new Error("the endpoint did not answer in time")));
  });
}

/** One upstream exchange from the firewall's NIC; TLS is pinned to the manifest's CA or key. */
export async function send(scheme: "http" | "https", o: SendOptions, body: AsyncIterable<Buffer> | null): Promise<http.IncomingMessage> {
  const common = { host: o.host, port: o.port, method: o.method, path: o.path, headers: o.headers, agent: false as const, timeout: o.timeoutMs };
  let req: http.ClientRequest;
  if (scheme === "http") req = http.request(common);
  else if (o.tls?.caPem) {
    // A CA pin: the chain must end at it and name the host, or the handshake fails before any write.
    req = https.request({ ...common, servername: o.servername, minVersion: "TLSv1.2", ca: [o.tls.caPem], rejectUnauthorized: true });
  } else if (o.tls?.spkiSha256) {
    const socket = await pinnedTls(o, o.tls.spkiSha256);
    // No agent: the request goes on this very socket (an agent would open, and judge, its own).
    const { agent: _none, ...direct } = common;
    req = https.request({ ...direct, createConnection: () => socket });
  } else {
    throw Object.assign(new Error("an https endpoint without a pin"), { code: "PIN_MISMATCH" });
  }
  return new Promise((resolve, reject) => {
    req.on("response", resolve);
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("the endpoint did not answer in time")));
    if (!body) {
      req.end();
      return;
    }
    (async () => {
      for await (const c of body) if (!req.write(c)) await new Promise((r) => req.once("drain", r));
      req.end();
    })().catch((err: unknown) => req.destroy(err as Error));
  });
}
