// A throwaway OpenSSH server on 127.0.0.1 (Debian's sshd, started as a child process with its own
// host key, config and authorized_keys in a temporary folder): the "remote host" of the --host
// tests and the fleet bench. The same machine plays both sides, reached through SSH only.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { scratchDir } from "../scratch.ts";

export interface TestSshd {
  dir: string;
  port: number;
  pid: number;
  /** The user's private key (authorized). */
  userKey: string;
  /** A known_hosts file pinning this server's key. */
  knownHosts: string;
  /** The server's key as OpenSSH prints its fingerprint (SHA256:...). */
  fingerprint: string;
  /** The sshd processes serving connections (every descendant of the listener). */
  sessionPids(): number[];
  stop(): Promise<void>;
}

export function keygen(file: string): string {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "airlock-test", "-f", file]);
  return readFileSync(`${file}.pub`, "utf8").trim();
}

export function keyFingerprint(pubFile: string): string {
  return execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", pubFile]).toString().split(" ")[1]!;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

export async function startSshd(): Promise<TestSshd> {
  const dir = scratchDir("airlock-sshd-");
  const hostKey = path.join(dir, "host_ed25519");
  const hostPub = keygen(hostKey);
  const userKey = path.join(dir, "user_ed25519");
  writeFileSync(path.join(dir, "authorized_keys"), `${keygen(userKey)}\n`, { mode: 0o600 });
  const port = await freePort();
  writeFileSync(
    path.join(dir, "sshd_config"),
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey}`,
      `PidFile ${dir}/sshd.pid`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      "StrictModes no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "UsePAM no",
      "AllowStreamLocalForwarding yes",
      "Subsystem sftp /usr/lib/openssh/sftp-server",
      "",
    ].join("\n"),
  );
  // sshd refuses to start without its privilege-separation folder (systemd makes it on a booted host).
  if (!existsSync("/run/sshd")) mkdirSync("/run/sshd", { mode: 0o755 });
  const child: ChildProcess = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", path.join(dir, "sshd_config")], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr!.on("data", (d: Buffer) => (log += d.toString()));
  const t0 = Date.now();
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`sshd exited: ${log}`);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, "127.0.0.1", () => (s.end(), r(true)));
      s.on("error", () => r(false));
    });
    if (ok) break;
    if (Date.now() - t0 > 10_000) {
      child.kill("SIGKILL");
      throw new Error(`sshd did not listen within 10 s: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // The whole tree under the listener: each connection's privileged and unprivileged sshd both
  // hold the TCP socket, and the session's sftp-server.
  const sessionPids = (): number[] => {
    const children = (pid: number): number[] => {
      try {
        return execFileSync("pgrep", ["-P", String(pid)]).toString().trim().split("\n").filter(Boolean).map(Number);
      } catch {
        return [];
      }
    };
    const all: number[] = [];
    for (let todo = children(child.pid!); todo.length; ) {
      const pid = todo.pop()!;
      all.push(pid);
      todo.push(...children(pid));
    }
    return all;
  };
  const knownHosts = path.join(dir, "known_hosts");
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostPub.split(" ").slice(0, 2).join(" ")}\n`);
  return {
    dir,
    port,
    pid: child.pid!,
    userKey,
    knownHosts,
    fingerprint: keyFingerprint(`${hostKey}.pub`),
    sessionPids,
    // The listener and every session under it (a session outlives its listener until its client
    // closes). exitCode and signalCode both stay null only while the listener runs.
    stop: async () => {
      const sessions = sessionPids();
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
      for (const pid of sessions) {
        try {
          process.kill(pid, "SIGTERM");
        } catch {
          // already gone
        }
      }
    },
  };
}
