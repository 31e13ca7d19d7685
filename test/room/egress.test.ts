// Issue 10 end to end with real QEMU guests: test/rooms/egress, a workload that calls out with
// unmodified busybox clients through the agent's loopback proxy, the attested channel, and the
// firewall's HTTP proxy and NIC, to real servers on the host's loopback (HTTPS with a test CA made
// by openssl, and plain HTTP). What the manifest allows reaches the servers; every other attempt
// — another host, a path or method, a header, smuggled framing, CONNECT, a body over its limit, a
// JSON field outside the schema, a deny pattern, open egress after a USER_PRIVATE answer, an
// endpoint with another certificate, DNS, the firewall's NIC address — is refused with a reason,
// recorded in the trail, and never reaches a server.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { killQemus, repoRoot } from "../helpers.ts";
import { makePki, startServer, type TestServer } from "../egress/server.ts";
import { ageKeygen, auditRecords, copyRoom, openSealed, removeRoom, runRoom } from "./room-setup.ts";

const room = copyRoom(path.join(repoRoot, "test/rooms/egress"));
let api: TestServer;
let stats: TestServer;
let other: TestServer;

beforeAll(async () => {
  const certs = path.join(room.dir, "room/certs");
  mkdirSync(certs, { recursive: true });
  mkdirSync(path.join(room.dir, "room/keys"), { recursive: true });
  const pki = makePki(certs, "api.example.test");
  const impostor = makePki(certs, "other.example.test", "impostor");
  writeFileSync(path.join(certs, "ca.pem"), pki.caPem);
  api = await startServer(pki);
  other = await startServer(impostor);
  stats = await startServer();
  writeFileSync(path.join(room.dir, "room/keys/investigator.pub"), `${ageKeygen(path.join(room.keys, "investigator.key"))}\n`);
  const template = readFileSync(path.join(room.dir, "room/room.yaml.in"), "utf8");
  writeFileSync(room.manifest, template.replaceAll("@API_PORT@", String(api.port)).replaceAll("@STATS_PORT@", String(stats.port)).replaceAll("@OTHER_PORT@", String(other.port)));
});

afterAll(async () => {
  killQemus("egress");
  await Promise.all([api?.close(), stats?.close(), other?.close()]);
  removeRoom(room);
});

describe("test/rooms/egress", () => {
  it("lets out exactly what the manifest allows, refuses the rest with a reason, and records each decision", async () => {
    const out = path.join(room.dir, "out");
    // The host resolves the endpoints' names (here all to its loopback), as curl --resolve would.
    const resolve = "api.example.test=127.0.0.1,stats.example.test=127.0.0.1,other.example.test=127.0.0.1";
    const t0 = Date.now();
    const r = await runRoom(room, out, [], { AIRLOCK_EGRESS_RESOLVE: resolve });
    const seconds = (Date.now() - t0) / 1000;
    const files = openSealed(path.join(out, "report.tar.age"), path.join(room.keys, "investigator.key"));
    const report = Object.fromEntries(
      files
        .get("report.txt")!
        .toString()
        .trim()
        .split("\n")
        .map((l) => [l.split(" ")[0]!, l.slice(l.indexOf(" ") + 1)]),
    );
    const all = JSON.stringify(report, null, 1);
    expect(r.code, `${r.stderr}\n${all}`).toBe(0);
    expect(report.env, all).toBe("http_proxy=http://127.0.0.1:3128");
    expect(report.done).toBe("done");
    const ok = (k: string) => expect(report[k], `${k} in ${all}`).toMatch(/^rc=0/);
    const refused = (k: string, status: number) => expect(report[k], `${k} in ${all}`).toMatch(new RegExp(`HTTP/1.1 ${status}`));
    ok("open-ok");
    refused("open-schema", 403);
    refused("open-deny", 403);
    refused("other-host", 403);
    refused("bad-path", 403);
    refused("too-big", 413);
    refused("impostor", 502);
    refused("method", 405);
    refused("smuggle", 400);
    refused("header", 403);
    refused("connect", 405);
    for (const k of ["dns", "direct-dns", "nic-address", "gateway"]) expect(report[k], k).toMatch(/^rc=[1-9]/);
    ok("trusted-get");
    ok("trusted-direct");
    refused("open-after", 403);
    expect(JSON.parse(files.get("answer.json")!.toString())).toMatchObject({ method: "GET", url: "/v1/echo" });

    // Only what the rules allowed reached a server.
    const egressed = (s: TestServer) => s.received.filter((q) => !q.url.startsWith("/gov/"));
    expect(egressed(stats).map((q) => [q.method, q.url, q.body.toString()])).toEqual([["POST", "/in/count", '{"count":3}']]);
    expect(api.received.map((q) => [q.method, q.url])).toEqual([
      ["GET", "/v1/echo"],
      ["GET", "/v1/direct"],
    ]);
    expect(other.received).toEqual([]);
    expect(JSON.stringify([...stats.received, ...api.received].map((q) => q.headers))).not.toContain("EGRESS-LEAK");

    // Every decision is a receipt in the signed trail; the trail verifies.
    const receipts = auditRecords(path.join(out, "audit.log")).filter((x) => x.kind === "egress.request");
    expect(receipts.filter((x) => x.data.decision === "allow").map((x) => x.data.endpoint)).toEqual(["stats", "api", "api"]);
    // At PUBLIC: open-schema, open-deny, other-host, bad-path, too-big, impostor, method, smuggle, header, connect.
    expect(receipts.filter((x) => x.data.decision === "refuse").length).toBe(10);
    // Above DOMAIN_OWNED (after the trusted answer) a receipt holds no guest-chosen path or size,
    // and a refusal is not a receipt at all but a capped counter, written after the run.
    const above = receipts.filter((x) => x.data.scopeBefore === "USER_PRIVATE");
    expect(above.map((x) => x.data.decision)).toEqual(["allow"]);
    expect(above[0]!.data).not.toHaveProperty("path");
    expect(auditRecords(path.join(out, "audit.log")).filter((x) => x.kind === "violation").map((x) => x.data)).toContainEqual({ what: "egress requests refused while the sandbox was above DOMAIN_OWNED", count: 1, cap: 3 });
    // Governance got the closed trail (the very bytes the host got) and the metrics, padded to 1 KiB.
    const gov = Object.fromEntries(stats.received.filter((q) => q.url.startsWith("/gov/")).map((q) => [q.url, q.body]));
    expect(gov["/gov/audit"]!.equals(readFileSync(path.join(out, "audit.log")))).toBe(true);
    expect(gov["/gov/telemetry"]!.length).toBe(1024);
    expect(JSON.parse(gov["/gov/telemetry"]!.toString())).toMatchObject({ room: "egress", completed: true, egressEndpoints: 3, stepsMs: expect.objectContaining({ session: expect.any(Number) }) });
    const summary = JSON.parse(readFileSync(path.join(out, "summary.json"), "utf8")) as Record<string, unknown>;
    expect(summary).toMatchObject({ completed: true });
    console.log(`egress room end to end under TCG: ${seconds.toFixed(1)} s`);
  }, 300_000);
});
