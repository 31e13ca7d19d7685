// Step 4: consent, when the room names a governance endpoint: asked by the firewall itself from its
// NIC (the launch forwards the endpoint's address only, proto/src/firewall-nic.ts), over TLS pinned
// to the manifest's CA or key for an https endpoint (governance.ts); granted only on HTTP 200
// {"consent": true} within the bound; fail closed — consent.asked, consent.answered. The host relays bytes
// it cannot read (TLS) or change unseen (the pin): it no longer answers for governance.
import { AirlockError } from "../../../proto/src/errors.ts";
import { AUDIT_KINDS } from "../../../proto/src/audit/index.ts";
import { postToGovernance, whyUnreachable } from "./governance.ts";
import type { RunContext } from "./context.ts";

export async function askConsent({ room, audit }: RunContext): Promise<void> {
  const consent = room.governance.consent;
  if (!consent) return;
  const tls = room.governance.tls;
  await audit.append(AUDIT_KINDS.consentAsked, { url: consent, via: "firewall NIC", pin: !consent.startsWith("https:") ? "none (http)" : tls?.caPem ? "ca" : "key" });
  const body = Buffer.from(JSON.stringify({ room: room.name, manifestDigest: room.digest }));
  let status = 0;
  let detail: string;
  let granted = false;
  try {
    const answer = await postToGovernance(room, "consent", body, "application/json");
    status = answer.status;
    try {
      granted = status === 200 && (JSON.parse(answer.text) as { consent?: unknown }).consent === true;
    } catch {
      // not JSON: not consent
    }
    detail = granted ? "consent: true" : `HTTP ${status}: ${answer.text.slice(0, 200)}`;
  } catch (err) {
    detail = `unreachable: ${whyUnreachable(err)}`;
  }
  await audit.append(AUDIT_KINDS.consentAnswered, { url: consent, status, granted, detail });
  if (!granted) throw new AirlockError("CONSENT", `governance did not consent (${detail})`);
}
