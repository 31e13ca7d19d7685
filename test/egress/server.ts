// For the egress tests and bench: a test CA made with Debian's openssl, and a real HTTPS (or HTTP)
// server on the host's loopback that records every request it received, so a test can check that
// nothing reached it that the rules did not allow.
import { execFileSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import path from "node:path";

export interface TestPki {
  caPem: string;
  certPem: string;
  keyPem: string;
  /** SHA-256 of the server key's SubjectPublicKeyInfo (DER), for a key pin. */
  spkiSha256: string;
}

/** A CA and a server certificate for `host`, signed by it (P-256, valid two days). */
export function makePki(dir: string, host: string, name = "ca"): TestPki {
  const f = (n: string) => path.join(dir, `${name}-${n}`);
  const ossl = (...args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "2", "-subj", `/CN=airlock test CA ${name}`);
  ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f("srv.key"), "-out", f("srv.csr"), "-subj", `/CN=${host}`);
  writeFileSync(f("ext"), `subjectAltName=DNS:${host}\n`);
  ossl("x509", "-req", "-in", f("srv.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("srv.pem"), "-days", "2", "-extfile", f("ext"));
  const certPem = readFileSync(f("srv.pem"), "utf8");
  const spki = new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" });
  return { caPem: readFileSync(f("ca.pem"), "utf8"), certPem, keyPem: readFileSync(f("srv.key"), "utf8"), spkiSha256: createHash("sha256").update(spki).digest("hex") };
}

export interface Received {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface TestServer {
  port: number;
  received: Received[];
  close(): Promise<void>;
}

/**
 * The endpoint: answers /echo with what it got (JSON), /bytes/N with N bytes, /status/N with that
 * status, anything else with "ok". `pki` given: HTTPS with that certificate; else plain HTTP.
 */
export async function startServer(pki?: TestPki): Promise<TestServer> {
  const received: Received[] = [];
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const parts: Buffer[] = [];
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () => {
      const body = Buffer.concat(parts);
      received.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      const u = new URL(req.url ?? "/", "http://x");
      const bytes = /\/bytes\/(\d+)$/.exec(u.pathname);
      const status = /\/status\/(\d+)$/.exec(u.pathname);
      if (u.pathname.endsWith("/echo")) {
        const out = Buffer.from(JSON.stringify({ method: req.method, url: req.url, bodyLength: body.length, body: body.toString("utf8").slice(0, 2000) }));
        res.writeHead(200, { "content-type": "application/json", "content-length": out.length });
        res.end(out);
      } else if (bytes) {
        const n = Number(bytes[1]);
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": n });
        res.end(Buffer.alloc(n, 0x61));
      } else if (status) {
        res.writeHead(Number(status[1]));
        res.end();
      } else {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok\n");
      }
    });
  };
  const server = pki ? https.createServer({ cert: pki.certPem, key: pki.keyPem }, handler) : http.createServer(handler);
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
