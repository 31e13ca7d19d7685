// `airlock up|run|status|logs|down --host H`: the same commands, run by the remote host's airlock
// over one SSH connection. up and run first check the remote airlock, upload what the room needs
// (content-addressed, stage.ts) and serve the user's key broker to it (broker-relay.ts); the pair's
// supervisor runs detached on the remote host, so it outlives the SSH session.
import { randomBytes, createHash } from "node:crypto";
import { createReadStream, mkdirSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import type { ClientChannel } from "ssh2";
import { AirlockError, RUN_EXIT } from "../../../proto/src/errors.ts";
import { loadManifest, type Manifest } from "../../../proto/src/manifest/index.ts";
import { roomIdentity, type RoomIdentity } from "../launch/room-digest.ts";
import { checkPairName, type PairState } from "../launch/pair-state.ts";
import type { ImageInfo } from "../images/build.ts";
import { prepareOutDir } from "../cli/out-dir.ts";
import { RUN_FILES, STAGING } from "../launch/output-writer.ts";
import { CONSOLE_OUTPUT } from "../../../proto/src/manifest/schema.ts";
import { SshConnection } from "./connection.ts";
import { loadInventory, resolveHost, type HostOptions, type RemoteHost } from "./inventory.ts";
import { checkRemoteAirlock, printable, remoteAirlockCommand, shellQuote } from "./remote-airlock.ts";
import { BlobUploader, hashFile, type Blob } from "./upload.ts";
import { planBlobs, planRoom, wirePlan } from "./stage.ts";
import { BROKER_KEY_ENV, BROKER_SOCKET_ENV, serveBrokerOverSsh, type ServedBroker } from "./broker-relay.ts";
import type { RemoteInfo } from "./remote-side.ts";

const UP_TIMEOUT_MS = 330_000;
const RUN_MARGIN_MS = 600_000;
const POLL_MS = 500;

type Say = (s: string) => void;

export interface Remote {
  conn: SshConnection;
  info: RemoteInfo;
}

/** Connects (host key, user key), checks the remote airlock and asks for its folders. */
export async function openRemote(host: RemoteHost, say: Say): Promise<Remote> {
  say(`connecting to ${host.user}@${host.host}:${host.port}`);
  const conn = await SshConnection.connect(host);
  try {
    await checkRemoteAirlock(conn);
    const r = await conn.exec(remoteAirlockCommand(host, ["remote-side", "info"]), { timeoutMs: 60_000, maxStdout: 64 * 1024 });
    let info: RemoteInfo | undefined;
    try {
      info = JSON.parse(r.stdout.toString("utf8")) as RemoteInfo;
    } catch {
      // refused below
    }
    if (r.code !== 0 || !info || ![info.cacheDir, info.stateDir].every((p) => typeof p === "string" && path.posix.isAbsolute(p) && p.length < 200) || typeof info.pspArkPem !== "string" || !info.pspArkPem.startsWith("-----BEGIN CERTIFICATE-----")) {
      throw new AirlockError("REMOTE", `${conn.label}: \`airlock remote-side info\` failed: ${printable(r.stderr.trim())}`);
    }
    return { conn, info };
  } catch (err) {
    conn.close();
    throw err;
  }
}

/** Builds (or reuses) the room's images here and uploads them and the room's files there. */
async function stageRoom(remote: Remote, manifest: Manifest, say: Say): Promise<{ manifest: string; identity: RoomIdentity }> {
  say("building or reusing the images locally");
  const identity = await roomIdentity(manifest);
  // The images' own records name their files' hashes (this machine's cache); the rest is hashed.
  const known = new Map<string, { sha256: string; size: number }>();
  for (const img of Object.values(identity.images)) for (const d of Object.values((img.info as ImageInfo).files)) known.set(path.join(img.dir, d.file), { sha256: d.sha256, size: d.size });
  const plan = await planRoom(manifest, identity.images, async (f) => known.get(f) ?? hashFile(f));
  const blobs = planBlobs(plan);
  const uploader = await BlobUploader.open(remote.conn, remote.info.cacheDir);
  try {
    const total = blobs.reduce((n, b) => n + b.size, 0);
    say(`uploading ${blobs.length} file(s), ${(total / 2 ** 20).toFixed(1)} MiB, to ${remote.conn.label} (content-addressed: files already there are skipped)`);
    const tenths = new Map<Blob, number>();
    const reports = await uploader.uploadAll(blobs, (b, n) => {
      const tenth = Math.floor((n / b.size) * 10);
      if (b.size > 8 << 20 && tenth > (tenths.get(b) ?? 0)) {
        tenths.set(b, tenth);
        say(`  ${path.basename(b.file)}: ${tenth * 10}% of ${(b.size / 2 ** 20).toFixed(1)} MiB`);
      }
    });
    const sent = reports.reduce((k, r) => k + r.sent, 0);
    const present = reports.filter((r) => r.status === "present").length;
    for (const [i, r] of reports.entries()) if (r.status === "resumed") say(`  ${path.basename(blobs[i]!.file)}: resumed a cut upload (${r.sent} of ${r.size} bytes sent), verified`);
    say(`upload done: ${(sent / 2 ** 20).toFixed(1)} MiB sent, ${present} file(s) already there; every file verified by its SHA-256 on arrival`);
  } finally {
    uploader.close();
  }
  const r = await remote.conn.exec(remoteAirlockCommand(remote.conn.host, ["remote-side", "stage"]), { stdin: JSON.stringify(wirePlan(plan)), timeoutMs: 120_000, maxStdout: 64 * 1024 });
  const staged = r.code === 0 ? (JSON.parse(r.stdout.toString("utf8")) as { manifest?: unknown }) : {};
  if (typeof staged.manifest !== "string") throw new AirlockError("REMOTE", `${remote.conn.label}: staging the room failed: ${printable(r.stderr.trim())}`);
  return { manifest: staged.manifest, identity };
}

async function serveBroker(remote: Remote, name: string, identity: RoomIdentity): Promise<ServedBroker> {
  const dir = path.posix.join(remote.info.stateDir, "relay");
  await remote.conn.exec(`mkdir -p -m 700 ${shellQuote(dir)}`, { timeoutMs: 30_000 });
  const socket = path.posix.join(dir, `${name}-${randomBytes(4).toString("hex")}.kbs`);
  return serveBrokerOverSsh(remote.conn, socket, { digest: identity.digest, firewallMeasurement: Buffer.from(identity.pins.firewall, "hex"), pspArkPem: remote.info.pspArkPem });
}

/** Streams a channel's stderr lines to `say` (remote progress), collecting stdout; bounded. */
function drain(ch: ClientChannel, say: Say, timeoutMs: number, what: string): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    let stdout = "";
    let pending = "";
    let code: number | null = null;
    const timer = setTimeout(() => {
      ch.close();
      reject(new AirlockError("TIMEOUT", `${what} did not finish within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    ch.on("data", (d: Buffer) => {
      if (stdout.length < 4 << 20) stdout += d.toString("utf8");
    });
    ch.stderr.on("data", (d: Buffer) => {
      pending += d.toString("utf8");
      const lines = pending.split("\n");
      pending = lines.pop()!.slice(0, 4096);
      for (const l of lines) if (l.trim()) say(`  remote: ${printable(l.replace(/^airlock: /, ""), 400)}`);
    });
    ch.on("exit", (c: number | null) => (code = c));
    ch.on("close", () => {
      clearTimeout(timer);
      resolve({ code, stdout });
    });
  });
}

export interface RemoteUpArgs extends HostOptions {
  host: string;
  manifest: string;
  name?: string;
  accel: string;
  debug: boolean;
}

/** `up --host`: returns the remote pair's state once it is ready (or failed). */
export async function remoteUp(args: RemoteUpArgs, say: Say): Promise<{ state: PairState; host: string }> {
  const host = resolveHost(args.host, args);
  const manifest = loadManifest(args.manifest);
  const name = checkPairName(args.name ?? manifest.name);
  const remote = await openRemote(host, say);
  let broker: ServedBroker | undefined;
  try {
    const staged = await stageRoom(remote, manifest, say);
    broker = await serveBroker(remote, name, staged.identity);
    say(`starting pair ${name} on ${remote.conn.label} (the key broker stays here, relayed over SSH)`);
    const cmd = remoteAirlockCommand(host, ["up", staged.manifest, "--name", name, "--accel", args.accel, "--json", ...(args.debug ? ["--debug"] : [])], { [BROKER_SOCKET_ENV]: broker.remoteSocket, [BROKER_KEY_ENV]: broker.publicKey });
    const r = await drain(await remote.conn.execStream(cmd), say, UP_TIMEOUT_MS, `airlock up on ${remote.conn.label}`);
    let state: PairState | undefined;
    try {
      state = JSON.parse(r.stdout) as PairState;
    } catch {
      // refused below
    }
    if (!state || typeof state.status !== "string") throw new AirlockError("REMOTE", `airlock up on ${remote.conn.label} failed (exit ${r.code})`, { hint: `see the lines above; \`airlock logs ${name} --vm supervisor --host ${args.host}\`` });
    const digest = staged.identity.digest.toString("hex");
    if (state.manifestDigest !== digest) {
      await remote.conn.exec(remoteAirlockCommand(host, ["down", name]), { timeoutMs: 60_000 });
      throw new AirlockError("REMOTE", `the pair on ${remote.conn.label} binds room digest ${printable(String(state.manifestDigest))}, not ${digest} as computed here; it was stopped`);
    }
    return { state, host: host.name };
  } finally {
    await broker?.close();
    remote.conn.close();
  }
}

export interface RemoteRunArgs extends RemoteUpArgs {
  out: string;
  force: boolean;
  keep: boolean;
}

/** `run --host`: the run's exit status (as `airlock run` gives it), --out brought back verified. */
export async function remoteRun(args: RemoteRunArgs, say: Say): Promise<number> {
  const host = resolveHost(args.host, args);
  const manifest = loadManifest(args.manifest);
  const name = checkPairName(args.name ?? manifest.name);
  const out = path.resolve(args.out);
  prepareOutDir(out, manifest.outputs.map((o) => o.name), args.force);
  const remote = await openRemote(host, say);
  let broker: ServedBroker | undefined;
  try {
    const staged = await stageRoom(remote, manifest, say);
    broker = await serveBroker(remote, name, staged.identity);
    const runDir = path.posix.join(remote.info.stateDir, "remote-runs", `${name}-${Date.now()}-${randomBytes(3).toString("hex")}`);
    const remoteOut = `${runDir}/out`;
    const run = remoteAirlockCommand(host, ["run", staged.manifest, "--out", remoteOut, "--name", name, "--accel", args.accel, ...(args.debug ? ["--debug"] : []), ...(args.keep ? ["--keep"] : [])], {
      [BROKER_SOCKET_ENV]: broker.remoteSocket,
      [BROKER_KEY_ENV]: broker.publicKey,
    });
    // Detached in its own session: the run goes on if this SSH session ends.
    // (The command ends in exec, hence the subshell.)
    const script = `(${run}) >run.log 2>&1; echo $? >exit.tmp; mv exit.tmp exit`;
    const started = await remote.conn.exec(`mkdir -p -m 700 ${shellQuote(runDir)} && cd ${shellQuote(runDir)} && (setsid sh -c ${shellQuote(script)} </dev/null >/dev/null 2>&1 &) && echo started`, { timeoutMs: 30_000 });
    if (started.code !== 0) throw new AirlockError("REMOTE", `${remote.conn.label}: cannot start the run: ${printable(started.stderr.trim())}`);
    say(`run ${name} started on ${remote.conn.label} (in ${runDir}); its progress follows`);
    const code = await followRun(remote, runDir, say, (manifest.workload.timeoutSeconds + (manifest.workload.padToSeconds ?? 0)) * 1000 + RUN_MARGIN_MS);
    await download(remote, remoteOut, out, manifest, say);
    await remote.conn.exec(`rm -rf -- ${shellQuote(runDir)}`, { timeoutMs: 60_000 });
    return code;
  } finally {
    await broker?.close();
    remote.conn.close();
  }
}

/** Prints the remote run's log as it grows until its exit status is written; bounded. */
async function followRun(remote: Remote, runDir: string, say: Say, timeoutMs: number): Promise<number> {
  const sftp = await remote.conn.sftp();
  const deadline = Date.now() + timeoutMs;
  let offset = 0;
  let pending = "";
  const readFrom = (file: string, pos: number): Promise<Buffer> =>
    new Promise((resolve) => {
      sftp.open(file, "r", (err, h) => {
        if (err) return resolve(Buffer.alloc(0));
        const buf = Buffer.alloc(256 * 1024);
        sftp.read(h, buf, 0, buf.length, pos, (e, n) => sftp.close(h, () => resolve(e ? Buffer.alloc(0) : buf.subarray(0, n))));
      });
    });
  try {
    for (;;) {
      const exit = (await readFrom(`${runDir}/exit`, 0)).toString("utf8").trim();
      for (;;) {
        const chunk = await readFrom(`${runDir}/run.log`, offset);
        if (chunk.length === 0) break;
        offset += chunk.length;
        pending += chunk.toString("utf8");
        const lines = pending.split("\n");
        pending = lines.pop()!.slice(0, 4096);
        for (const l of lines) if (l.trim()) say(`  remote: ${printable(l.replace(/^airlock: /, ""), 400)}`);
      }
      if (exit) {
        if (!/^\d{1,3}$/.test(exit)) throw new AirlockError("REMOTE", `the remote run's exit status is not a number: ${printable(exit)}`);
        return Number(exit);
      }
      if (Date.now() > deadline) throw new AirlockError("TIMEOUT", `the run on ${remote.conn.label} did not end within ${timeoutMs / 1000} s; it may still be running there (${runDir})`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    sftp.end();
  }
}

const MAX_OUT_ENTRIES = 10_000;
const MAX_OUT_BYTES = 8 * 2 ** 30;

/** Brings the remote --out back: each file checked against the remote's SHA-256 before it is renamed into place. */
async function download(remote: Remote, remoteOut: string, out: string, manifest: Manifest, say: Say): Promise<void> {
  const r = await remote.conn.exec(remoteAirlockCommand(remote.conn.host, ["remote-side", "list-out", remoteOut]), { timeoutMs: 300_000, maxStdout: 8 << 20 });
  if (r.code !== 0) {
    say(`no outputs came back (${printable(r.stderr.trim().split("\n").pop() ?? "")})`);
    return;
  }
  const entries = JSON.parse(r.stdout.toString("utf8")) as unknown;
  const allowedTop = new Set([...RUN_FILES, STAGING, `${CONSOLE_OUTPUT}.tar.age`, ...manifest.outputs.flatMap((o) => [o.name, `${o.name}.tar.age`])]);
  if (!Array.isArray(entries) || entries.length > MAX_OUT_ENTRIES) throw new AirlockError("REMOTE", "the remote --out listing is malformed");
  let total = 0;
  const checked = entries.map((e: { path?: unknown; type?: unknown; size?: unknown; sha256?: unknown }) => {
    const p = e.path;
    const ok = typeof p === "string" && /^[A-Za-z0-9._-][A-Za-z0-9._ +,=@-]*(\/[A-Za-z0-9._-][A-Za-z0-9._ +,=@-]*)*$/.test(p) && !p.split("/").some((s) => s === "." || s === "..") && allowedTop.has(p.split("/")[0]!);
    if (!ok || (e.type !== "file" && e.type !== "dir") || typeof e.size !== "number" || e.size < 0 || (e.type === "file" && !/^[0-9a-f]{64}$/.test(String(e.sha256)))) {
      throw new AirlockError("REMOTE", `the remote --out lists an entry airlock would not write: ${printable(JSON.stringify(e), 200)}`);
    }
    total += e.size;
    return e as { path: string; type: "file" | "dir"; size: number; sha256: string };
  });
  if (total > MAX_OUT_BYTES) throw new AirlockError("REMOTE", `the remote --out holds ${total} bytes, more than ${MAX_OUT_BYTES}`);
  const sftp = await remote.conn.sftp();
  try {
    for (const e of checked) {
      const dest = path.join(out, e.path);
      if (e.type === "dir") {
        mkdirSync(dest, { recursive: true, mode: 0o700 });
        continue;
      }
      mkdirSync(path.dirname(dest), { recursive: true, mode: 0o700 });
      const tmp = `${dest}.part`;
      await new Promise<void>((resolve, reject) => sftp.fastGet(`${remoteOut}/${e.path}`, tmp, { concurrency: 16, chunkSize: 64 * 1024 }, (err) => (err ? reject(new AirlockError("REMOTE", `downloading ${e.path}: ${err.message}`)) : resolve())));
      const h = createHash("sha256");
      for await (const c of createReadStream(tmp)) h.update(c as Buffer);
      const got = h.digest("hex");
      if (got !== e.sha256) {
        rmSync(tmp, { force: true });
        throw new AirlockError("REMOTE", `${e.path} arrived as sha256 ${got}, not ${e.sha256} as the remote host hashed it`, { hint: "run again" });
      }
      renameSync(tmp, dest);
    }
  } finally {
    sftp.end();
  }
  say(`brought back ${checked.filter((e) => e.type === "file").length} file(s) into ${out}, each verified by SHA-256`);
}

/** Runs an ordinary airlock command on the host and relays its output and exit status. */
export async function remoteSimple(hostSpec: string, options: HostOptions, args: string[], say: Say): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  const host = resolveHost(hostSpec, options);
  const conn = await SshConnection.connect(host);
  try {
    await checkRemoteAirlock(conn);
    const r = await conn.exec(remoteAirlockCommand(host, args), { timeoutMs: 120_000, maxStdout: 64 << 20 });
    for (const l of r.stderr.split("\n")) if (l.trim()) say(`remote: ${printable(l.replace(/^airlock: /, ""), 400)}`);
    return { code: r.code ?? RUN_EXIT.incomplete, stdout: r.stdout, stderr: r.stderr };
  } finally {
    conn.close();
  }
}

/** Every pair on every host of the inventory (a host that cannot be asked says why). */
export async function statusAllHosts(options: HostOptions): Promise<{ host: string; pairs?: PairState[]; error?: string }[]> {
  const results: { host: string; pairs?: PairState[]; error?: string }[] = [];
  for (const name of loadInventory().keys()) {
    try {
      const r = await remoteSimple(name, options, ["status", "--json"], () => {});
      const pairs = JSON.parse(r.stdout.toString("utf8")) as PairState[];
      if (!Array.isArray(pairs)) throw new Error("not a list");
      results.push({ host: name, pairs });
    } catch (err) {
      results.push({ host: name, error: err instanceof Error ? err.message : String(err) });
    }
  }
  return results;
}
