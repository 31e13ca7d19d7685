// The data owner's grant of an input's age identity to one room in the embedded key broker
// (`airlock manifest grant`), and the policy under which the embedded broker releases a room's keys.
//
// A grant binds the key to one manifest digest for good: the key id carries the digest's first 24
// hex digits (proto/src/room.ts inputKeyId), the policy's hostData the whole digest, and the store
// refuses to change a key's hostData. A look-alike manifest (same room and input names, another
// digest) therefore gets a key id, and a broker-kept identity, of its own. The owner's scope goes
// into the policy; the broker signs it into every release and the firewall holds the data to the
// stricter of it and the scope the manifest declares.
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import { inputKeyId } from "../../../proto/src/room.ts";
import type { Manifest } from "../../../proto/src/manifest/index.ts";
import { DATA_SCOPES, type DataScope } from "../../../proto/src/manifest/schema.ts";
import { X25519Identity, formatIdentityFile, parseIdentityFile } from "../../../proto/src/age/index.ts";
import { DEFAULT_OWNER_SCOPE } from "../../../proto/src/attestation/kbs-wire.ts";
import { EmulatedPsp } from "../attestation/index.ts";
import { KeyStore, loadMasterKey, type KeyPolicy } from "./store.ts";
import { stateDir } from "../paths.ts";

/** The flag that lets a data owner grant (or a key policy carry) a scope below USER_PRIVATE. */
export const ALLOW_LOW_SCOPE_FLAG = "allow-scope-below-user-private";

const rank = (s: DataScope): number => DATA_SCOPES.indexOf(s);

/** The embedded key broker's and emulated PSP's state: AIRLOCK_KBS_STATE or <state>/kbs, <state>/psp. */
export function embeddedBrokerDirs(): { kbs: string; psp: string } {
  return { kbs: process.env.AIRLOCK_KBS_STATE ?? path.join(stateDir(), "kbs"), psp: path.join(stateDir(), "psp") };
}

/**
 * Refuses a scope below USER_PRIVATE (PUBLIC, DOMAIN_OWNED) unless the owner said so explicitly:
 * open outputs may carry data of such a scope in clear.
 */
export function checkGrantScope(scope: DataScope, allowLowScope: boolean, what: string): void {
  if (!(DATA_SCOPES as readonly string[]).includes(scope)) throw new AirlockError("KEY_POLICY", `${what}: scope must be one of ${DATA_SCOPES.join(", ")}, got ${JSON.stringify(scope)}`);
  if (rank(scope) < rank("USER_PRIVATE") && !allowLowScope) {
    throw new AirlockError(
      "KEY_POLICY",
      `${what}: scope ${scope} is below USER_PRIVATE, so the room's open outputs may carry this data, and whatever the workload derives from it, out in clear; give --${ALLOW_LOW_SCOPE_FLAG} if that is what you mean`,
    );
  }
}

/** The policy under which the embedded broker releases a room's keys: this firewall, this room (and the owner's scope). */
export function roomKeyPolicy(measurement: Buffer, digest: Buffer, psp: EmulatedPsp, scope?: DataScope): KeyPolicy {
  return { measurements: [measurement.toString("hex")], hostData: digest.toString("hex"), trustRoots: [psp.arkPem], ...(scope ? { scope } : {}) };
}

export interface GrantOptions {
  /** The owner's scope for the input's data (default USER_PRIVATE). */
  scope?: DataScope;
  /** Required for a scope below USER_PRIVATE (the CLI's --allow-scope-below-user-private). */
  allowLowScope?: boolean;
}

export interface Grant {
  keyId: string;
  /** The age recipient of the granted (or broker-kept) identity. */
  recipient: string;
  /** The manifest digest (hex) the key is bound to, for good. */
  digest: string;
  /** The scope granted: carried, signed, in every release of the key. */
  scope: DataScope;
  /** The scope the manifest declares for the input. */
  declaredScope: DataScope;
  /** The room's open outputs (released in clear when their rules hold). */
  openOutputs: string[];
  /** What the data owner should read before encrypting to the room (e.g. the manifest labels the data lower than the grant). */
  warnings: string[];
}

/**
 * Registers an input's age identity with the embedded broker, for this manifest digest only (the
 * data owner's step: `airlock manifest grant`). Without `identityText` the broker keeps (or makes)
 * an identity of its own for this digest, which never leaves it: the data owner encrypts to the
 * returned recipient.
 */
export async function grantInput(manifest: Manifest, input: string, identityText: string | undefined, room: { digest: Buffer; firewallMeasurement: Buffer }, options: GrantOptions = {}): Promise<Grant> {
  const declared = manifest.inputs.find((i) => i.name === input);
  if (!declared) throw new AirlockError("KEY_POLICY", `${manifest.file}: no input named "${input}"`);
  const scope = options.scope ?? DEFAULT_OWNER_SCOPE;
  checkGrantScope(scope, options.allowLowScope === true, `input ${input}`);
  const { digest, firewallMeasurement: measurement } = room;
  const digestHex = digest.toString("hex");
  const dirs = embeddedBrokerDirs();
  const psp = EmulatedPsp.open(dirs.psp);
  const store = new KeyStore(dirs.kbs, loadMasterKey(path.join(dirs.kbs, "master.key"), { create: true }));
  const keyId = inputKeyId(manifest.name, input, digestHex);
  const key = identityText !== undefined ? Buffer.from(identityText) : store.list().includes(keyId) ? store.open(keyId) : Buffer.from(formatIdentityFile(X25519Identity.generate()));
  let recipient: string;
  try {
    recipient = parseIdentityFile(key.toString("utf8"), `key ${keyId}`)[0]!.recipient.toString();
    store.put(keyId, key, roomKeyPolicy(measurement, digest, psp, scope));
  } finally {
    key.fill(0);
  }
  const openOutputs = manifest.outputs.filter((o) => o.mode === "open").map((o) => o.name);
  const warnings: string[] = [];
  if (rank(scope) < rank("USER_PRIVATE") && rank(declared.scope) < rank("USER_PRIVATE") && openOutputs.length > 0) {
    const held = rank(declared.scope) > rank(scope) ? declared.scope : scope;
    warnings.push(`you grant ${scope} and the manifest declares ${declared.scope}, so the firewall holds the data to ${held} only: open output(s) ${openOutputs.join(", ")} may carry it in clear`);
  }
  if (rank(declared.scope) < rank(scope)) {
    warnings.push(
      `the manifest declares input ${input} as ${declared.scope}, lower than the ${scope} granted here: the firewall holds the data to ${scope} (the stricter)` +
        (openOutputs.length > 0 && rank(scope) > rank("DOMAIN_OWNED") ? `, so open output(s) ${openOutputs.join(", ")} are withheld once the workload reads it` : "") +
        "; make sure this is the manifest you meant to grant",
    );
  }
  return { keyId, recipient, digest: digestHex, scope, declaredScope: declared.scope, openOutputs, warnings };
}
