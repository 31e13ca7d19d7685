// The room's host services, which the firewall reaches over vsock (CID 2): the fabric delivers a
// guest's connection to host port P to a Unix listener at `<uds-path>_<P>`. On PSP_VSOCK_PORT the
// emulated PSP reports the firewall's launch; on HOST_SANDBOX_PSP_PORT a second emulated PSP
// reports the sandbox's (the firewall relays the sandbox to it: the sandbox itself never reaches
// the host; the listener closes once the sandbox has attested); on KBS_VSOCK_PORT the embedded key
// broker, holding the room's own identity (secure outputs). Governance is asked by the firewall
// itself, from its NIC (firewall-vm/src/enforcer/consent.ts). The control link is host-link.ts.
import path from "node:path";
import type { Logger } from "../../../proto/src/log.ts";
import { HOST_SANDBOX_PSP_PORT, KBS_VSOCK_PORT } from "../../../proto/src/control.ts";
import { roomKeyId } from "../../../proto/src/room.ts";
import type { Manifest } from "../../../proto/src/manifest/index.ts";
import { X25519Identity, formatIdentityFile } from "../../../proto/src/age/index.ts";
import { PSP_VSOCK_PORT } from "../../../proto/src/attestation/psp-wire.ts";
import { EmulatedPsp, listenPsp, type PspListener } from "../attestation/index.ts";
import { startKbs, KeyStore, loadMasterKey, type KbsHandle } from "../kbs/index.ts";
import { embeddedBrokerDirs, roomKeyPolicy } from "../kbs/grant.ts";
import type { RoomIdentity } from "./room-digest.ts";
import { DEFAULT_SNP_POLICY } from "./snp-plan.ts";
import { listenBrokerRelay, relayedBroker } from "../remote/broker-relay.ts";
import type { Server } from "node:net";

export interface RoomServicesOptions {
  /** The firewall's vsock uds-path; the host's listeners are `<udsPath>_<port>`. */
  udsPath: string;
  manifest: Manifest;
  /** The room as the launch binds it: canonical manifest with its pins, and digest (room-digest.ts). */
  identity: RoomIdentity;
  /** The launch measurements of the images launched: the emulated PSPs report them, as hardware would. */
  launched: { firewall: Buffer; sandbox: Buffer };
  log: Logger;
}


export class RoomServices {
  private psp: PspListener | undefined;
  private sandboxPsp: PspListener | undefined;
  private kbs: KbsHandle | undefined;
  private pspState: EmulatedPsp | undefined;
  private relay: { server: Server; publicKey: string } | undefined;

  constructor(private readonly options: RoomServicesOptions) {}

  /** The embedded broker's public key (the host's word: the firewall checks it against the room's pin). */
  get brokerPublicKey(): string | undefined {
    return this.relay?.publicKey ?? this.kbs?.publicKey;
  }

  /** Starts both emulated PSPs and the embedded key broker, with the room's identity in it. */
  async start(): Promise<void> {
    const { udsPath, log } = this.options;
    const dirs = embeddedBrokerDirs();
    const digest = this.options.identity.digest;
    const psp = EmulatedPsp.open(dirs.psp, { log });
    const measurement = this.options.launched.firewall;
    this.psp = await listenPsp(`${udsPath}_${PSP_VSOCK_PORT}`, psp, { measurement, hostData: digest, policy: DEFAULT_SNP_POLICY }, { log });
    this.pspState = psp;
    await this.openSandboxPsp();

    // A pair driven from another machine (--host): the user's broker, reached over SSH, holds the
    // keys; this host only relays sealed releases (remote/broker-relay.ts).
    const relayed = relayedBroker();
    if (relayed) {
      this.relay = { server: await listenBrokerRelay(`${udsPath}_${KBS_VSOCK_PORT}`, relayed.socket, log), publicKey: relayed.publicKey };
      log.info({ measurement: measurement.toString("hex") }, "emulated PSP ready; key broker relayed from the user's machine");
      return;
    }
    // The room's own identity (secure outputs): created once per manifest digest; its policy
    // follows the current firewall image.
    const store = new KeyStore(dirs.kbs, loadMasterKey(path.join(dirs.kbs, "master.key"), { create: true }));
    const roomId = roomKeyId(digest.toString("hex"));
    const existing = store.list().includes(roomId) ? store.open(roomId) : Buffer.from(formatIdentityFile(X25519Identity.generate()));
    store.put(roomId, existing, roomKeyPolicy(measurement, digest, psp));
    existing.fill(0);
    this.kbs = await startKbs({ stateDir: dirs.kbs, masterKey: loadMasterKey(path.join(dirs.kbs, "master.key")), listen: { path: `${udsPath}_${KBS_VSOCK_PORT}` }, log });
    log.info({ measurement: measurement.toString("hex"), kbsAudit: this.kbs.auditPath }, "emulated PSP and key broker ready");
  }

  /**
   * The sandbox's launch, reached through the firewall's relay (the firewall's uds-path, since the
   * firewall is the one dialling CID 2). Opened at the start, and again for a service room's new
   * sandbox after a reset (a new launch: one more attestation).
   */
  async openSandboxPsp(): Promise<void> {
    const { udsPath, log } = this.options;
    if (this.sandboxPsp || !this.pspState) return;
    this.sandboxPsp = await listenPsp(`${udsPath}_${HOST_SANDBOX_PSP_PORT}`, this.pspState, { measurement: this.options.launched.sandbox, hostData: this.options.identity.digest, policy: DEFAULT_SNP_POLICY }, { log });
  }

  /** The sandbox had its one attestation: nothing may reach its PSP again. */
  async closeSandboxPsp(): Promise<void> {
    const listener = this.sandboxPsp;
    this.sandboxPsp = undefined;
    await listener?.close();
  }

  /**
   * Asks the governance endpoint on the firewall's behalf (POST JSON {room, manifestDigest}, 10 s).
   * The host could answer in the endpoint's place: the firewall records the answer as the host's
   * relay of it, and only a "no" or silence can hurt the data owner (fail closed).
   */
  async close(): Promise<void> {
    await this.psp?.close();
    this.psp = undefined;
    await this.closeSandboxPsp();
    await this.kbs?.close();
    this.kbs = undefined;
    this.relay?.server.close();
    this.relay = undefined;
  }
}
