// The firewall's NIC with real QEMU under TCG: one boot of the real firewall image (its own init
// configures eth0), launched by the real launcher code (Vm, qemuArgs, the plan and QMP checks)
// with the room's restricted user netdev, where a probe program stands in for the enforcer (the
// test overlays /opt/airlock/firewall-vm.mjs; nothing else of the image changes). From inside the
// guest, the declared destinations reach the servers this test runs on the host's loopback, and
// nothing else answers: no other host port, no host SSH, no DNS, no internet address.
import { copyFileSync, createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { finished } from "node:stream/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../proto/src/log.ts";
import { nicDestinations } from "../../proto/src/firewall-nic.ts";
import { buildImage } from "../../host-tools/src/images/build.ts";
import { writeCpio } from "../../host-tools/src/images/cpio.ts";
import { checkGuest } from "../../host-tools/src/launch/prelaunch-checks.ts";
import { qemuArgs, type VmSpec } from "../../host-tools/src/launch/qemu-args.ts";
import { Vm } from "../../host-tools/src/launch/vm.ts";
import { killQemus, qemuPids } from "../helpers.ts";

const PAIR = "nic-probe";
/** The guest's probe result must be on the console within this bound (boot under TCG included). */
const PROBE_TIMEOUT_MS = 90_000;

interface Seen {
  requests: { method: string; url: string; host: string }[];
  otherConnections: number;
}
const seen: Seen = { requests: [], otherConnections: 0 };
let allowed: http.Server;
let other: net.Server;
let tmp: string;

beforeAll(async () => {
  tmp = mkdtempSync(path.join(tmpdir(), "airlock-nic-"));
  allowed = http.createServer((req, res) => {
    seen.requests.push({ method: req.method!, url: req.url!, host: req.headers.host ?? "" });
    res.writeHead(200, { "content-type": "text/plain" }).end(`hello ${req.url}\n`);
  });
  other = net.createServer((s) => {
    seen.otherConnections++;
    s.end("you should not be here\n");
  });
  await new Promise<void>((r) => allowed.listen(0, "127.0.0.1", r));
  await new Promise<void>((r) => other.listen(0, "127.0.0.1", r));
});

afterAll(async () => {
  killQemus(PAIR);
  allowed.closeAllConnections();
  await new Promise((r) => allowed.close(r));
  await new Promise((r) => other.close(r));
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Runs inside the guest as the firewall's program: each probe connects (bounded), sends, and records what happened. */
function probeProgram(targets: { name: string; host: string; port: number; send?: string }[]): string {
  return `import net from "node:net";
import dgram from "node:dgram";
import fs from "node:fs";
import { execFileSync } from "node:child_process";
const targets = ${JSON.stringify(targets)};
const tcp = (t) => new Promise((resolve) => {
  const s = net.connect({ host: t.host, port: t.port });
  let data = "";
  const done = (outcome) => { clearTimeout(timer); s.destroy(); resolve({ name: t.name, outcome, data }); };
  const timer = setTimeout(() => done(data ? "answered" : "timeout"), 4000);
  s.on("connect", () => { if (t.send) s.write(t.send); });
  s.on("data", (d) => { data += d.toString(); });
  s.on("end", () => done(data ? "answered" : "closed"));
  s.on("error", (e) => done(e.code || e.message));
});
// A DNS query for example.com (A) to slirp's resolver address, over UDP.
const dns = () => new Promise((resolve) => {
  const sock = dgram.createSocket("udp4");
  const q = Buffer.from("123401000001000000000000076578616d706c6503636f6d0000010001", "hex");
  const timer = setTimeout(() => { sock.close(); resolve({ name: "dns-udp", outcome: "no answer" }); }, 3000);
  sock.on("message", () => { clearTimeout(timer); sock.close(); resolve({ name: "dns-udp", outcome: "answered" }); });
  sock.on("error", (e) => { clearTimeout(timer); sock.close(); resolve({ name: "dns-udp", outcome: e.code }); });
  sock.send(q, 53, "10.0.2.3");
});
// The addresses configured on eth0, from ip(8): node's os.networkInterfaces() leaves out a link
// whose carrier is not up yet (libuv wants IFF_RUNNING), which under load it may not be.
const eth0 = execFileSync("/bin/ip", ["-f", "inet", "-o", "addr", "show", "dev", "eth0"]).toString().trim().split("\\n").filter(Boolean).map((l) => l.split(/\\s+/)[3]);
const routes = fs.readFileSync("/proc/net/route", "utf8").trim().split("\\n").slice(1).map((l) => l.split("\\t").slice(0, 3).join(" "));
const resolvConf = fs.existsSync("/etc/resolv.conf");
// As a firewall that tried to route around its rules would: a default route through slirp's gateway.
execFileSync("/bin/ip", ["route", "add", "default", "via", "10.0.2.2", "dev", "eth0"]);
const results = [];
for (const t of targets) results.push(await tcp(t));
results.push(await dns());
console.log("PROBE " + JSON.stringify({ results, eth0, routes, resolvConf }));
`;
}

/** The firewall image with its program replaced by the probe: the image's initrd plus an overlay archive. */
async function probeImage(imageDir: string, program: string): Promise<string> {
  const dir = path.join(tmp, "image");
  mkdirSync(dir);
  symlinkSync(path.join(imageDir, "vmlinuz"), path.join(dir, "vmlinuz"));
  const initrd = path.join(dir, "initrd.img");
  copyFileSync(path.join(imageDir, "initrd.img"), initrd);
  const out = createWriteStream(initrd, { flags: "a" });
  await writeCpio(out, [
    { path: "opt", type: "dir" },
    { path: "opt/airlock", type: "dir" },
    { path: "opt/airlock/firewall-vm.mjs", type: "file", data: Buffer.from(program) },
  ]);
  out.end();
  await finished(out);
  return dir;
}

describe("the firewall's NIC", () => {
  it("reaches exactly the room's destinations through QEMU's restricted user networking, and nothing else", async () => {
    const port = (allowed.address() as AddressInfo).port;
    const otherPort = (other.address() as AddressInfo).port;
    // egress[0] at 10.0.2.100 (an IPv4 destination), the governance endpoint at the next address (a DNS name).
    const nic = nicDestinations({ egress: [{ url: `http://127.0.0.1:${port}/api/` }], governance: { consent: `http://localhost:${port}/consent` } });
    expect(nic.map((d) => `${d.what} ${d.address}:${d.port} -> ${d.host}`)).toEqual([`egress[0] 10.0.2.100:${port} -> 127.0.0.1`, `governance.consent 10.0.2.101:${port} -> localhost`]);

    const get = (p: string): string => `GET ${p} HTTP/1.0\r\nHost: probe\r\n\r\n`;
    const targets = [
      { name: "egress", host: "10.0.2.100", port, send: get("/api/from-the-firewall") },
      { name: "consent", host: "10.0.2.101", port, send: get("/consent") },
      { name: "egress address, undeclared port", host: "10.0.2.100", port: otherPort, send: get("/x") },
      { name: "next address, undeclared", host: "10.0.2.102", port, send: get("/x") },
      { name: "host loopback, undeclared port", host: "10.0.2.2", port: otherPort, send: "hello\n" },
      { name: "host loopback, declared port", host: "10.0.2.2", port, send: get("/x") },
      { name: "host ssh", host: "10.0.2.2", port: 22 },
      { name: "dns-tcp", host: "10.0.2.3", port: 53 },
      { name: "internet", host: "192.0.2.1", port: 80, send: get("/x") },
      { name: "guest's own loopback", host: "127.0.0.1", port },
    ];
    const firewall = await buildImage("firewall");
    const spec: VmSpec = {
      pair: PAIR,
      role: "firewall",
      imageDir: await probeImage(firewall.dir, probeProgram(targets)),
      cmdline: firewall.info.cmdline,
      memoryMiB: 1024,
      vcpus: 1,
      accel: "tcg",
      qmpSocket: path.join(tmp, "firewall.qmp"),
      console: "stdio",
      nic,
    };
    const netdev = qemuArgs(spec)[qemuArgs(spec).indexOf("-netdev") + 1];
    expect(netdev).toBe(
      `user,id=net0,restrict=on,ipv6=off,net=10.0.2.0/24,guestfwd=tcp:10.0.2.100:${port}-cmd:/usr/bin/socat -lf /dev/null - TCP:127.0.0.1:${port},,connect-timeout=10,guestfwd=tcp:10.0.2.101:${port}-cmd:/usr/bin/socat -lf /dev/null - TCP:localhost:${port},,connect-timeout=10`,
    );

    const vm = new Vm(spec, silentLogger, path.join(tmp, "console.log"));
    const lines: string[] = [];
    vm.on("line", (l) => lines.push(l));
    try {
      await vm.start();
      // What QEMU really gave the paused guest: one virtio-net NIC on one restricted user netdev.
      const inv = await checkGuest(spec, vm.qmp!);
      expect(inv.network).toMatch(/type=nic,model=virtio-net-pci/);
      expect(inv.network).toMatch(/type=user,net=10\.0\.2\.0,restrict=on/);
      const t0 = Date.now();
      await vm.resume();
      const deadline = Date.now() + PROBE_TIMEOUT_MS;
      while (!lines.some((l) => l.startsWith("PROBE ")) && vm.alive && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const probe = lines.find((l) => l.startsWith("PROBE "));
      expect(probe, `no probe result within ${PROBE_TIMEOUT_MS} ms; console:\n${readFileSync(path.join(tmp, "console.log"), "utf8").slice(-3000)}`).toBeDefined();
      console.log(`firewall probe boot to result: ${Date.now() - t0} ms`);
      const result = JSON.parse(probe!.slice(6)) as { results: { name: string; outcome: string; data?: string }[]; eth0: string[]; routes: string[]; resolvConf: boolean };
      console.log(result.results.map((r) => `${r.name}: ${r.outcome}`).join("\n"));
      const by = Object.fromEntries(result.results.map((r) => [r.name, r]));

      expect(lines).toContain("airlock-guest: NIC eth0 10.0.2.15/24");
      expect(result.eth0).toEqual(["10.0.2.15/24"]);
      // One route, the link's own 10.0.2.0/24 (little-endian hex in /proc/net/route); no default route, no resolver.
      expect(result.routes).toEqual(["eth0 0002000A 00000000"]);
      expect(result.resolvConf).toBe(false);

      expect(by.egress).toMatchObject({ outcome: "answered" });
      expect(by.egress!.data).toMatch(/^HTTP\/1\.1 200 OK[\s\S]*hello \/api\/from-the-firewall\n$/);
      expect(by.consent!.data).toMatch(/hello \/consent\n$/);
      // restrict=on: everything else is refused by slirp itself (a reset), never forwarded, even
      // with a default route through 10.0.2.2; an address slirp does not serve does not even answer ARP.
      for (const name of ["egress address, undeclared port", "host loopback, undeclared port", "host loopback, declared port", "host ssh", "dns-tcp", "internet", "guest's own loopback"]) {
        expect(by[name], name).toMatchObject({ outcome: "ECONNREFUSED", data: "" });
      }
      expect(by["next address, undeclared"]).toMatchObject({ outcome: "EHOSTUNREACH", data: "" });
      expect(by["dns-udp"]).toMatchObject({ outcome: "no answer" });

      // The host side saw exactly the two declared requests and nothing on the undeclared port.
      expect(seen.requests.map((r) => r.url)).toEqual(["/api/from-the-firewall", "/consent"]);
      expect(seen.otherConnections).toBe(0);

      // The firewall's init powers the guest off once its program ends.
      const deadlineExit = Date.now() + 20_000;
      while (vm.alive && Date.now() < deadlineExit) await new Promise((r) => setTimeout(r, 100));
      expect(vm.endedHow).toBe("exited normally");
    } finally {
      await vm.stop();
    }
    expect(qemuPids(PAIR)).toEqual([]);
  });
});
