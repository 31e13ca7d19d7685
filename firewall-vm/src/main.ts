// The firewall VM's enforcer: gets the room from the host, checks its signatures, attests, obtains
// the input identities from the key broker, asks governance for consent, serves the sandbox's run,
// ships the audit trail to the host, and ends (init then powers the VM off). The steps are in
// enforcer/ (run.ts); this file only wires them.
import { mkdirSync } from "node:fs";
import { HOST_CONTROL_PORT } from "../../proto/src/control.ts";
import { createRootLogger } from "../../proto/src/log.ts";
import { parseRoomBytes } from "../../proto/src/room.ts";
import { AuditLog, signerFromPrivateKey } from "../../proto/src/audit/index.ts";
import { connectVsock } from "../../proto/src/vsock-stream.ts";
import { HOST_CID } from "./enforcer/context.ts";
import { HostChannel } from "./enforcer/host-channel.ts";
import { auditKey } from "./enforcer/keys.ts";
import { reportProvider } from "./enforcer/tee.ts";
import { ShippedAudit } from "./enforcer/audit-ship.ts";
import { Violations } from "./enforcer/violations.ts";
import { runEnforcer } from "./enforcer/run.ts";

const RUN_DIR = "/tmp/airlock";
const log = createRootLogger({ name: "firewall", destination: 1 });

async function main(): Promise<number> {
  const hostStream = await connectVsock(HOST_CID, HOST_CONTROL_PORT, 30_000);
  const host = new HostChannel(hostStream);
  const first = await host.expect("room");
  const room = parseRoomBytes(first.canonicalJson);
  // The host names the broker's key; the room (whose digest the launch bound) pins its hash.
  const brokerPublicKey = first.brokerPublicKey || null;
  log.info({ room: room.name, digest: room.digest }, "room received");

  mkdirSync(RUN_DIR, { recursive: true, mode: 0o700 });
  const key = auditKey();
  const audit = new ShippedAudit(await AuditLog.create(`${RUN_DIR}/audit.log`, { signer: signerFromPrivateKey(key.privateKey), logger: log }), host);
  // The launch names the TEE (airlock.tee= on the measured kernel command line; emulated by default).
  const provider = reportProvider();
  const code = await runEnforcer({ room, host, audit, key, provider, violations: new Violations(), log, hold: first.hold, brokerPublicKey, runDir: RUN_DIR });
  // The run's last messages may still be queued for the socket: they go out before it closes (bounded).
  await new Promise<void>((resolve) => {
    hostStream.end(() => resolve());
    setTimeout(resolve, 5_000).unref();
  });
  hostStream.destroy();
  return code;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    log.error({ err: err.message }, "enforcer failed");
    process.exit(1);
  },
);
