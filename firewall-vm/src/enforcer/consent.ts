// Step 4: consent, when the room names a governance endpoint: asked through the host (the firewall
// has no NIC), granted only on HTTP 200 {"consent": true}; fail closed — consent.asked, consent.answered.
import { AirlockError } from "../../../proto/src/errors.ts";
import { AUDIT_KINDS } from "../../../proto/src/audit/index.ts";
import type { RunContext } from "./context.ts";

export async function askConsent({ room, host, audit }: RunContext): Promise<void> {
  if (!room.governance.consent) return;
  const url = room.governance.consent;
  await audit.append(AUDIT_KINDS.consentAsked, { url, via: "host relay" });
  const answer = await host.askConsent(url, room.digest, room.name);
  await audit.append(AUDIT_KINDS.consentAnswered, { url, status: answer.status, granted: answer.granted, detail: answer.detail });
  if (!answer.granted) throw new AirlockError("CONSENT", `governance did not consent (${answer.detail})`);
}
