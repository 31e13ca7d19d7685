// Host key pinning: the remote host's key must be the one the user pinned, either a SHA256
// fingerprint in the inventory (`hostKey: SHA256:...`) or an OpenSSH known_hosts entry (plain,
// hashed `|1|salt|hash`, `[host]:port`). An unknown or changed key is refused with its fingerprint
// and how to pin it; nothing is ever added on the user's behalf (no trust on first use).
import { createHash, createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { AirlockError } from "../../../proto/src/errors.ts";

/** OpenSSH's form: "SHA256:" + unpadded base64 of SHA-256 over the key blob. */
export function fingerprint(keyBlob: Buffer): string {
  return `SHA256:${createHash("sha256").update(keyBlob).digest("base64").replace(/=+$/, "")}`;
}

/** The key type named inside an SSH public key blob (string length + name). */
export function keyType(keyBlob: Buffer): string {
  if (keyBlob.length < 4) return "?";
  const n = keyBlob.readUInt32BE(0);
  return n > 0 && n < 64 && keyBlob.length >= 4 + n ? keyBlob.subarray(4, 4 + n).toString("latin1") : "?";
}

export interface KnownKey {
  type: string;
  blob: Buffer;
}

/** The name known_hosts files use: `host` on port 22, `[host]:port` otherwise. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function patternMatches(pattern: string, name: string): boolean {
  if (pattern.startsWith("|1|")) {
    const [salt, hash] = pattern.slice(3).split("|");
    if (!salt || !hash) return false;
    return createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64") === hash;
  }
  // Plain patterns with * and ? wildcards, as OpenSSH matches them.
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`, "i");
  return re.test(name);
}

/** The keys a known_hosts file pins for host:port (revoked keys and CA lines are returned apart). */
export function knownHostKeys(file: string, host: string, port: number): { keys: KnownKey[]; revoked: KnownKey[] } {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return { keys: [], revoked: [] };
  }
  const name = knownHostsName(host, port);
  const keys: KnownKey[] = [];
  const revoked: KnownKey[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    const marker = fields[0]!.startsWith("@") ? fields.shift() : undefined;
    if (marker === "@cert-authority" || fields.length < 3) continue;
    const [hosts, type, b64] = fields as [string, string, string];
    const patterns = hosts.split(",");
    const negated = patterns.some((p) => p.startsWith("!") && patternMatches(p.slice(1), name));
    if (negated || !patterns.some((p) => !p.startsWith("!") && patternMatches(p, name))) continue;
    const key = { type, blob: Buffer.from(b64, "base64") };
    (marker === "@revoked" ? revoked : keys).push(key);
  }
  return { keys, revoked };
}

export interface HostKeyPin {
  host: string;
  port: number;
  /** `SHA256:...` from the inventory, when given: it alone decides. */
  fingerprint?: string;
  /** known_hosts files to look in otherwise. */
  knownHosts: string[];
}

/** What the verifier saw, for the error raised once the handshake has failed. */
export interface HostKeyCheck {
  verify(keyBlob: Buffer): boolean;
  /** Host key algorithms to ask for, known ones first (so a pinned ed25519 key is the one offered). */
  preferredTypes(): string[];
  /** The refusal, if the verifier refused. */
  refusal?: AirlockError;
}

const pinHint = (host: string, port: number, fp: string): string =>
  `check ${fp} with the host's administrator (on the host: \`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\`), then pin it: \`hostKey: ${fp}\` for this host in ~/.config/airlock/hosts.yaml, or \`ssh-keyscan -p ${port} ${host} >> ~/.ssh/known_hosts\``;

export function hostKeyCheck(pin: HostKeyPin): HostKeyCheck {
  const where = knownHostsName(pin.host, pin.port);
  const known = pin.fingerprint ? { keys: [], revoked: [] } : pin.knownHosts.reduce<{ keys: KnownKey[]; revoked: KnownKey[] }>((acc, f) => {
    const k = knownHostKeys(f, pin.host, pin.port);
    return { keys: [...acc.keys, ...k.keys], revoked: [...acc.revoked, ...k.revoked] };
  }, { keys: [], revoked: [] });
  const check: HostKeyCheck = {
    verify(blob) {
      const fp = fingerprint(blob);
      if (known.revoked.some((k) => k.blob.equals(blob))) {
        check.refusal = new AirlockError("HOST_KEY", `the host key of ${where} (${fp}) is marked @revoked in known_hosts; refusing to connect`);
        return false;
      }
      if (pin.fingerprint) {
        if (fp === pin.fingerprint) return true;
        check.refusal = new AirlockError("HOST_KEY", `the host key of ${where} CHANGED: it is ${fp}, the inventory pins ${pin.fingerprint}; refusing to connect (someone may be in the middle)`, {
          hint: `if the host's key was really replaced, check ${fp} with its administrator and update hostKey in hosts.yaml`,
        });
        return false;
      }
      if (known.keys.some((k) => k.blob.equals(blob))) return true;
      const type = keyType(blob);
      if (known.keys.some((k) => k.type === type)) {
        check.refusal = new AirlockError("HOST_KEY", `the host key of ${where} CHANGED: it offers ${type} ${fp}, which is not the ${type} key ${pin.knownHosts.join(" or ")} pins; refusing to connect (someone may be in the middle)`, {
          hint: `if the host's key was really replaced, check ${fp} with its administrator, then \`ssh-keygen -R '${where}'\` and pin the new one`,
        });
      } else {
        check.refusal = new AirlockError("HOST_KEY", `the host key of ${where} is unknown: ${type} ${fp}; refusing to connect (airlock never trusts a key on first use)`, { hint: pinHint(pin.host, pin.port, fp) });
      }
      return false;
    },
    preferredTypes() {
      const algos: Record<string, string[]> = { "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] };
      return [...new Set(known.keys.flatMap((k) => algos[k.type] ?? [k.type]))];
    },
  };
  return check;
}
