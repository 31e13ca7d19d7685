// One SSH connection to a remote host (ssh2): the host key checked against its pin (host-key.ts),
// key authentication only (an identity file or ssh-agent; never a password, never
// keyboard-interactive), every wait bounded.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import ssh2, { type AuthenticationType, type Client, type ClientChannel, type SFTPWrapper } from "ssh2";
import { AirlockError } from "../../../proto/src/errors.ts";
import { hostKeyCheck } from "./host-key.ts";
import type { RemoteHost } from "./inventory.ts";

const CONNECT_TIMEOUT_MS = 20_000;
const DEFAULT_EXEC_TIMEOUT_MS = 120_000;

export interface ExecResult {
  code: number | null;
  signal?: string;
  stdout: Buffer;
  stderr: string;
}

/** The user's keys: the named identity, else ssh-agent, else OpenSSH's default key files. */
function authMethods(host: RemoteHost): { methods: { type: AuthenticationType; username: string; key?: Buffer; agent?: string }[]; tried: string[] } {
  const username = host.user;
  const load = (file: string): Buffer => {
    let data: Buffer;
    try {
      data = readFileSync(file);
    } catch (err) {
      throw new AirlockError("FILE_UNREADABLE", `cannot read the SSH identity ${file} (${(err as NodeJS.ErrnoException).code ?? "unreadable"})`);
    }
    const parsed = ssh2.utils.parseKey(data);
    if (parsed instanceof Error) {
      const encrypted = /encrypted|passphrase/i.test(parsed.message);
      throw new AirlockError("KEY_INVALID", `the SSH identity ${file} cannot be used: ${parsed.message}`, { hint: encrypted ? "add it to ssh-agent (`ssh-add`) and leave identity unset: airlock never asks for passphrases" : "give a private key in OpenSSH or PEM form" });
    }
    return data;
  };
  if (host.identity) return { methods: [{ type: "publickey", username, key: load(host.identity) }], tried: [host.identity] };
  const methods: { type: AuthenticationType; username: string; key?: Buffer; agent?: string }[] = [];
  const tried: string[] = [];
  if (process.env.SSH_AUTH_SOCK) {
    methods.push({ type: "agent", username, agent: process.env.SSH_AUTH_SOCK });
    tried.push("ssh-agent");
  }
  for (const f of ["id_ed25519", "id_ecdsa", "id_rsa"].map((n) => path.join(homedir(), ".ssh", n))) {
    if (!existsSync(f)) continue;
    try {
      methods.push({ type: "publickey", username, key: load(f) });
      tried.push(f);
    } catch {
      // An encrypted default key is skipped: the agent (if any) holds it.
    }
  }
  if (methods.length === 0) throw new AirlockError("KEY_INVALID", `no SSH key to log in to ${host.host} with`, { hint: "set identity for this host in hosts.yaml, pass --identity FILE, or load a key into ssh-agent" });
  return { methods, tried };
}

export class SshConnection {
  private constructor(
    readonly host: RemoteHost,
    readonly client: Client,
  ) {}

  get label(): string {
    return `${this.host.user}@${this.host.host}:${this.host.port}`;
  }

  static async connect(host: RemoteHost): Promise<SshConnection> {
    const check = hostKeyCheck({ host: host.host, port: host.port, ...(host.hostKey ? { fingerprint: host.hostKey } : {}), knownHosts: host.knownHosts });
    const { methods, tried } = authMethods(host);
    const client = new ssh2.Client();
    const label = `${host.user}@${host.host}:${host.port}`;
    const preferred = check.preferredTypes();
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error & { level?: string }): void => {
        client.end();
        if (check.refusal) return reject(check.refusal);
        if (err.level === "client-authentication") {
          return reject(new AirlockError("REMOTE", `${label} refused the key(s) offered for user ${host.user} (${tried.join(", ")})`, { hint: `add the public key to ~${host.user}/.ssh/authorized_keys on ${host.host}, or set identity for this host; airlock logs in with keys only, never passwords` }));
        }
        if (err.level === "client-timeout") return reject(new AirlockError("TIMEOUT", `${label} did not complete the SSH handshake within ${CONNECT_TIMEOUT_MS / 1000} s`));
        reject(new AirlockError("REMOTE", `cannot reach ${label}: ${err.message}`, { hint: "check the host name, port and that sshd runs there" }));
      };
      client.once("ready", () => {
        client.off("error", fail);
        client.on("error", () => {}); // later errors surface through the operation that hits them
        resolve();
      });
      client.once("error", fail);
      client.connect({
        host: host.host,
        port: host.port,
        username: host.user,
        readyTimeout: CONNECT_TIMEOUT_MS,
        keepaliveInterval: 10_000,
        keepaliveCountMax: 3,
        hostVerifier: (key: Buffer) => check.verify(key),
        ...(preferred.length ? { algorithms: { serverHostKey: preferred as never } } : {}),
        authHandler: methods as never,
        tryKeyboard: false,
      });
    });
    return new SshConnection(host, client);
  }

  /** Runs a command line (already quoted) to its end, bounded; stdin is closed. */
  exec(command: string, options: { timeoutMs?: number; stdin?: string | Buffer; maxStdout?: number } = {}): Promise<ExecResult> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    const maxStdout = options.maxStdout ?? 16 << 20;
    return new Promise((resolve, reject) => {
      this.client.exec(command, (err, ch) => {
        if (err) return reject(new AirlockError("REMOTE", `${this.label}: cannot run a command: ${err.message}`));
        const out: Buffer[] = [];
        let outLen = 0;
        let stderr = "";
        const timer = setTimeout(() => {
          ch.close();
          reject(new AirlockError("TIMEOUT", `${this.label}: \`${command.slice(0, 120)}\` did not finish within ${timeoutMs / 1000} s`));
        }, timeoutMs);
        ch.on("data", (d: Buffer) => {
          outLen += d.length;
          if (outLen <= maxStdout) out.push(d);
        });
        ch.stderr.on("data", (d: Buffer) => {
          if (stderr.length < 64 * 1024) stderr += d.toString("utf8");
        });
        let code: number | null = null;
        let signal: string | undefined;
        ch.on("exit", (c: number | null, s?: string) => {
          code = c;
          signal = s;
        });
        ch.on("close", () => {
          clearTimeout(timer);
          if (outLen > maxStdout) return reject(new AirlockError("REMOTE", `${this.label}: \`${command.slice(0, 120)}\` printed more than ${maxStdout} bytes`));
          resolve({ code, ...(signal ? { signal } : {}), stdout: Buffer.concat(out), stderr });
        });
        ch.end(options.stdin);
      });
    });
  }

  /** Opens a command's channel for streaming (the caller reads and bounds it). */
  execStream(command: string): Promise<ClientChannel> {
    return new Promise((resolve, reject) => this.client.exec(command, (err, ch) => (err ? reject(new AirlockError("REMOTE", `${this.label}: cannot run a command: ${err.message}`)) : resolve(ch))));
  }

  sftp(): Promise<SFTPWrapper> {
    return new Promise((resolve, reject) => this.client.sftp((err, s) => (err ? reject(new AirlockError("REMOTE", `${this.label}: the SFTP subsystem is not available: ${err.message}`)) : resolve(s))));
  }

  close(): void {
    this.client.end();
  }
}
