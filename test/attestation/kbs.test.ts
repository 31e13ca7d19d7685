// The key broker over real HTTP (127.0.0.1 port 0 and a Unix socket), with the firewall-side client
// attesting through the emulated PSP served on a real Unix socket.
import { createPublicKey, generateKeyPairSync, randomBytes } from "node:crypto";
import http from "node:http";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requestKey } from "../../proto/src/attestation/kbs-client.ts";
import { newX25519, releaseTranscript, reportDataFor, unwrapKey, verifyRelease, wrapKey } from "../../proto/src/attestation/kbs-wire.ts";
import type { DataScope } from "../../proto/src/manifest/schema.ts";

// The broker's JSON as a client sees it on the wire (kbs.proto's JSON mapping).
type NonceResponse = { nonce: string; expiresAt: string };
type ReleaseResponse = { keyId: string; wrapped: { brokerPublicKey: string; ciphertext: string }; scope: DataScope; signature: string };
import { EmulatedPspProvider } from "../../proto/src/attestation/provider.ts";
import { encodePolicy } from "../../proto/src/attestation/report.ts";
import { verifyAuditLog } from "../../proto/src/audit/index.ts";
import { EmulatedPsp, servePspStream } from "../../host-tools/src/attestation/emulated-psp.ts";
import type { GuestLaunch } from "../../host-tools/src/attestation/emulated-psp.ts";
import { startKbs } from "../../host-tools/src/kbs/server.ts";
import type { KbsHandle } from "../../host-tools/src/kbs/server.ts";
import { KeyStore } from "../../host-tools/src/kbs/store.ts";
import type { KeyPolicy } from "../../host-tools/src/kbs/store.ts";

const pspState = path.join(tmpdir(), "airlock-test-emulated-psp"); // reused across runs: spares RSA-4096 generation
const tmp = mkdtempSync(path.join(tmpdir(), "airlock-kbs-"));
const masterKey = randomBytes(32);
const launch: GuestLaunch = { measurement: Buffer.alloc(48, 0x42), hostData: Buffer.alloc(32, 0x24), policy: encodePolicy({ smt: true }), reportId: randomBytes(32) };
const datasetKey = Buffer.from("AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ");
let psp: EmulatedPsp;
let kbs: KbsHandle;
let pspServer: net.Server;
const pspSock = path.join(tmp, "psp.sock");
const pspSessions: Promise<number>[] = [];

function policy(extra: Partial<KeyPolicy> = {}): KeyPolicy {
  return { measurements: [launch.measurement.toString("hex")], hostData: launch.hostData!.toString("hex"), trustRoots: [psp.arkPem], ...extra };
}

beforeAll(async () => {
  psp = EmulatedPsp.open(pspState);
  pspServer = net.createServer((c) => pspSessions.push(servePspStream(c, psp, launch, { idleTimeoutMs: 5_000 })));
  await new Promise<void>((r) => pspServer.listen(pspSock, r));
  kbs = await startKbs({ stateDir: path.join(tmp, "kbs"), masterKey, listen: { host: "127.0.0.1", port: 0 } });
  kbs.store.put("corpus", datasetKey, policy());
  kbs.store.put("other-measurement", datasetKey, policy({ measurements: ["ab".repeat(48)] }));
  kbs.store.put("other-host", datasetKey, policy({ hostData: "00".repeat(32) }));
  kbs.store.put("amd-only", datasetKey, { measurements: [launch.measurement.toString("hex")] });
  kbs.store.put("sealed", datasetKey, policy({ scope: "SEALED" }));
});
afterAll(async () => {
  await kbs?.close();
  await new Promise((r) => pspServer.close(r));
  await Promise.all(pspSessions);
  rmSync(tmp, { recursive: true, force: true });
});

const provider = (): EmulatedPspProvider =>
  new EmulatedPspProvider({
    connect: () =>
      new Promise((resolve, reject) => {
        const s = net.createConnection(pspSock, () => resolve(s));
        s.once("error", reject);
      }),
  });

