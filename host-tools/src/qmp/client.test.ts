import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { scratchDir } from "../../../test/scratch.ts";
import { QmpClient } from "./client.ts";

const dir = scratchDir("airlock-qmp-");
const children: ChildProcess[] = [];
const servers: net.Server[] = [];

afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
  for (const s of servers.splice(0)) s.close();
});
afterAll(() => {
  for (const c of children) c.kill("SIGKILL");
});

/** A real QEMU with no guest at all (-machine none): starts in milliseconds, speaks real QMP. */
async function startQemu(name: string): Promise<string> {
  const sock = path.join(dir, `${name}.qmp`);
  const child = spawn("qemu-system-x86_64", ["-machine", "none", "-nodefaults", "-display", "none", "-S", "-qmp", `unix:${sock},server=on,wait=off`], { stdio: "ignore" });
  children.push(child);
  for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
  return sock;
}

/** A socket peer that sends a scripted QMP transcript one byte per write, to split every line. */
async function tricklingPeer(replies: (cmd: { execute: string; id?: string }) => string[]): Promise<string> {
  const sock = path.join(dir, `trickle-${servers.length}.sock`);
  const server = net.createServer((c) => {
    const send = async (text: string): Promise<void> => {
      for (const ch of text) {
        c.write(ch);
        await new Promise((r) => setImmediate(r));
      }
    };
    void send('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "x"}, "capabilities": []}}\r\n');
    let buf = "";
    c.on("data", (d) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string; id?: string };
        buf = buf.slice(nl + 1);
        void send(replies(cmd).join(""));
      }
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(sock, r));
  return sock;
}

describe("QMP client against real QEMU", () => {
  it("negotiates, runs commands, reports errors and delivers events with data", async () => {
    const qmp = await QmpClient.connect(await startQemu("a"));
    expect(qmp.greeting?.version.qemu.major).toBeGreaterThanOrEqual(7);
    expect(await qmp.execute("query-status")).toMatchObject({ status: "prelaunch", running: false });
    await expect(qmp.execute("no-such-command")).rejects.toMatchObject({ code: "QMP_COMMAND", message: expect.stringContaining("CommandNotFound") });
    const [results] = await Promise.all([Promise.all([qmp.execute("query-name"), qmp.execute("query-version"), qmp.execute("query-kvm")]), Promise.resolve()]);
    expect(results[1]).toMatchObject({ qemu: { major: qmp.greeting?.version.qemu.major } });
    const shutdown = qmp.waitForEvent("SHUTDOWN", 5000);
    await qmp.execute("quit");
    const ev = await shutdown;
    expect(ev.data).toMatchObject({ guest: false, reason: "host-qmp-quit" });
    expect(ev.timestamp.seconds).toBeGreaterThan(0);
    await new Promise<void>((r) => (qmp.isClosed ? r() : qmp.once("close", () => r())));
    await expect(qmp.execute("query-status")).rejects.toMatchObject({ code: "QMP_CLOSED" });
  });

  it("rejects pending commands when QEMU dies", async () => {
    const sock = await startQemu("b");
    const qmp = await QmpClient.connect(sock);
    const closed = new Promise((r) => qmp.once("close", r));
    children[children.length - 1]!.kill("SIGKILL");
    await closed;
    await expect(qmp.execute("query-status")).rejects.toMatchObject({ code: "QMP_CLOSED" });
  });
});

describe("QMP client framing and bounds", () => {
  it("reassembles lines split at every byte and matches replies by id, not order", async () => {
    const sock = await tricklingPeer((cmd) => {
      if (cmd.execute === "qmp_capabilities") return [`{"return": {}, "id": "${cmd.id}"}\r\n`];
      // An event first, then the reply: interleaving must not confuse the client.
      return [`{"event": "RESUME", "data": {"n": 1}, "timestamp": {"seconds": 1, "microseconds": 2}}\r\n`, `{"return": {"echo": "${cmd.execute}"}, "id": "${cmd.id}"}\r\n`];
    });
    const qmp = await QmpClient.connect(sock);
    const ev = qmp.waitForEvent("RESUME", 5000);
    expect(await qmp.execute("one")).toEqual({ echo: "one" });
    expect((await ev).data).toEqual({ n: 1 });
    qmp.close();
  });

  it("times out a command that gets no reply, and a peer that never greets", async () => {
    const sock = await tricklingPeer((cmd) => (cmd.execute === "qmp_capabilities" ? [`{"return": {}, "id": "${cmd.id}"}\n`] : []));
    const qmp = await QmpClient.connect(sock);
    await expect(qmp.execute("hang", undefined, { timeoutMs: 100 })).rejects.toMatchObject({ code: "TIMEOUT" });
    qmp.close();
    const silent = path.join(dir, "silent.sock");
    const server = net.createServer(() => {});
    servers.push(server);
    await new Promise<void>((r) => server.listen(silent, r));
    await expect(QmpClient.connect(silent, { timeoutMs: 100 })).rejects.toMatchObject({ code: "TIMEOUT" });
  });

  it("drops a peer that sends garbage", async () => {
    const sock = await tricklingPeer(() => ["this is not json\n"]);
    await expect(QmpClient.connect(sock, { timeoutMs: 2000 })).rejects.toMatchObject({ code: "QMP_PROTOCOL" });
  });
});
