// The fabric with real QEMU 7.2 guests (TCG) and a third-party vsock client (socat) inside them:
// data within a group, refusal across groups, guest -> host `<uds-path>_P` for allow-listed ports
// only, host -> guest CONNECT.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric } from "../../host-tools/src/fabric/index.ts";
import { buildTestGuest, TestGuest } from "./guest.ts";

const MiB = 1024 * 1024;
const BULK_MIB = Number(process.env.AIRLOCK_FABRIC_BULK_MIB ?? 64);

let dir: string;
let fabric: Fabric;
let a: TestGuest; // cid 3, group "pair", host ports 5000 and 5001
let b: TestGuest; // cid 4, group "pair", no host ports
let c: TestGuest; // cid 5, group "other"
const errors: string[] = [];

const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  const image = buildTestGuest();
  dir = mkdtempSync(path.join(os.tmpdir(), "airlock-fabric-"));
  fabric = startFabric({
    vms: [
      { cid: 3, socket: `${dir}/a.vhost`, udsPath: `${dir}/a.vsock`, groups: ["pair"], hostPorts: [5000, 5001] },
      { cid: 4, socket: `${dir}/b.vhost`, udsPath: `${dir}/b.vsock`, groups: ["pair"] },
      { cid: 5, socket: `${dir}/c.vhost`, udsPath: `${dir}/c.vsock`, groups: ["other"] },
    ],
  });
  fabric.on("error", (e) => errors.push(e.message));
  await fabric.ready;
  a = new TestGuest(image, `${dir}/a.vhost`, 256);
  b = new TestGuest(image, `${dir}/b.vhost`, 256);
  c = new TestGuest(image, `${dir}/c.vhost`, 128);
  await Promise.all([a.booted(), b.booted(), c.booted()]);
}, 240_000);