async function post(pathname: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${kbs.endpoint}${pathname}`, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" }, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A release request made by hand: evidence from the PSP for (nonce, key pair), optionally altered. */
async function attempt(keyId: string, alter: { nonce?: string; reportData?: Buffer; launch?: Partial<GuestLaunch> } = {}) {
  const { nonce } = (await post("/v1/nonce", {})).body as unknown as NonceResponse;
  const pair = newX25519();
  const reportData = alter.reportData ?? reportDataFor(Buffer.from(nonce, "base64"), pair.publicRaw);
  const ev = psp.evidence({ ...launch, ...alter.launch }, { reportData, vmpl: 0 });
  const body = { nonce: alter.nonce ?? nonce, publicKey: pair.publicRaw.toString("base64"), report: ev.report.toString("base64"), vcek: ev.vcek.toString("base64"), chain: ev.chain };
  return { nonce, pair, body, res: await post(`/v1/keys/${keyId}/release`, body) };
}

describe("key broker", () => {
  it("releases the key to an attested VM through the client library, wrapped to its key", async () => {
    const { key, scope } = await requestKey({ endpoint: kbs.endpoint, keyId: "corpus", provider: provider(), brokerPublicKey: kbs.publicKey });
    expect(key.equals(datasetKey)).toBe(true);
    expect(scope).toBe("USER_PRIVATE"); // the policy names none
    const identity = (await (await fetch(`${kbs.endpoint}/v1/identity`)).json()) as { publicKey: string };
    expect(identity.publicKey).toBe(kbs.publicKey);
  });

  it("the client refuses a release not signed by the broker it expects", async () => {
    const other = generateKeyPairSync("ed25519").publicKey;
    await expect(requestKey({ endpoint: kbs.endpoint, keyId: "corpus", provider: provider(), brokerPublicKey: other })).rejects.toThrow(/not signed by the expected key broker/);
    // A key wrapped by someone else to the same requester key does not carry the broker's signature.
    const { nonce, pair, res } = await attempt("corpus");
    const release = res.body as unknown as ReleaseResponse;
    const forged = wrapKey(Buffer.from("attacker's key"), "corpus", Buffer.from(nonce, "base64"), pair.publicRaw);
    const brokerKey = createPublicKey({ key: Buffer.from(kbs.publicKey, "base64"), format: "der", type: "spki" });
    expect(verifyRelease(brokerKey, releaseTranscript("corpus", Buffer.from(nonce, "base64"), pair.publicRaw, release.wrapped, release.scope), release.signature)).toBe(true);
    expect(verifyRelease(brokerKey, releaseTranscript("corpus", Buffer.from(nonce, "base64"), pair.publicRaw, forged, release.scope), release.signature)).toBe(false);
  });

  it("signs the owner's scope into the release: it travels with the key, and a lowered scope fails the signature", async () => {
    const { key, scope } = await requestKey({ endpoint: kbs.endpoint, keyId: "sealed", provider: provider(), brokerPublicKey: kbs.publicKey });
    expect(key.equals(datasetKey)).toBe(true);
    expect(scope).toBe("SEALED");
    const { nonce, pair, res } = await attempt("sealed");
    const release = res.body as unknown as ReleaseResponse;
    expect(release.scope).toBe("SEALED");
    const brokerKey = createPublicKey({ key: Buffer.from(kbs.publicKey, "base64"), format: "der", type: "spki" });
    const t = (s: ReleaseResponse["scope"]): Buffer => releaseTranscript("sealed", Buffer.from(nonce, "base64"), pair.publicRaw, release.wrapped, s);
    expect(verifyRelease(brokerKey, t("SEALED"), release.signature)).toBe(true);
    expect(verifyRelease(brokerKey, t("PUBLIC"), release.signature)).toBe(false);

    // Someone on the path (the host relays the broker) rewrites the scope: the client refuses the release.
    const tamper = (rewrite: (body: Record<string, unknown>) => void) =>
      http.createServer((req, res2) => {
        void (async () => {
          const chunks: Buffer[] = [];
          for await (const c of req) chunks.push(c as Buffer);
          const upstream = await fetch(`${kbs.endpoint}${req.url}`, { method: req.method, body: Buffer.concat(chunks), headers: { "content-type": "application/json" } });
          const body = (await upstream.json()) as Record<string, unknown>;
          if (req.url?.endsWith("/release") && upstream.status === 200) rewrite(body);
          const out = JSON.stringify(body);
          res2.writeHead(upstream.status, { "content-type": "application/json", "content-length": Buffer.byteLength(out) });
          res2.end(out);
        })();
      });
    for (const [rewrite, expected] of [
      [(b: Record<string, unknown>) => void (b.scope = "PUBLIC"), /not signed by the expected key broker/],
      [(b: Record<string, unknown>) => void delete b.scope, /ReleaseResponse.scope must be a data scope/],
    ] as const) {
      const proxy = tamper(rewrite);
      await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
      try {
        const endpoint = `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
        await expect(requestKey({ endpoint, keyId: "sealed", provider: provider(), brokerPublicKey: kbs.publicKey })).rejects.toThrow(expected);
      } finally {
        proxy.closeAllConnections();
        await new Promise((r) => proxy.close(r));
      }
    }
  });

  it("the wrapped key opens only with the requester's private key", async () => {
    const { nonce, pair, res } = await attempt("corpus");
    expect(res.status).toBe(200);
    const wrapped = (res.body as unknown as ReleaseResponse).wrapped;
    expect(unwrapKey(wrapped, "corpus", Buffer.from(nonce, "base64"), pair).equals(datasetKey)).toBe(true);
    expect(() => unwrapKey(wrapped, "corpus", Buffer.from(nonce, "base64"), newX25519())).toThrow(/does not authenticate/);
    expect(JSON.stringify(res.body)).not.toContain(datasetKey.toString("base64").slice(0, 20));
  });

  it("refuses a replayed nonce", async () => {
    const first = await attempt("corpus");
    expect(first.res.status).toBe(200);
    const again = await post("/v1/keys/corpus/release", first.body);
    expect(again.status).toBe(403);
    expect(again.body.reason).toMatch(/nonce unknown, already used/);
  });

  it("refuses a report that binds another nonce or key (stale or relayed)", async () => {
    const r = await attempt("corpus", { reportData: Buffer.alloc(64, 9) });
    expect(r.res.status).toBe(403);
    expect(r.res.body.reason).toMatch(/report-data: report_data does not bind this nonce/);
  });

  it("refuses mismatched measurement and host_data, and an untrusted (test) root", async () => {
    expect((await attempt("other-measurement")).res.body.reason).toMatch(/^measurement:/);
    expect((await attempt("corpus", { launch: { measurement: Buffer.alloc(48, 1) } })).res.body.reason).toMatch(/^measurement:/);
    expect((await attempt("other-host")).res.body.reason).toMatch(/^host-data:/);
    expect((await attempt("amd-only")).res.body.reason).toMatch(/^root:/);
    expect((await attempt("corpus", { launch: { policy: encodePolicy({ debug: true }) } })).res.body.reason).toMatch(/^policy-debug:/);
    const missing = await attempt("no-such-key");
    expect(missing.res.status).toBe(404);
    await expect(requestKey({ endpoint: kbs.endpoint, keyId: "other-host", provider: provider(), brokerPublicKey: kbs.publicKey })).rejects.toThrow(/KEY_RELEASE|refused key "other-host".*host-data/);
  });

  it("refuses malformed requests without crashing", async () => {
    expect((await post("/v1/keys/corpus/release", { nonce: 1 })).status).toBe(400);
    expect((await post("/v1/keys/corpus/release", { nonce: "A".repeat(43) + "=", extra: 1 })).body.reason).toMatch(/release request: not a well-formed ReleaseRequest/);
    const { nonce } = (await post("/v1/nonce", {})).body as unknown as NonceResponse;
    const bad = await post("/v1/keys/corpus/release", { nonce, publicKey: "AAAA", report: "!!", vcek: "" });
    expect(bad.status).toBe(400);
    const res = await fetch(`${kbs.endpoint}/v1/keys/corpus/release`, { method: "POST", body: "x".repeat(100_000), signal: AbortSignal.timeout(10_000) }).catch((e: Error) => e);
    expect(res instanceof Error ? "reset" : res.status).toMatch(/reset|413/);
  });

  it("keeps keys encrypted at rest and records every decision without key material", async () => {
    const file = readFileSync(path.join(tmp, "kbs", "keys", "corpus.json"), "utf8");
    expect(file).not.toContain(datasetKey.toString("utf8").slice(0, 20));
    expect(file).not.toContain(datasetKey.toString("base64").slice(0, 20));
    expect(() => new KeyStore(path.join(tmp, "kbs"), randomBytes(32)).open("corpus")).toThrow(/wrong broker master key/);
    const log = readFileSync(kbs.auditPath, "utf8");
    expect(log).toContain("key.released");
    expect(log).toMatch(/"keyId":"sealed"[^\n]*"ownerScope":"SEALED"/);
    expect(log).toContain("key.refused");
    expect(log).toContain("nonce unknown");
    expect(log).not.toContain(datasetKey.toString("utf8").slice(0, 20));
    expect(readdirSync(path.join(tmp, "kbs", "audit")).length).toBe(1);
  });

  it("expires nonces and serves on a Unix socket", async () => {
    const sockPath = path.join(tmp, "kbs.sock");
    // A live broker's socket is not taken over; a stale one (its process was killed) is replaced.
    const live = net.createServer();
    await new Promise<void>((r) => live.listen(sockPath, r));
    await expect(startKbs({ stateDir: path.join(tmp, "kbs3"), masterKey, listen: { path: sockPath } })).rejects.toThrow(/EADDRINUSE/);
    await new Promise((r) => live.close(r));
    const killed = spawnSync(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(sockPath)}, () => process.kill(process.pid, "SIGKILL"))`], { timeout: 10_000 });
    expect(killed.signal).toBe("SIGKILL");
    expect(statSync(sockPath).isSocket()).toBe(true);
    const k2 = await startKbs({ stateDir: path.join(tmp, "kbs2"), masterKey, listen: { path: sockPath }, nonceTtlMs: 1 });
    try {
      expect(k2.endpoint).toBe(`unix:${sockPath}`);
      k2.store.put("corpus", datasetKey, policy());
      const slowProvider = { kind: "emulated" as const, getReport: async (rd: Buffer) => (await new Promise((r) => setTimeout(r, 20)), psp.evidence(launch, { reportData: rd, vmpl: 0 })) };
      await expect(requestKey({ endpoint: k2.endpoint, keyId: "corpus", provider: slowProvider, brokerPublicKey: k2.publicKey })).rejects.toThrow(/nonce expired/);
    } finally {
      await k2.close();
    }
    // The broker's audit log is signed and hash-chained; a closed run verifies end to end.
    const audit = verifyAuditLog(readFileSync(k2.auditPath, "utf8"));
    expect(audit.firstBad).toBeNull();
    expect(audit.valid).toBe(true);
    expect(audit.end).toBe("closed");
    expect(readFileSync(k2.auditPath, "utf8")).toMatch(/nonce expired/);
  });
});
