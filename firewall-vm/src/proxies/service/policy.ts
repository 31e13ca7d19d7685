// What a service call may carry in and out (README.md § Scopes): the sandbox's scope and the users
// whose data it holds only grow while the VM lives; each call's inputs raise them before a byte
// reaches the workload; the answer leaves as the scope after the call allows:
//   PUBLIC                        in clear (public_output)
//   USER_PRIVATE, one owner U     sealed to the caller's reply key, only if that key is U's
//   DOMAIN_OWNED, MULTI_USER_PRIVATE, SEALED   sealed to the room's own key (never leaves a clean room)
// A user is named by their reply key: owner_uuid = userUuid(reply recipient), so nobody can claim
// another user's UUID and read the answer (README.md § Callers).
import type { DataScope } from "../../../../proto/src/manifest/schema.ts";
import { scopeRank } from "../../policy/index.ts";
import { REPLY_TO_KEY, userUuid } from "../../../../proto/src/service.ts";

/** The sandbox's data: its scope, and the users whose USER_PRIVATE data it has read. */
export interface SandboxData {
  scope: DataScope;
  owners: ReadonlySet<string>;
}

export const FRESH: SandboxData = { scope: "PUBLIC", owners: new Set() };

/** One input of a call: its scope and, for USER_PRIVATE, its owner (hex UUID). */
export interface CallInput {
  scope: DataScope;
  owner?: string;
}

/** The sandbox's data once it has read `inputs`: never lower than before. */
export function afterCall(before: SandboxData, inputs: CallInput[]): SandboxData {
  let scope = before.scope;
  const owners = new Set(before.owners);
  for (const i of inputs) {
    if (scopeRank(i.scope) > scopeRank(scope)) scope = i.scope;
    if (i.scope === "USER_PRIVATE" && i.owner) owners.add(i.owner);
  }
  // Two users' data together belong to neither of them alone.
  if (owners.size > 1 && scopeRank(scope) < scopeRank("MULTI_USER_PRIVATE")) scope = "MULTI_USER_PRIVATE";
  return { scope, owners };
}

export type Release = { to: "public" } | { to: "user"; recipient: string } | { to: "room" } | { to: "refused"; reason: string };

/** How an answer computed from `data` may leave toward a caller whose reply key is `replyTo`. */
export function releaseFor(data: SandboxData, replyTo: string | undefined, roomKey: boolean): Release {
  switch (data.scope) {
    case "PUBLIC":
      return { to: "public" };
    case "USER_PRIVATE": {
      const [owner] = [...data.owners];
      if (!replyTo) return { to: "refused", reason: `the answer is USER_PRIVATE data: the call must name the caller's reply key (request_metadata ${REPLY_TO_KEY})` };
      if (owner !== userUuid(replyTo)) return { to: "refused", reason: "the sandbox holds another user's USER_PRIVATE data: its answer cannot go to this caller" };
      return { to: "user", recipient: replyTo };
    }
    default:
      return roomKey ? { to: "room" } : { to: "refused", reason: `the answer is ${data.scope} data and the room has no key of its own to seal it to` };
  }
}
