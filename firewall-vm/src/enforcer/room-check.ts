// Step 1: the room. Its digest is computed here (parseRoom); every collaborator the manifest names
// must have signed it (the host sends MANIFEST.sig.json's content) — manifest.checked,
// manifest.signature per collaborator.
import { AirlockError } from "../../../proto/src/errors.ts";
import { checkSignatures } from "../../../proto/src/manifest/sign.ts";
import { AUDIT_KINDS } from "../../../proto/src/audit/index.ts";
import type { RunContext } from "./context.ts";

export async function checkRoom({ room, host, audit }: RunContext): Promise<void> {
  await audit.append(AUDIT_KINDS.manifestChecked, { room: room.name, digest: room.digest, inputs: room.inputs.length, outputs: room.outputs.length, collaborators: room.collaborators.length });
  const checks = checkSignatures(Buffer.from(room.digest, "hex"), room.collaborators, (await host.expect("signatures")).signatures);
  for (const c of checks) await audit.append(AUDIT_KINDS.signatureChecked, { collaborator: c.name, ok: c.ok, reason: c.reason });
  const bad = checks.filter((c) => !c.ok);
  if (bad.length) throw new AirlockError("MANIFEST_SIGNATURE", `manifest not signed by ${bad.map((c) => `${c.name} (${c.reason})`).join(", ")}`);
}
