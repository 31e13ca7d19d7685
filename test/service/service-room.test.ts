// Issue 11 end to end under TCG: test/rooms/service (an ordinary Node HTTP server in the sandbox,
// one of whose methods hands each caller what earlier callers sent) behind the firewall's
// EzPublicApi, called by real gRPC clients on the host — airlock's (host-tools/src/service/client.ts,
// which checks the evidence first) and one built from Encrypted Zone's own .proto files. One pair
// serves every case below, in order: the scope the sandbox reaches in one case is what the next
// case starts from.
import { readFileSync } from "node:fs";
import { X509Certificate, createPublicKey } from "node:crypto";
import type net from "node:net";
import path from "node:path";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { X25519Identity } from "../../proto/src/age/index.ts";
import { grpcDefinition } from "../../proto/src/grpc.ts";
import { sha256Hex } from "../../proto/src/service.ts";
import { RoomClient } from "../../host-tools/src/service/client.ts";
import { airlock, killQemus, repoRoot, testStateDir } from "../helpers.ts";
import { ezSdkModule } from "./ez-sdk.ts";

const state = testStateDir();
const env = { AIRLOCK_STATE: state };
const NAME = "svc-e2e";
let endpoint = "";
let digest = "";
let trustRoots: string[] = [];
const alice = X25519Identity.generate();
const bob = X25519Identity.generate();

interface Status {
  status: string;
  manifestDigest: string;
  service: { endpoint: string; status: string; served: number; refused: number; resets: number; apiTlsSpkiSha256: string };
}
const status = async (): Promise<Status> => JSON.parse((await airlock(["status", NAME, "--json"], env)).stdout) as Status;

