// What every privacy proxy is: the firewall's one way for a kind of data to pass between the
// sandbox and the world (README.md in this folder). Each surfaces one protocol into the sandbox,
// and decides what passes by the mode its manifest entry names and the sandbox's scope now; it
// raises that scope when data comes in, records each decision in the audit trail, and counts
// (never records) what the workload chose to try above DOMAIN_OWNED.
import type { AgeIdentity } from "../../../proto/src/age/index.ts";
import type { Logger } from "../../../proto/src/log.ts";
import type { ScopeTracker } from "../policy/index.ts";
import type { AuditSink } from "../enforcer/audit-ship.ts";
import type { HostChannel } from "../enforcer/host-channel.ts";
import type { Violations } from "../enforcer/violations.ts";

/** What a proxy works with: the run's scope, trail, counters, the host link and the room's keys. */
export interface ProxyContext {
  /** The sandbox's scope: read before each decision; raised by what comes in. */
  scope: ScopeTracker;
  audit: AuditSink;
  violations: Violations;
  /** Where released data goes (the host sees only what a decision lets out). */
  host: HostChannel;
  log: Logger;
  /** The room's own recipient and identity (secure mode), when the key broker released them. */
  roomRecipient?: string;
  roomIdentity?: AgeIdentity;
}

/** A privacy proxy, as the enforcer holds it. */
export interface PrivacyProxy {
  /** The protocol it surfaces in the sandbox (for the trail and for people). */
  readonly surfaces: string;
}