afterAll(async () => {
  await Promise.all([a?.kill(), b?.kill(), c?.kill()]);
  await fabric?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function guestSha(g: TestGuest, file: string): Promise<string> {
  return firstHash(await g.run(`sha256sum ${file}`));
}

/** The hash a guest printed (sha256sum's output) or saved in a file. */
function firstHash(r: { out: string }): string {
  const m = /([0-9a-f]{64})/.exec(r.out);
  if (!m) throw new Error(`no hash in ${JSON.stringify(r.out)}`);
  return m[1]!;
}

describe("vsock fabric with QEMU guests", () => {
  it(`moves ${BULK_MIB} MiB each way between two guests of a group, intact`, async () => {
    await Promise.all([
      a.run(`dd if=/dev/urandom of=/tmp/out bs=1M count=${BULK_MIB} 2>/dev/null`, 120_000),
      b.run(`dd if=/dev/urandom of=/tmp/out bs=1M count=${BULK_MIB} 2>/dev/null`, 120_000),
    ]);
    const [shaA, shaB] = [await guestSha(a, "/tmp/out"), await guestSha(b, "/tmp/out")];
    b.start("socat -u VSOCK-LISTEN:1234 STDOUT | sha256sum > /tmp/in; echo RECV_DONE_B");
    a.start("socat -u VSOCK-LISTEN:1235 STDOUT | sha256sum > /tmp/in; echo RECV_DONE_A");
    await sleep(1000);
    const t0 = Date.now();
    a.start("socat -u OPEN:/tmp/out,rdonly VSOCK-CONNECT:4:1234");
    b.start("socat -u OPEN:/tmp/out,rdonly VSOCK-CONNECT:3:1235");
    try {
      await Promise.all([b.waitFor(/RECV_DONE_B/, 240_000), a.waitFor(/RECV_DONE_A/, 240_000)]);
    } catch (err) {
      // Say where it stood: a stall (nothing moving) reads differently from a slow host.
      throw new Error(`${(err as Error).message}\nfabric: ${JSON.stringify(fabric.stats())}`);
    }
    const secs = (Date.now() - t0) / 1000;
    console.log(`guest<->guest under TCG: ${BULK_MIB} MiB each way in ${secs.toFixed(1)} s (${((2 * BULK_MIB) / secs).toFixed(1)} MiB/s total)`);
    expect(firstHash(await b.run("cat /tmp/in"))).toBe(shaA);
    expect(firstHash(await a.run("cat /tmp/in"))).toBe(shaB);
    await Promise.all([a.run("rm -f /tmp/out /tmp/in"), b.run("rm -f /tmp/out /tmp/in")]);
  });

  it("refuses a guest in another group, an unknown CID and a port nobody listens on", async () => {
    c.start("socat -u VSOCK-LISTEN:1234 STDOUT > /tmp/got; echo C_GOT");
    await sleep(500);
    const cross = await a.run("echo secret | socat -u STDIN VSOCK-CONNECT:5:1234");
    expect(cross.status).not.toBe(0);
    expect(cross.out).toMatch(/Connection reset by peer/);
    const reverse = await c.run("echo secret | socat -u STDIN VSOCK-CONNECT:3:1234");
    expect(reverse.status).not.toBe(0);
    const unknown = await a.run("echo x | socat -u STDIN VSOCK-CONNECT:77:1234");
    expect(unknown.status).not.toBe(0);
    const closed = await a.run("echo x | socat -u STDIN VSOCK-CONNECT:4:4444");
    expect(closed.status).not.toBe(0);
    const got = await c.run("wc -c < /tmp/got");
    expect(got.out.trim()).toMatch(/^0$/m);
    expect(c.output).not.toMatch(/C_GOT/);
  });

  it("connects a guest to a host listener at <uds-path>_<port> for allow-listed ports only", async () => {
    const received: Buffer[] = [];
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on("data", (d) => received.push(d));
      s.on("end", () => s.end(`sha ${sha256(Buffer.concat(received))}\n`));
    });
    await new Promise<void>((r) => server.listen(`${dir}/a.vsock_5000`, r));
    // Listeners on ports the guests may not use: never reached.
    let strays = 0;
    const others = [`${dir}/a.vsock_5002`, `${dir}/b.vsock_5000`].map((p) => {
      const srv = net.createServer((s) => (strays++, s.destroy()));
      return new Promise<net.Server>((r) => srv.listen(p, () => r(srv)));
    });
    const otherServers = await Promise.all(others);
    const deniedBefore = fabric.stats().map((s) => s.deniedHostPorts);
    try {
      await a.run("head -c 3000000 /dev/urandom > /tmp/h");
      const sent = await guestSha(a, "/tmp/h");
      const r = await a.run("socat -t 30 OPEN:/tmp/h,rdonly!!STDOUT VSOCK-CONNECT:2:5000", 120_000);
      expect(r.status).toBe(0);
      expect(r.out).toContain(`sha ${sent}`);
      // Allowed, but no listener on that port: refused.
      const none = await a.run("echo x | socat -u STDIN VSOCK-CONNECT:2:5001");
      expect(none.status).not.toBe(0);
      // A listener exists, but the port is not on the guest's allow-list: reset.
      const denied = await a.run("echo x | socat -u STDIN VSOCK-CONNECT:2:5002");
      expect(denied.status).not.toBe(0);
      expect(denied.out).toMatch(/Connection reset by peer/);
      const deniedB = await b.run("echo x | socat -u STDIN VSOCK-CONNECT:2:5000");
      expect(deniedB.status).not.toBe(0);
      expect(deniedB.out).toMatch(/Connection reset by peer/);
      expect(strays).toBe(0);
      expect(fabric.stats().map((s, i) => s.deniedHostPorts - deniedBefore[i]!)).toEqual([1, 1, 0]);
    } finally {
      server.close();
      for (const srv of otherServers) srv.close();
    }
  });

  it("connects a host program to a guest port with CONNECT <port>", async () => {
    b.start("socat VSOCK-LISTEN:6000 SYSTEM:sha256sum");
    await sleep(500);
    const data = randomBytes(4 * MiB);
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ path: `${dir}/b.vsock`, allowHalfOpen: true });
      let got = "";
      s.setTimeout(120_000, () => s.destroy(new Error("timed out")));
      s.on("error", reject);
      s.on("connect", () => s.write("CONNECT 6000\n"));
      s.on("data", (d) => {
        const before = got;
        got += d.toString("latin1");
        if (!before.includes("\n") && got.includes("\n")) {
          expect(got).toMatch(/^OK \d+\n/);
          s.end(data);
        }
      });
      s.on("end", () => resolve(got));
    });
    expect(reply).toMatch(new RegExp(`^OK \\d+\\n${sha256(data)}  -`));
    // A port nothing listens on: the fabric closes the connection without OK.
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect({ path: `${dir}/b.vsock` });
      let got = "";
      s.on("connect", () => s.write("CONNECT 6001\n"));
      s.on("data", (d) => (got += d.toString()));
      s.on("close", () => resolve(got));
      s.on("error", () => undefined);
    });
    expect(refused).toBe("");
  });

  it("measures connection set-up latency host -> guest (CONNECT to OK) under TCG", async () => {
    b.start("socat VSOCK-LISTEN:7000,fork,reuseaddr OPEN:/dev/null");
    await sleep(500);
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = process.hrtime.bigint();
      await new Promise<void>((resolve, reject) => {
        const s = net.connect({ path: `${dir}/b.vsock` });
        let got = "";
        s.setTimeout(10_000, () => s.destroy(new Error("timed out")));
        s.on("error", reject);
        s.on("connect", () => s.write("CONNECT 7000\n"));
        s.on("data", (d) => {
          got += d.toString();
          if (got.includes("\n")) {
            times.push(Number(process.hrtime.bigint() - t0) / 1e6);
            expect(got).toMatch(/^OK \d+\n/);
            s.end();
            s.on("close", () => resolve());
          }
        });
      });
    }
    times.sort((x, y) => x - y);
    console.log(`host->guest connection set-up under TCG: median ${times[10]!.toFixed(2)} ms, max ${times[19]!.toFixed(2)} ms (20 connections)`);
    expect(times).toHaveLength(20);
  });

  it("leaves no connection behind and raised no VM fault", async () => {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && [3, 4, 5].some((cid) => fabric.router.connectionCount(cid) > 0)) await sleep(200);
    // socat listening on C is still waiting (its connection attempt was refused); nothing else.
    expect([3, 4, 5].map((cid) => fabric.router.connectionCount(cid))).toEqual([0, 0, 0]);
    expect(errors).toEqual([]);
  });

  it("tells the launcher when a guest's QEMU goes away (vm-disconnected), and RSTs its peers", async () => {
    const gone = new Promise<{ cid: number; reason: Error | null }>((resolve) => fabric.on("vm-disconnected", resolve));
    b.start("socat -u VSOCK-LISTEN:1300 STDOUT; echo B_SAW_RESET");
    await sleep(500);
    a.start("sleep 60 | socat -u STDIN VSOCK-CONNECT:4:1300");
    const deadline = Date.now() + 20_000;
    while (fabric.router.connectionCount(4) === 0 && Date.now() < deadline) await sleep(100);
    expect(fabric.router.connectionCount(4)).toBe(1);
    await a.kill();
    const ev = await Promise.race([gone, sleep(20_000).then(() => null)]);
    expect(ev).toEqual({ cid: 3, reason: null });
    await b.waitFor(/B_SAW_RESET/, 20_000);
    expect(fabric.router.connectionCount(4)).toBe(0);
  });
});

