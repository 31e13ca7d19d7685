// The key broker stays with the data owner: for a pair on a remote host, the broker runs in the
// user's `airlock up|run --host` process and the remote host reaches it only through an SSH
// remote-forwarded Unix socket. What crosses the remote host is the broker protocol
// (kbs/README.md): a nonce, the firewall's attestation report, and each key sealed (X25519 +
// ChaCha20-Poly1305) to a public key that report binds, and signed by the broker — so the host
// relays keys it cannot open, and cannot swap or downgrade them unnoticed.
//
// Remote side: the supervisor started with AIRLOCK_BROKER_SOCKET / AIRLOCK_BROKER_PUBLIC_KEY runs
// no broker of its own: its KBS vsock listener pipes each connection to that socket, and the room
// pins the user's broker key. Local side: serveBrokerOverSsh().
import { createPublicKey } from "node:crypto";
import net from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import { silentLogger, type Logger } from "../../../proto/src/log.ts";
import { roomKeyId } from "../../../proto/src/room.ts";
import { X25519Identity, formatIdentityFile } from "../../../proto/src/age/index.ts";
import { KeyStore, loadMasterKey, startKbs, type KbsHandle } from "../kbs/index.ts";
import { embeddedBrokerDirs } from "../kbs/grant.ts";
import type { SshConnection } from "./connection.ts";

export const BROKER_SOCKET_ENV = "AIRLOCK_BROKER_SOCKET";
export const BROKER_KEY_ENV = "AIRLOCK_BROKER_PUBLIC_KEY";

/** The relayed broker this supervisor was told to use, if any (checked: a Unix path and an Ed25519 SPKI). */
export function relayedBroker(): { socket: string; publicKey: string } | undefined {
  const socket = process.env[BROKER_SOCKET_ENV];
  const publicKey = process.env[BROKER_KEY_ENV];
  if (!socket && !publicKey) return undefined;
  if (!socket || !path.isAbsolute(socket) || !publicKey) throw new AirlockError("REMOTE", `${BROKER_SOCKET_ENV} (an absolute socket path) and ${BROKER_KEY_ENV} go together`);
  try {
    if (createPublicKey({ key: Buffer.from(publicKey, "base64"), format: "der", type: "spki" }).asymmetricKeyType !== "ed25519") throw new Error("not Ed25519");
  } catch (err) {
    throw new AirlockError("KEY_INVALID", `${BROKER_KEY_ENV} is not a base64 Ed25519 SPKI key (${(err as Error).message})`);
  }
  return { socket, publicKey };
}

/** Pipes every connection to `listenPath` on to `target` (the SSH-forwarded broker socket). */
export async function listenBrokerRelay(listenPath: string, target: string, log: Logger): Promise<net.Server> {
  const server = net.createServer((local) => {
    local.on("error", () => {});
    const remote = net.connect(target);
    remote.on("error", (err) => {
      log.warn({ err: err.message }, "the relayed key broker is unreachable (the user's airlock ended?)");
      local.destroy();
    });
    local.pipe(remote);
    remote.pipe(local);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listenPath, resolve);
  });
  return server;
}

export interface ServedBroker {
  publicKey: string;
  /** Where the remote host's sshd listens for the forward. */
  remoteSocket: string;
  kbs: KbsHandle;
  close(): Promise<void>;
}

/**
 * Runs the user's broker for one remote room and has the remote sshd forward `remoteSocket` to it.
 * The room's own identity (secure outputs) is registered here, bound to the room digest and
 * firewall measurement, trusting the remote host's PSP root (emulated TEE: the host's emulated PSP
 * plays the chip).
 */
export async function serveBrokerOverSsh(conn: SshConnection, remoteSocket: string, room: { digest: Buffer; firewallMeasurement: Buffer; pspArkPem: string }, log: Logger = silentLogger): Promise<ServedBroker> {
  const dirs = embeddedBrokerDirs();
  const master = loadMasterKey(path.join(dirs.kbs, "master.key"), { create: true });
  const store = new KeyStore(dirs.kbs, master);
  const roomId = roomKeyId(room.digest.toString("hex"));
  const key = store.list().includes(roomId) ? store.open(roomId) : Buffer.from(formatIdentityFile(X25519Identity.generate()));
  try {
    store.put(roomId, key, { measurements: [room.firewallMeasurement.toString("hex")], hostData: room.digest.toString("hex"), trustRoots: [room.pspArkPem] });
  } finally {
    key.fill(0);
  }
  const tmp = mkdtempSync(path.join(tmpdir(), "airlock-broker-"));
  const localSocket = path.join(tmp, "kbs.sock");
  // The folder holds only the broker's socket; it goes whichever way this ends.
  const removeTmp = (): void => rmSync(tmp, { recursive: true, force: true });
  let kbs: KbsHandle;
  try {
    kbs = await startKbs({ stateDir: dirs.kbs, masterKey: master, listen: { path: localSocket }, log });
  } catch (err) {
    removeTmp();
    throw err;
  }
  const onUnix = (info: { socketPath: string }, accept: () => NodeJS.ReadWriteStream & { on(e: string, f: () => void): void; destroy(): void }, reject: () => void): void => {
    if (info.socketPath !== remoteSocket) return reject();
    const ch = accept();
    const local = net.connect(localSocket);
    local.on("error", () => ch.destroy());
    ch.on("error", () => local.destroy());
    ch.pipe(local).pipe(ch);
  };
  conn.client.on("unix connection", onUnix as never);
  try {
    await new Promise<void>((resolve, reject) =>
      conn.client.openssh_forwardInStreamLocal(remoteSocket, (err) =>
        err ? reject(new AirlockError("REMOTE", `${conn.label} refused to forward the key broker's socket (${err.message})`, { hint: "the remote sshd must allow Unix socket forwarding (AllowStreamLocalForwarding yes, its default)" })) : resolve(),
      ),
    );
  } catch (err) {
    await kbs.close().finally(removeTmp);
    throw err;
  }
  return {
    publicKey: kbs.publicKey,
    remoteSocket,
    kbs,
    close: async () => {
      conn.client.off("unix connection", onUnix as never);
      await new Promise<void>((resolve) => conn.client.openssh_unforwardInStreamLocal(remoteSocket, () => resolve()));
      await kbs.close().finally(removeTmp);
    },
  };
}
