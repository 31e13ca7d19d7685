// The service proxy's decisions and its client to the workload, without VMs: scopes per call
// (policy.ts), padding, and the HTTP/1.1 and gRPC exchanges (upstream.ts) with real node:http and
// node:http2 servers over the same stream multiplexer the agent link uses.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EgressMux, type EgressMessage } from "../../../../proto/src/egress-mux.ts";
import { padAnswer, unpadAnswer, userUuid } from "../../../../proto/src/service.ts";
import { afterCall, FRESH, releaseFor } from "./policy.ts";
import { callWorkload } from "./upstream.ts";

describe("scopes per call", () => {
  const alice = "age1" + "q".repeat(58);
  const bob = "age1" + "p".repeat(58);
  it("raises and never lowers; two users' data together belong to neither", () => {
    const a = afterCall(FRESH, [{ scope: "USER_PRIVATE", owner: userUuid(alice) }]);
    expect(a.scope).toBe("USER_PRIVATE");
    expect(afterCall(a, [{ scope: "PUBLIC" }]).scope).toBe("USER_PRIVATE");
    expect(afterCall(a, [{ scope: "USER_PRIVATE", owner: userUuid(bob) }]).scope).toBe("MULTI_USER_PRIVATE");
    expect(afterCall(a, [{ scope: "SEALED" }]).scope).toBe("SEALED");
  });
  it("answers in clear only at PUBLIC, to the owner's key at USER_PRIVATE, else to the room or not at all", () => {
    const a = afterCall(FRESH, [{ scope: "USER_PRIVATE", owner: userUuid(alice) }]);
    expect(releaseFor(FRESH, undefined, false)).toEqual({ to: "public" });
    expect(releaseFor(a, alice, false)).toEqual({ to: "user", recipient: alice });
    expect(releaseFor(a, bob, true).to).toBe("refused");
    expect(releaseFor(a, undefined, true).to).toBe("refused");
    expect(releaseFor(afterCall(FRESH, [{ scope: "DOMAIN_OWNED" }]), alice, true)).toEqual({ to: "room" });
    expect(releaseFor(afterCall(FRESH, [{ scope: "SEALED" }]), alice, false).to).toBe("refused");
  });
  it("pads sealed answers to a power of two, capped by the method's bound", () => {
    expect(padAnswer(Buffer.from("hi"), 1 << 20).length).toBe(1024);
    expect(padAnswer(Buffer.alloc(3000), 1 << 20).length).toBe(4096);
    expect(padAnswer(Buffer.alloc(3000), 3000).length).toBe(3004);
    expect(unpadAnswer(padAnswer(Buffer.from("answer"), 100))?.toString()).toBe("answer");
    expect(() => unpadAnswer(Buffer.from([0, 0, 1, 0, 1]))).toThrow(/past its end/);
    // A failure is sealed in the smallest bucket, like any small answer.
    expect(padAnswer(null, 1 << 20).length).toBe(1024);
    expect(unpadAnswer(padAnswer(null, 100))).toBeNull();
  });
});

/** Two muxes joined back to back; `connect` opens a stream whose far end is a TCP connection to `port`. */
function linkedTo(port: number): () => Duplex {
  const ends: { near?: EgressMux } = {};
  const far: EgressMux = new EgressMux(async (m: EgressMessage) => void setImmediate(() => ends.near!.receive(m)));
  const near = (ends.near = new EgressMux(async (m: EgressMessage) => void setImmediate(() => far.receive(m))));
  let id = 1024;
  return () => {
    const s = near.open(id, port);
    const t = far.open(id++, port);
    const sock = net.connect(port, "127.0.0.1");
    sock.pipe(t).pipe(sock);
    return s;
  };
}

describe("the firewall's client to the workload (upstream.ts)", () => {
  let httpServer: http.Server;
  let grpcServer: http2.Http2Server;
  const ports = { http: 0, grpc: 0 };
  beforeAll(async () => {
    httpServer = http.createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on("data", (d: Buffer) => parts.push(d));
      req.on("end", () => (req.url === "/demo.Echo/Big" ? res.end(Buffer.alloc(5000)) : req.url === "/demo.Echo/Fail" ? res.writeHead(503).end("no") : res.end(Buffer.concat([Buffer.from(`${req.url}:`), ...parts]))));
    });
    // A gRPC server as grpc's wire format has it: one length-prefixed message each way, status in trailers.
    grpcServer = http2.createServer();
    grpcServer.on("stream", (stream, headers) => {
      const parts: Buffer[] = [];
      stream.on("data", (d: Buffer) => parts.push(d));
      stream.on("end", () => {
        const msg = Buffer.concat(parts).subarray(5);
        if (headers[":path"] === "/demo.Echo/Fail") {
          stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "13", "grpc-message": "broken" }, { endStream: true });
          return;
        }
        const out = Buffer.concat([Buffer.from("grpc:"), msg]);
        const frame = Buffer.alloc(5 + out.length);
        frame.writeUInt32BE(out.length, 1);
        out.copy(frame, 5);
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
        stream.end(frame);
      });
    });
    await new Promise<void>((r) => httpServer.listen(0, "127.0.0.1", r));
    await new Promise<void>((r) => grpcServer.listen(0, "127.0.0.1", r));
    ports.http = (httpServer.address() as net.AddressInfo).port;
    ports.grpc = (grpcServer.address() as net.AddressInfo).port;
  });
  afterAll(() => {
    httpServer.close();
    grpcServer.close();
  });
  const base = { service: "demo.Echo", body: Buffer.from("in"), maxResponseBytes: 4096, timeoutMs: 5000 };

  it("posts /service/method over HTTP/1.1 and bounds the answer", async () => {
    const connect = linkedTo(ports.http);
    expect(await callWorkload({ ...base, protocol: "http", method: "Echo", connect })).toEqual({ ok: true, body: Buffer.from("/demo.Echo/Echo:in") });
    expect(await callWorkload({ ...base, protocol: "http", method: "Fail", connect })).toEqual({ ok: false, status: "HTTP 503" });
    expect(await callWorkload({ ...base, protocol: "http", method: "Big", connect })).toMatchObject({ ok: false, tooLarge: true });
  });

  it("speaks gRPC over HTTP/2: one message each way, the status from the trailers", async () => {
    const connect = linkedTo(ports.grpc);
    expect(await callWorkload({ ...base, protocol: "grpc", method: "Echo", connect })).toEqual({ ok: true, body: Buffer.from("grpc:in") });
    expect(await callWorkload({ ...base, protocol: "grpc", method: "Fail", connect })).toEqual({ ok: false, status: "grpc-status 13" });
  });
});
