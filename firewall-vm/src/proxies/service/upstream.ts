// The firewall's client to the workload's server, over a stream the agent carries to the
// sandbox's loopback (proto/src/egress-mux.ts): HTTP/1.1 POST /<service>/<method> with the input
// as the body, or gRPC (HTTP/2, application/grpc, one length-prefixed message each way). The answer
// is bounded before it is buffered; a longer one fails the call, it is never cut.
import http from "node:http";
import http2 from "node:http2";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { ServiceProtocol } from "../../../../proto/src/manifest/schema.ts";

export interface UpstreamCall {
  protocol: ServiceProtocol;
  service: string;
  method: string;
  body: Buffer;
  maxResponseBytes: number;
  timeoutMs: number;
  /** A fresh stream to the workload's port. */
  connect: () => Duplex;
}

/** The workload's answer, or why there is none (the reason quotes the workload only by status). */
export type UpstreamResult = { ok: true; body: Buffer } | { ok: false; status: string; tooLarge?: boolean };

export function callWorkload(call: UpstreamCall): Promise<UpstreamResult> {
  return call.protocol === "grpc" ? callGrpc(call) : callHttp(call);
}

function callHttp(call: UpstreamCall): Promise<UpstreamResult> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: UpstreamResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const req = http.request({
      method: "POST",
      path: `/${call.service}/${call.method}`,
      host: "127.0.0.1",
      headers: { "content-type": "application/octet-stream", "content-length": call.body.length, connection: "close" },
      // No agent: each call has its own stream (node:http uses createConnection only without one).
      createConnection: () => call.connect() as unknown as Socket,
    });
    const timer = setTimeout(() => done({ ok: false, status: "timeout" }), call.timeoutMs);
    req.on("error", () => done({ ok: false, status: "connection failed" }));
    req.on("response", (res) => {
      const parts: Buffer[] = [];
      let size = 0;
      res.on("data", (d: Buffer) => {
        size += d.length;
        if (size > call.maxResponseBytes) return done({ ok: false, status: "answer over its bound", tooLarge: true });
        parts.push(d);
      });
      res.on("error", () => done({ ok: false, status: "connection failed" }));
      res.on("end", () => {
        const code = res.statusCode ?? 0;
        if (code >= 200 && code < 300) done({ ok: true, body: Buffer.concat(parts) });
        else done({ ok: false, status: `HTTP ${code}` });
      });
    });
    req.end(call.body);
  });
}

function callGrpc(call: UpstreamCall): Promise<UpstreamResult> {
  return new Promise((resolve) => {
    let settled = false;
    const session = http2.connect("http://127.0.0.1", { createConnection: () => call.connect() });
    const done = (r: UpstreamResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, status: "timeout" }), call.timeoutMs);
    session.on("error", () => done({ ok: false, status: "connection failed" }));
    const stream = session.request({ ":method": "POST", ":path": `/${call.service}/${call.method}`, "content-type": "application/grpc", te: "trailers" });
    const parts: Buffer[] = [];
    let size = 0;
    let status: string | undefined;
    stream.on("response", (headers) => {
      // A trailers-only answer carries its status in the headers.
      if (headers["grpc-status"] !== undefined) status = String(headers["grpc-status"]);
    });
    stream.on("trailers", (trailers) => (status = String(trailers["grpc-status"] ?? status ?? "")));
    stream.on("data", (d: Buffer) => {
      size += d.length;
      if (size > call.maxResponseBytes + 5) return done({ ok: false, status: "answer over its bound", tooLarge: true });
      parts.push(d);
    });
    stream.on("error", () => done({ ok: false, status: "connection failed" }));
    stream.on("end", () => {
      if (status !== "0") return done({ ok: false, status: `grpc-status ${status ?? "missing"}` });
      const all = Buffer.concat(parts);
      // Exactly one uncompressed message: flag 0, u32 length, the bytes.
      if (all.length < 5 || all[0] !== 0 || all.readUInt32BE(1) !== all.length - 5) return done({ ok: false, status: "not one uncompressed gRPC message" });
      done({ ok: true, body: all.subarray(5) });
    });
    const frame = Buffer.alloc(5 + call.body.length);
    frame.writeUInt32BE(call.body.length, 1);
    call.body.copy(frame, 5);
    stream.end(frame);
  });
}
