// Which remote host `--host` names: an `ssh://user@host[:port]` URL, or a NAME from the host
// inventory (AIRLOCK_HOSTS or ~/.config/airlock/hosts.yaml):
//
//   hosts:
//     lab:
//       url: ssh://airlock@lab.example.org:2222
//       hostKey: SHA256:...            # else known_hosts decides
//       identity: ~/.ssh/id_ed25519    # else ssh-agent (SSH_AUTH_SOCK), then ~/.ssh/id_ed25519|ecdsa|rsa
//       knownHosts: ~/.ssh/known_hosts
//       airlock: /srv/airlock          # the remote checkout, or an airlock command (default: airlock on PATH)
//       env: {AIRLOCK_STATE: /srv/airlock-state}   # AIRLOCK_* only, set on the remote command line
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { AirlockError } from "../../../proto/src/errors.ts";

export interface RemoteHost {
  /** The inventory name, or the URL itself. */
  name: string;
  user: string;
  host: string;
  port: number;
  hostKey?: string;
  identity?: string;
  knownHosts: string[];
  /** The remote airlock: a checkout folder (absolute) or a command. */
  airlock: string;
  env: Record<string, string>;
}

export interface HostOptions {
  identity?: string;
  knownHosts?: string;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const FINGERPRINT_RE = /^SHA256:[A-Za-z0-9+/]{43}$/;
const ENV_RE = /^AIRLOCK_[A-Z0-9_]{1,64}$/;
const HOST_KEYS = ["url", "hostKey", "identity", "knownHosts", "airlock", "env"];

export function inventoryPath(): string {
  return process.env.AIRLOCK_HOSTS ?? path.join(process.env.XDG_CONFIG_HOME ?? path.join(homedir(), ".config"), "airlock", "hosts.yaml");
}

const expandHome = (p: string): string => (p === "~" || p.startsWith("~/") ? path.join(homedir(), p.slice(1)) : p);

function parseUrl(url: string, where: string): { user: string; host: string; port: number } {
  const m = /^ssh:\/\/([A-Za-z0-9._-]{1,32})@(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]{1,253})(?::(\d{1,5}))?\/?$/.exec(url);
  const port = m?.[3] ? Number(m[3]) : 22;
  if (!m || port < 1 || port > 65535) {
    throw new AirlockError("REMOTE", `${where}: ${JSON.stringify(url)} is not an SSH host URL`, { hint: "write ssh://user@host or ssh://user@host:port (the user is required), or the name of a host in hosts.yaml" });
  }
  return { user: m[1]!, host: m[2]!.replace(/^\[|\]$/g, ""), port };
}

/** The inventory's hosts (an absent file is an empty inventory). */
export function loadInventory(file = inventoryPath()): Map<string, RemoteHost> {
  const hosts = new Map<string, RemoteHost>();
  if (!existsSync(file)) return hosts;
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, "utf8"));
  } catch (err) {
    throw new AirlockError("REMOTE", `${file}: not valid YAML (${(err as Error).message.split("\n")[0]})`);
  }
  const root = doc as { hosts?: unknown } | null;
  if (root === null || typeof root !== "object" || typeof root.hosts !== "object" || root.hosts === null || Array.isArray(root.hosts)) {
    throw new AirlockError("REMOTE", `${file}: expected a mapping \`hosts:\` of host names`, { hint: "see README.md § Remote hosts for the format" });
  }
  for (const [name, raw] of Object.entries(root.hosts as Record<string, unknown>)) {
    const at = `${file}: hosts.${name}`;
    if (!NAME_RE.test(name)) throw new AirlockError("REMOTE", `${at}: a host name is letters, digits, '.', '_' and '-'`);
    if (typeof raw !== "object" || raw === null) throw new AirlockError("REMOTE", `${at}: expected a mapping with at least url`);
    const h = raw as Record<string, unknown>;
    const unknown = Object.keys(h).filter((k) => !HOST_KEYS.includes(k));
    if (unknown.length) throw new AirlockError("REMOTE", `${at}: unknown field(s) ${unknown.join(", ")}`, { hint: `the fields are ${HOST_KEYS.join(", ")}` });
    const str = (k: string): string | undefined => {
      if (h[k] === undefined) return undefined;
      if (typeof h[k] !== "string" || h[k] === "") throw new AirlockError("REMOTE", `${at}.${k}: expected a string`);
      return h[k];
    };
    const url = str("url");
    if (!url) throw new AirlockError("REMOTE", `${at}.url is required (ssh://user@host[:port])`);
    const hostKey = str("hostKey");
    if (hostKey !== undefined && !FINGERPRINT_RE.test(hostKey)) throw new AirlockError("REMOTE", `${at}.hostKey: expected an OpenSSH SHA256 fingerprint (SHA256: and 43 base64 characters), as \`ssh-keygen -lf\` prints it`);
    const env: Record<string, string> = {};
    if (h.env !== undefined) {
      if (typeof h.env !== "object" || h.env === null) throw new AirlockError("REMOTE", `${at}.env: expected a mapping`);
      for (const [k, v] of Object.entries(h.env)) {
        if (!ENV_RE.test(k) || typeof v !== "string") throw new AirlockError("REMOTE", `${at}.env.${k}: only AIRLOCK_* variables with string values are passed to the remote airlock`);
        env[k] = v;
      }
    }
    const identity = str("identity");
    const knownHosts = str("knownHosts");
    hosts.set(name, {
      name,
      ...parseUrl(url, `${at}.url`),
      ...(hostKey ? { hostKey } : {}),
      ...(identity ? { identity: expandHome(identity) } : {}),
      knownHosts: [expandHome(knownHosts ?? "~/.ssh/known_hosts")],
      airlock: str("airlock") ?? "airlock",
      env,
    });
  }
  return hosts;
}

/** Resolves `--host` (URL or inventory name), with --identity / --known-hosts taking precedence. */
export function resolveHost(spec: string, options: HostOptions = {}): RemoteHost {
  let host: RemoteHost;
  if (spec.startsWith("ssh://")) {
    host = { name: spec, ...parseUrl(spec, "--host"), knownHosts: [path.join(homedir(), ".ssh/known_hosts")], airlock: "airlock", env: {} };
  } else {
    const inventory = loadInventory();
    const found = inventory.get(spec);
    if (!found) {
      throw new AirlockError("REMOTE", `--host ${JSON.stringify(spec)} is neither an ssh:// URL nor a host in ${inventoryPath()}${inventory.size ? ` (it names ${[...inventory.keys()].join(", ")})` : ""}`, {
        hint: "give --host ssh://user@host[:port], or add the host to hosts.yaml (README.md § Remote hosts)",
      });
    }
    host = found;
  }
  if (options.identity) host = { ...host, identity: expandHome(options.identity) };
  if (options.knownHosts) host = { ...host, knownHosts: [expandHome(options.knownHosts)] };
  return host;
}
