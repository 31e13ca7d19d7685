// Running the remote host's airlock over SSH: the command line (the inventory's `airlock:` and its
// AIRLOCK_* environment, quoted for the remote shell) and the version check before anything else.
import { AirlockError } from "../../../proto/src/errors.ts";
import type { SshConnection } from "./connection.ts";
import type { RemoteHost } from "./inventory.ts";
import { versionIdentity, type VersionIdentity } from "./version.ts";

export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_/.,=:+@%-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

/**
 * The remote command line for `airlock ARGS`: a checkout folder runs its launcher,
 * host-tools/bin/airlock; anything else is run as the command it names.
 */
export function remoteAirlockCommand(host: RemoteHost, args: string[], extraEnv: Record<string, string> = {}): string {
  const env = Object.entries({ ...host.env, ...extraEnv }).map(([k, v]) => `${k}=${shellQuote(v)}`);
  const a = shellQuote(host.airlock);
  const argv = args.map(shellQuote).join(" ");
  return `a=${a}; if [ -d "$a" ]; then set -- "$a/host-tools/bin/airlock"; else set -- "$a"; fi; exec env ${env.join(" ")} "$@" ${argv}`;
}

/** Refuses a remote host whose airlock is missing or is not this one (version and build). */
export async function checkRemoteAirlock(conn: SshConnection): Promise<VersionIdentity> {
  const host = conn.host;
  const mine = versionIdentity();
  const where = `${conn.label}`;
  const fix = `install the same airlock there (the same commit, then host-tools/scripts/setup.sh or \`npm run build\`) and name it with \`airlock: /path/to/checkout\` for this host in hosts.yaml`;
  const r = await conn.exec(remoteAirlockCommand(host, ["version", "--json"]), { timeoutMs: 60_000, maxStdout: 64 * 1024 });
  if (r.code === 127 || (r.code !== 0 && /not found|No such file/.test(r.stderr))) {
    throw new AirlockError("REMOTE", `airlock is not installed on ${where} (\`${host.airlock}\` was not found there: ${r.stderr.trim().split("\n")[0]?.slice(0, 200) ?? ""})`, { hint: fix });
  }
  let theirs: Partial<VersionIdentity> = {};
  try {
    theirs = JSON.parse(r.stdout.toString("utf8")) as Partial<VersionIdentity>;
  } catch {
    // an airlock too old to have `version --json`, or something else entirely
  }
  if (r.code !== 0 || theirs.name !== "airlock" || typeof theirs.version !== "string" || typeof theirs.build !== "string") {
    throw new AirlockError("REMOTE", `\`${host.airlock} version --json\` on ${where} did not answer as airlock ${mine.version} does (exit ${r.code}: ${r.stderr.trim().split("\n").slice(-1)[0]?.slice(0, 200) ?? ""})`, { hint: fix });
  }
  if (theirs.version !== mine.version || theirs.build !== mine.build) {
    throw new AirlockError("REMOTE", `the airlock on ${where} is ${printable(theirs.version)} (build ${printable(theirs.build).slice(0, 12)}), this one is ${mine.version} (build ${mine.build.slice(0, 12)}): both sides must run the same airlock`, { hint: fix });
  }
  return mine;
}

/** Remote-provided text, bounded and without control characters, for messages. */
export function printable(s: string, max = 200): string {
  // eslint-disable-next-line no-control-regex -- stripping control characters is the point
  return s.slice(0, max).replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, "?");
}
