// Step 3: keys from the key broker the room pins, through a relay inside this VM: each input's
// identity (with the scope its owner granted) and the room's own identity for secure outputs —
// key.broker, key.released.
import { createHash } from "node:crypto";
import { AirlockError } from "../../../proto/src/errors.ts";
import { inputKeyId, roomKeyId } from "../../../proto/src/room.ts";
import type { DataScope } from "../../../proto/src/manifest/schema.ts";
import { parseIdentityFile, type AgeIdentity } from "../../../proto/src/age/index.ts";
import { AUDIT_KINDS } from "../../../proto/src/audit/index.ts";
import { kbsRelay, requestKey } from "./keys.ts";
import type { RunContext } from "./context.ts";

export interface ReleasedKeys {
  identities: Map<string, AgeIdentity[]>;
  /** Input name → the scope its owner granted (signed by the broker); the session applies the stricter of it and the manifest's. */
  ownerScopes: Map<string, DataScope>;
  /** The room's own recipient (secure outputs), when the broker released the room identity. */
  roomRecipient?: string;
  /** The room's own identity (secure egress opens answers sealed to the room with it). */
  roomIdentity?: AgeIdentity;
}

export async function releaseKeys({ room, audit, provider, brokerPublicKey, runDir }: RunContext): Promise<ReleasedKeys> {
  if (!brokerPublicKey) throw new AirlockError("KEY_RELEASE", "the host named no key broker identity");
  if (createHash("sha256").update(Buffer.from(brokerPublicKey, "base64")).digest("hex") !== room.attestation.broker) {
    throw new AirlockError("KEY_RELEASE", "the key broker the host named is not the one the signed room pins");
  }
  await audit.append("key.broker", { publicKey: brokerPublicKey, pinnedBy: "room digest" });
  const relay = await kbsRelay(`${runDir}/kbs.sock`);
  const identities = new Map<string, AgeIdentity[]>();
  const ownerScopes = new Map<string, DataScope>();
  let roomRecipient: string | undefined;
  let roomIdentity: AgeIdentity | undefined;
  try {
    for (const input of room.inputs) {
      // The digest computed here: a grant made for another manifest (a look-alike reusing these names) has another key id.
      const keyId = inputKeyId(room.name, input.name, room.digest);
      try {
        const { key: raw, scope } = await requestKey({ endpoint: relay.endpoint, keyId, provider, brokerPublicKey });
        identities.set(input.name, parseIdentityFile(raw.toString("utf8"), `key ${keyId}`));
        raw.fill(0);
        ownerScopes.set(input.name, scope);
        await audit.append(AUDIT_KINDS.keyReleased, { keyId, input: input.name, released: true, ownerScope: scope, manifestScope: input.scope });
      } catch (err) {
        await audit.append(AUDIT_KINDS.keyReleased, { keyId, input: input.name, released: false, reason: AirlockError.from(err).message.slice(0, 500) });
        throw err;
      }
    }
    {
      // Always asked: the console is a secure output, and without the room identity it stays inside.
      const keyId = roomKeyId(room.digest);
      try {
        const { key: raw } = await requestKey({ endpoint: relay.endpoint, keyId, provider, brokerPublicKey });
        const id = parseIdentityFile(raw.toString("utf8"), `key ${keyId}`)[0];
        roomIdentity = id;
        roomRecipient = id?.recipient.toString();
        raw.fill(0);
        await audit.append(AUDIT_KINDS.keyReleased, { keyId, purpose: "room identity (secure outputs)", released: roomRecipient !== undefined });
      } catch (err) {
        await audit.append(AUDIT_KINDS.keyReleased, { keyId, purpose: "room identity (secure outputs)", released: false, reason: AirlockError.from(err).message.slice(0, 500) });
      }
    }
  } finally {
    relay.close();
  }
  return { identities, ownerScopes, ...(roomRecipient ? { roomRecipient } : {}), ...(roomIdentity ? { roomIdentity } : {}) };
}