// VIRTIO_F_ACCESS_PLATFORM: what an SNP guest's Linux demands of a virtio device. A plain TCG
// guest whose device has iommu_platform=on negotiates it the same way (there is no vIOMMU, so
// addresses stay guest-physical and QEMU leaves bit 33 out of what it passes the backend).
describe("vsock fabric with a guest that negotiates VIRTIO_F_ACCESS_PLATFORM", () => {
  let dir2: string;
  let fabric2: Fabric;
  let d: TestGuest;
  const errors2: string[] = [];

  beforeAll(async () => {
    const image = buildTestGuest();
    dir2 = mkdtempSync(path.join(os.tmpdir(), "airlock-fabric-ap-"));
    fabric2 = startFabric({ vms: [{ cid: 6, socket: `${dir2}/d.vhost`, udsPath: `${dir2}/d.vsock`, groups: ["solo"], hostPorts: [5000] }] });
    fabric2.on("error", (e) => errors2.push(e.message));
    await fabric2.ready;
    d = new TestGuest(image, `${dir2}/d.vhost`, 128, { iommuPlatform: true });
    await d.booted();
  }, 240_000);

  afterAll(async () => {
    await d?.kill();
    await fabric2?.stop();
    if (dir2) rmSync(dir2, { recursive: true, force: true });
  });

  it("negotiates bit 33 in the guest and still moves data both ways", async () => {
    // The guest driver's view: /sys/bus/virtio/devices/*/features is a string of bits, bit 0 first.
    const r = await d.run('for v in /sys/bus/virtio/devices/*; do [ "$(cat $v/device)" = 0x0013 ] && echo "FEATURES=$(cat $v/features)"; done');
    const bits = /FEATURES=([01]{64})/.exec(r.out)?.[1];
    expect(bits, r.out).toBeDefined();
    expect(bits![33]).toBe("1"); // VIRTIO_F_ACCESS_PLATFORM
    expect(bits![32]).toBe("1"); // VIRTIO_F_VERSION_1
    const st = fabric2.stats()[0]!;
    console.log(`ACCESS_PLATFORM guest: driver features ${bits}, fabric saw SET_FEATURES ${st.negotiatedFeatures}`);
    expect(st.accessPlatformOffered).toBe(true);
    expect(st.negotiatedFeatures).not.toBeNull();
    expect(BigInt(st.negotiatedFeatures!) & (1n << 32n)).toBe(1n << 32n);

    // guest -> host
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      const got: Buffer[] = [];
      s.on("data", (x) => got.push(x));
      s.on("end", () => s.end(`sha ${sha256(Buffer.concat(got))}\n`));
    });
    await new Promise<void>((res) => server.listen(`${dir2}/d.vsock_5000`, res));
    try {
      await d.run("head -c 1000000 /dev/urandom > /tmp/h");
      const sent = await guestSha(d, "/tmp/h");
      const out = await d.run("socat -t 30 OPEN:/tmp/h,rdonly!!STDOUT VSOCK-CONNECT:2:5000", 120_000);
      expect(out.status).toBe(0);
      expect(out.out).toContain(`sha ${sent}`);
    } finally {
      server.close();
    }

    // host -> guest
    d.start("socat VSOCK-LISTEN:6000 SYSTEM:sha256sum");
    await sleep(500);
    const data = randomBytes(MiB);
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ path: `${dir2}/d.vsock`, allowHalfOpen: true });
      let got = "";
      s.setTimeout(120_000, () => s.destroy(new Error("timed out")));
      s.on("error", reject);
      s.on("connect", () => s.write("CONNECT 6000\n"));
      s.on("data", (x) => {
        const before = got;
        got += x.toString("latin1");
        if (!before.includes("\n") && got.includes("\n")) s.end(data);
      });
      s.on("end", () => resolve(got));
    });
    expect(reply).toMatch(new RegExp(`^OK \\d+\\n${sha256(data)}  -`));
    expect(errors2).toEqual([]);
  });
});