const audit = (): { kind: string; data: Record<string, unknown> }[] =>
  readFileSync(path.join(state, "pairs", NAME, "outputs/audit.log"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { kind: string; data: Record<string, unknown> });

const connect = (o: Partial<Parameters<typeof RoomClient.connect>[0]> = {}): Promise<RoomClient> => RoomClient.connect({ endpoint, digest, trustRoots, ...o });

beforeAll(async () => {
  const up = await airlock(["up", path.join(repoRoot, "test/rooms/service/room.yaml"), "--name", NAME, "--json"], env, 300_000);
  expect(up.code, up.stderr).toBe(0);
  const s = await status();
  expect(s.status).toBe("running");
  expect(s.service.status).toBe("serving");
  endpoint = s.service.endpoint;
  digest = s.manifestDigest;
  trustRoots = [readFileSync(path.join(state, "psp/ark.pem"), "latin1")];
});

afterAll(async () => {
  await airlock(["down", NAME], env);
  killQemus(NAME);
});

describe("a service room (test/rooms/service)", () => {
  it("answers a client built from Encrypted Zone's own .proto files, unchanged, over the attested TLS key", async () => {
    const sdk = (await import(ezSdkModule())) as { EzPublicApi: DescService; CallRequestSchema: DescMessage };
    // The certificate `airlock call --cert-out` writes once the evidence checks out; the SDK's
    // client trusts exactly it (its key is the one `airlock status` and the evidence name).
    const certFile = path.join(state, "api-cert.pem");
    const saved = await airlock(["call", NAME, "--cert-out", certFile, "--emulated-psp"], env);
    expect(saved.code, saved.stderr).toBe(0);
    const cert = readFileSync(certFile, "utf8");
    expect(sha256Hex(createPublicKey(cert).export({ type: "spki", format: "der" }))).toBe((await status()).service.apiTlsSpkiSha256);
    const Client = grpc.makeGenericClientConstructor(grpcDefinition(sdk.EzPublicApi, "client"), "EzPublicApi");
    const client = new Client(endpoint, grpc.credentials.createSsl(Buffer.from(cert)), { "grpc.ssl_target_name_override": "localhost" }) as unknown as Record<string, (req: unknown, cb: (err: grpc.ServiceError | null, res?: Record<string, unknown>) => void) => void>;
    const call = (req: Record<string, unknown>): Promise<Record<string, unknown>> => new Promise((resolve, reject) => client.call!(create(sdk.CallRequestSchema, req), (err, res) => (err ? reject(err) : resolve(res!))));
    const res = await call({ operatorDomain: "example", serviceName: "demo.Echo", methodName: "Echo", sessionMetadata: { sessionId: 1n, ezClientUuid: new Uint8Array(16) }, inputParams: { publicInput: new TextEncoder().encode("hello") } });
    expect(Buffer.from(res.publicOutput as Uint8Array).toString()).toBe("echo:hello");
    const health = await new Promise<Record<string, unknown>>((resolve, reject) => client.getHealthReport!({}, (err, r) => (err ? reject(err) : resolve(r!))));
    expect(health).toMatchObject({ healthReport: { isolates: [{ state: 7, currentScope: 1, services: [{ serviceName: "demo.Echo" }] }] } });
    (client as unknown as grpc.Client).close();
  });

  it("refuses, before sending anything, a firewall whose evidence is not the room expected or whose connection someone else terminates", async () => {
    await expect(connect({ digest: "00".repeat(32) })).rejects.toThrow(/\[?REPORT_REJECTED|serves room/);
    await expect(connect({ trustRoots: [] })).rejects.toThrow(/attestation report fails its root check/);
    // A relay that terminates TLS with its own key and passes the bytes on: the evidence it relays
    // binds the firewall's key, not the one this connection runs on.
    const { privateKey, publicKey } = (await import("node:crypto")).generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const { selfSignedCertificate } = await import("../../proto/src/tls-cert.ts");
    const certPem = selfSignedCertificate({ privateKey, publicKey, commonName: "mitm", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"], notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3600_000) });
    const relay = tls.createServer({ key: privateKey.export({ type: "pkcs8", format: "pem" }), cert: certPem, ALPNProtocols: ["h2"] }, (inner) => {
      const outer = tls.connect({ host: "127.0.0.1", port: Number(endpoint.split(":")[1]), rejectUnauthorized: false, ALPNProtocols: ["h2"] });
      inner.pipe(outer).pipe(inner);
      inner.on("error", () => outer.destroy());
      outer.on("error", () => inner.destroy());
    });
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    const port = (relay.address() as net.AddressInfo).port;
    const servedBefore = (await status()).service.served;
    await expect(connect({ endpoint: `127.0.0.1:${port}` })).rejects.toThrow(/someone else terminates the connection/);
    relay.close();
    expect((await status()).service.served).toBe(servedBefore);
  });

  it("refuses a method the room does not list, says why, and records it", async () => {
    const c = await connect();
    await expect(c.call("demo.Echo", "Shutdown", Buffer.from("x"))).rejects.toThrow(/does not allow demo.Echo\/Shutdown.*PERMISSION_DENIED/);
    c.close();
    expect(audit().filter((r) => r.kind === "service.call" && r.data.method === "Shutdown")).toMatchObject([{ data: { decision: "refused", reason: expect.stringMatching(/does not allow/) as unknown } }]);
  });

  it("seals a USER_PRIVATE answer to its caller; a hostile workload cannot hand it to another caller, because the sandbox is reset first", async () => {
    const c = await connect();
    const firstVm = (await c.call("demo.Echo", "Instance", Buffer.alloc(0))).output!.toString();
    const a = await c.call("demo.Echo", "Remember", Buffer.from("alice-secret"), { scope: "USER_PRIVATE", identity: alice });
    expect(a).toMatchObject({ released: "user" });
    expect(a.output!.toString()).toBe("alice-secret");
    // The health report says the scope rose (from the enforcer's own state).
    expect((await c.health()).healthReport!.isolates[0]!.currentScope).toBe(3);
    // Bob calls the method that answers with everything it was sent: the answer would be Alice's
    // data, which may go only to Alice's key. The room says reset: the sandbox restarts from its
    // measured image (a new boot), Bob's input goes to a sandbox that never saw Alice's.
    const b = await c.call("demo.Echo", "Remember", Buffer.from("bob-data"), { scope: "USER_PRIVATE", identity: bob });
    expect(b.released).toBe("user");
    expect(b.output!.toString()).toBe("bob-data");
    // A caller naming Alice as the owner but its own reply key is refused: the key names the user.
    const mallory = X25519Identity.generate();
    const req = await c.request("demo.Echo", "Echo", Buffer.from("x"), { scope: "USER_PRIVATE", identity: mallory });
    expect(req.inputParams).toBeDefined();
    const secondVm = (await c.call("demo.Echo", "Instance", Buffer.alloc(0))).output!.toString();
    expect(secondVm).not.toBe(firstVm);
    const s = await status();
    expect(s.service.resets).toBeGreaterThanOrEqual(2);
    const resets = audit().filter((r) => r.kind === "service.reset");
    expect(resets.length).toBe(s.service.resets);
    // Back at PUBLIC after the reset.
    expect((await c.health()).healthReport!.isolates[0]!.currentScope).toBe(1);
    c.close();
  });

  it("keeps a stream on one instance, and refuses an answer that would leak once the scope rose (no reset under a stream)", async () => {
    const c = await connect();
    const ids = await c.stream("demo.Echo", "Instance", [{ input: Buffer.alloc(0) }, { input: Buffer.alloc(0) }, { input: Buffer.alloc(0) }]);
    expect(new Set(ids.map((r) => r.output!.toString())).size).toBe(1);
    // On one stream: Bob's USER_PRIVATE data, then a call with no reply key whose answer would carry it.
    await expect(c.stream("demo.Echo", "Remember", [{ input: Buffer.from("bob-2"), options: { scope: "USER_PRIVATE", identity: bob } }, { input: Buffer.from("anyone") }])).rejects.toThrow(/stream holds it|reply key/);
    c.close();
    const refusals = audit().filter((r) => r.kind === "service.call" && r.data.decision === "refused" && r.data.stream === true);
    expect(refusals.length).toBeGreaterThanOrEqual(1);
  });

  it("above PUBLIC, tells a caller only that the workload failed, never its words", async () => {
    const c = await connect();
    const r = await c.call("demo.Echo", "Remember", Buffer.from("carol"), { scope: "USER_PRIVATE", identity: alice });
    expect(r.output!.toString()).not.toContain("bob");
    const err = await c.call("demo.Echo", "Fail", Buffer.alloc(0), { identity: alice }).catch((e: Error) => e);
    expect(String(err)).toMatch(/details withheld/);
    expect(String(err)).not.toMatch(/secret-detail|carol/);
    c.close();
    const last = audit().filter((r) => r.kind === "service.call").at(-1)!;
    expect(last.data).toMatchObject({ method: "Fail", outcome: "completed" });
  });

  it("stands callers that misbehave: garbage, bad ciphertext, oversized input, a flood of calls, an abandoned stream", async () => {
    const c = await connect();
    // Raw bytes that are no CallRequest, through a client that sends whatever it is given.
    const rawDef = { call: { path: "/enforcer.v1.EzPublicApi/Call", requestStream: false, responseStream: false, requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b } };
    const cert = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: "127.0.0.1", port: Number(endpoint.split(":")[1]), rejectUnauthorized: false, ALPNProtocols: ["h2"] }, () => (resolve(new X509Certificate(s.getPeerCertificate().raw).toString()), s.destroy()));
      s.on("error", reject);
    });
    const Raw = grpc.makeGenericClientConstructor(rawDef, "Raw");
    const raw = new Raw(endpoint, grpc.credentials.createSsl(Buffer.from(cert)), { "grpc.ssl_target_name_override": "localhost" }) as unknown as { call: (b: Buffer, cb: (err: grpc.ServiceError | null) => void) => void; close(): void };
    for (const garbage of [Buffer.from([0xff, 0xff, 0xff]), Buffer.from([0x12, 0x05, 0x00, 0x61, 0x62])]) {
      const err = await new Promise<grpc.ServiceError | null>((resolve) => raw.call(garbage, resolve));
      expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    }
    raw.close();
    // A sealed input that is not sealed to the room.
    const req = await c.request("demo.Echo", "Echo", Buffer.from("x"), { scope: "DOMAIN_OWNED" });
    req.inputParams!.encryptedInput![0]!.ciphertext = Buffer.from("age-encryption.org/v1\n-> X25519 AAAA\n");
    const api = (c as unknown as { api: Record<string, (r: unknown, o: unknown, cb: (e: grpc.ServiceError | null) => void) => void> }).api;
    const bad = await new Promise<grpc.ServiceError | null>((resolve) => api.call!(req, {}, resolve));
    expect(bad?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(bad?.details).toMatch(/does not decrypt with the room's input key/);
    // Over the method's bound: refused before it reaches the sandbox.
    await expect(c.call("demo.Echo", "Echo", Buffer.alloc(1536 * 1024))).rejects.toThrow(/over the method's bound.*RESOURCE_EXHAUSTED/);
    // 40 at once: at most 16 in flight, the rest refused with a reason; the service stays up.
    const results = await Promise.allSettled(Array.from({ length: 40 }, () => c.call("demo.Echo", "Echo", Buffer.from("f"))));
    const ok = results.filter((r) => r.status === "fulfilled").length;
    expect(ok).toBeGreaterThanOrEqual(16);
    for (const r of results) if (r.status === "rejected") expect(String(r.reason)).toMatch(/calls are in flight already/);
    // A stream opened and abandoned does not hold the sandbox: a call that needs a reset still gets one.
    const stream = (api as unknown as { streamCall: () => grpc.ClientDuplexStream<unknown, unknown> }).streamCall();
    stream.on("error", () => undefined);
    stream.write(await c.request("demo.Echo", "Echo", Buffer.from("s")));
    await new Promise((r) => setTimeout(r, 500));
    stream.cancel();
    await new Promise((r) => setTimeout(r, 500));
    await c.call("demo.Echo", "Echo", Buffer.from("a"), { scope: "USER_PRIVATE", identity: alice });
    const after = await c.call("demo.Echo", "Echo", Buffer.from("after"));
    expect(after).toMatchObject({ released: "public" });
    expect(after.output!.toString()).toBe("echo:after");
    c.close();
  });
});
