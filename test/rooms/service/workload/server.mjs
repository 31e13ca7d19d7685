// An ordinary HTTP server (node:http, nothing of airlock): POST /<service>/<method> with the input
// as the body. Echo answers "echo:" + input; Remember keeps every input it was sent and answers with
// all of them (a workload that would hand one caller another's data); Instance answers this VM's
// boot id (a new one after a reset); Fail answers 500 with a message; Big answers 8 KiB. Inside
// (the service bench's yardstick) makes {n, c} Echo calls to this same server from inside the
// sandbox, c at a time, each on its own connection as the firewall's are, and answers their times.
import http from "node:http";
import { readFileSync } from "node:fs";

const bootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
const remembered = [];

function echoOnce() {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.request({ host: "127.0.0.1", port: 8080, method: "POST", path: "/demo.Echo/Echo", agent: false, headers: { "content-length": 16 } }, (res) => {
      res.resume();
      res.on("end", () => resolve(performance.now() - t0));
    });
    req.on("error", reject);
    req.end(Buffer.alloc(16, 0x62));
  });
}

async function inside({ n, c }) {
  const times = [];
  const t0 = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: c }, async () => {
    while (next < n) {
      next++;
      times.push(await echoOnce());
    }
  }));
  return { times, wallMs: performance.now() - t0 };
}

http
  .createServer((req, res) => {
    const parts = [];
    req.on("data", (d) => parts.push(d));
    req.on("end", () => {
      const body = Buffer.concat(parts);
      const [, service, method] = req.url.split("/");
      if (req.method !== "POST" || service !== "demo.Echo") return res.writeHead(404).end("no such method");
      switch (method) {
        case "Echo":
          return res.end(Buffer.concat([Buffer.from("echo:"), body]));
        case "Remember":
          remembered.push(body.toString());
          return res.end(remembered.join("|"));
        case "Instance":
          return res.end(bootId);
        case "Fail":
          return res.writeHead(500).end(`secret-detail:${remembered.join("|")}`);
        case "Big":
          return res.end(Buffer.alloc(8192, 0x61));
        case "Inside":
          return void inside(JSON.parse(body.toString())).then((r) => res.end(JSON.stringify(r)));
        default:
          return res.writeHead(404).end("no such method");
      }
    });
  })
  .listen(8080, "127.0.0.1");
