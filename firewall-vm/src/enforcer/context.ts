// What one run of the enforcer works with, handed to each of its steps (run.ts) as one object.
import type { Duplex } from "node:stream";
import type { Logger } from "../../../proto/src/log.ts";
import type { RoomPlan } from "../../../proto/src/room.ts";
import type { ReportEvidence, ReportProvider } from "../../../proto/src/attestation/index.ts";
import type { HostChannel } from "./host-channel.ts";
import type { ShippedAudit } from "./audit-ship.ts";
import type { auditKey } from "./keys.ts";
import type { Violations } from "./violations.ts";

/** vsock CID of the host. */
export const HOST_CID = 2;

export interface RunContext {
  /** The room the host sent (its digest computed here). */
  room: RoomPlan;
  /** The control link to the host. */
  host: HostChannel;
  /** The audit trail, shipped to the host record by record. */
  audit: ShippedAudit;
  /** The key that signs the audit trail; the firewall's report binds it. */
  key: ReturnType<typeof auditKey>;
  /** Where this VM's attestation reports come from. */
  provider: ReportProvider;
  /** Extra connections to the agent port or the relay, counted (capped) and written after the workload. */
  violations: Violations;
  log: Logger;
  /** Keep the VM up with its results after the run (`airlock up`). */
  hold: boolean;
  /** The key broker's public key as the host named it (checked against the room's pin). */
  brokerPublicKey: string | null;
  /** A folder of this VM's own (the audit trail, the broker relay's socket). */
  runDir: string;
  /** This VM's attestation report and its VCEK chain, once step 2 has run. */
  evidence?: ReportEvidence;
  /** The link to the agent, once it connected: closed once the host has heard how the run ended. */
  agentLink?: Duplex;
}
