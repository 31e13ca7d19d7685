// `airlock vsock-fabric` as a user (or the tester) runs it: its own process, the
// vhost-device-vsock option syntax (--vm, --config and the single-VM form), three socat guests;
// within a group data flows, across groups connections are refused, guest -> host reaches only
// the host ports each VM was given; SIGTERM stops it cleanly.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildTestGuest, TestGuest } from "./guest.ts";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
let dir: string;
let cli: ChildProcess;
let cliOut = "";
let cliExit: Promise<number | null>;
const guests: TestGuest[] = [];

beforeAll(async () => {
  const image = buildTestGuest();
  dir = mkdtempSync(path.join(os.tmpdir(), "airlock-fabric-cli-"));
  // cid 3 by --vm (host port 5000), cid 4 from a YAML --config (no host ports), cid 5 in the
  // single-VM form (host port 5001).
  const config = `${dir}/fabric.yaml`;
  writeFileSync(config, `vms:\n  - guest_cid: 4\n    socket: ${dir}/4.vhost\n    uds_path: ${dir}/4.vsock\n    groups: room+x\n    host_ports: []\n`);
  const single = ["--guest-cid", "5", "--socket", `${dir}/5.vhost`, "--uds-path", `${dir}/5.vsock`, "--groups", "elsewhere", "--host-ports", "5001"];
  const vm3 = ["--vm", `guest-cid=3,socket=${dir}/3.vhost,uds-path=${dir}/3.vsock,groups=room,host-ports=5000`];
  cli = spawn(process.execPath, ["--import", "tsx", "host-tools/src/main.ts", "vsock-fabric", ...vm3, "--config", config, ...single], {
    cwd: repo,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, AIRLOCK_LOG: "warn" },
  });
  cli.stdout!.on("data", (d) => (cliOut += d));
  cli.stderr!.on("data", (d) => (cliOut += d));
  cliExit = new Promise((r) => cli.on("exit", (code) => r(code)));
  const deadline = Date.now() + 60_000;
  while (!/cid 5 on/.test(cliOut)) {
    if (Date.now() > deadline || cli.exitCode !== null) throw new Error(`vsock-fabric did not start:\n${cliOut}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const cid of [3, 4, 5]) guests.push(new TestGuest(image, `${dir}/${cid}.vhost`, 128));
  await Promise.all(guests.map((g) => g.booted()));
}, 240_000);

afterAll(async () => {
  await Promise.all(guests.map((g) => g.kill()));
  if (cli && cli.exitCode === null) {
    cli.kill("SIGKILL");
    await cliExit;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("airlock vsock-fabric", () => {
  it("carries data between guests that share a group", async () => {
    const [a, b] = guests as [TestGuest, TestGuest];
    await a.run("dd if=/dev/urandom of=/tmp/blob bs=1M count=8 2>/dev/null");
    const sent = /([0-9a-f]{64})/.exec((await a.run("sha256sum /tmp/blob")).out)![1];
    b.start("socat -u VSOCK-LISTEN:1234 STDOUT | sha256sum; echo CLI_RECV_DONE");
    await new Promise((r) => setTimeout(r, 500));
    const r = await a.run("socat -u OPEN:/tmp/blob,rdonly VSOCK-CONNECT:4:1234", 120_000);
    expect(r.status).toBe(0);
    const m = await b.waitFor(/([0-9a-f]{64}) {2}-\s+CLI_RECV_DONE/, 60_000);
    expect(m[1]).toBe(sent);
  });

  it("refuses connections across groups in both directions", async () => {
    const [a, , c] = guests as [TestGuest, TestGuest, TestGuest];
    c.start("socat -u VSOCK-LISTEN:1234 STDOUT > /tmp/got");
    a.start("socat -u VSOCK-LISTEN:1236 STDOUT > /tmp/got");
    await new Promise((r) => setTimeout(r, 500));
    const ac = await a.run("echo hi | socat -u STDIN VSOCK-CONNECT:5:1234");
    expect(ac.status).not.toBe(0);
    expect(ac.out).toMatch(/Connection reset by peer/);
    const ca = await c.run("echo hi | socat -u STDIN VSOCK-CONNECT:3:1236");
    expect(ca.status).not.toBe(0);
    expect(ca.out).toMatch(/Connection reset by peer/);
    expect((await c.run("wc -c < /tmp/got")).out).toMatch(/^0\s*$/m);
    expect((await a.run("wc -c < /tmp/got")).out).toMatch(/^0\s*$/m);
  });

  it("lets each guest reach only the host ports it was given", async () => {
    expect(cliOut).toMatch(/cid 3 on .*host ports 5000\)/);
    expect(cliOut).toMatch(/cid 4 on .*host ports none\)/);
    expect(cliOut).toMatch(/cid 5 on .*host ports 5001\)/);
    const [a, b, c] = guests as [TestGuest, TestGuest, TestGuest];
    // A listener on every (VM, port) tried; each records what reached it.
    const got = new Map<string, string>();
    const servers = await Promise.all(
      ["3.vsock_5000", "3.vsock_5001", "4.vsock_5000", "5.vsock_5000", "5.vsock_5001"].map((name) => {
        const srv = net.createServer((s) => s.on("data", (d) => got.set(name, (got.get(name) ?? "") + d.toString())));
        return new Promise<net.Server>((r) => srv.listen(`${dir}/${name}`, () => r(srv)));
      }),
    );
    try {
      const ok3 = await a.run("echo from3 | socat -u STDIN VSOCK-CONNECT:2:5000");
      expect(ok3.status).toBe(0);
      const ok5 = await c.run("echo from5 | socat -u STDIN VSOCK-CONNECT:2:5001");
      expect(ok5.status).toBe(0);
      for (const [g, port] of [
        [a, 5001],
        [b, 5000],
        [c, 5000],
      ] as const) {
        const r = await g.run(`echo denied | socat -u STDIN VSOCK-CONNECT:2:${port}`);
        expect(r.status).not.toBe(0);
        expect(r.out).toMatch(/Connection reset by peer/);
      }
      const deadline = Date.now() + 10_000;
      while (got.size < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(Object.fromEntries(got)).toEqual({ "3.vsock_5000": "from3\n", "5.vsock_5001": "from5\n" });
    } finally {
      for (const srv of servers) srv.close();
    }
  });

  it("stops on SIGTERM and removes its vhost-user sockets", async () => {
    cli.kill("SIGTERM");
    const code = await Promise.race([cliExit, new Promise((r) => setTimeout(() => r("timeout"), 15_000))]);
    expect(code).toBe(0);
    expect(existsSync(`${dir}/3.vhost`)).toBe(false);
  });
});
