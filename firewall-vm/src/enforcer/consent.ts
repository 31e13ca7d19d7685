// Step 4: consent, when the room names a governance endpoint: asked by the firewall itself from its
// NIC (the launch forwards the endpoint's address only, proto/src/firewall-nic.ts), over TLS pinned
// to the manifest's CA or key for an https endpoint; granted only on HTTP 200 {"consent": true}
// within CONSENT_TIMEOUT_MS; fail closed — consent.asked, consent.answered. The host relays bytes
// it cannot read (TLS) or change unseen (the pin): it no longer answers for governance.
import { AirlockError } from "../../../proto/src/errors.ts";
import { AUDIT_KINDS } from "../../../proto/src/audit/index.ts";
import { consentEndpoint } from "../../../proto/src/firewall-nic.ts";
import { send } from "../proxies/http/upstream.ts";
import type { RunContext } from "./context.ts";

const CONSENT_TIMEOUT_MS = 10_000;
const MAX_ANSWER = 4096;

export async function askConsent({ room, audit }: RunContext, reach = consentEndpoint(room)): Promise<void> {
  const consent = room.governance.consent;
  if (!consent || !reach) return;
  const url = new URL(consent);
  const tls = room.governance.tls;
  await audit.append(AUDIT_KINDS.consentAsked, { url: consent, via: "firewall NIC", pin: tls?.caPem ? "ca" : tls?.spkiSha256 ? "key" : "none (http)" });
  const body = Buffer.from(JSON.stringify({ room: room.name, manifestDigest: room.digest }));
  let status = 0;
  let detail: string;
  let granted = false;
  try {
    const res = await send(
      url.protocol === "https:" ? "https" : "http",
      { host: reach.address, port: reach.port, servername: url.hostname, method: "POST", path: `${url.pathname}${url.search}`, headers: { host: url.host, "content-type": "application/json", "content-length": String(body.length) }, tls, timeoutMs: CONSENT_TIMEOUT_MS },
      (async function* () {
        yield body;
      })(),
    );
    status = res.statusCode ?? 0;
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of res as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > MAX_ANSWER) break;
      parts.push(c);
    }
    res.destroy();
    const text = Buffer.concat(parts).toString("utf8").slice(0, MAX_ANSWER);
    try {
      granted = status === 200 && (JSON.parse(text) as { consent?: unknown }).consent === true;
    } catch {
      // not JSON: not consent
    }
    detail = granted ? "consent: true" : `HTTP ${status}: ${text.slice(0, 200)}`;
  } catch (err) {
    const e = err as Error & { code?: string };
    detail = `unreachable: ${e.code === "PIN_MISMATCH" || /certificate|CERT/i.test(`${e.code ?? ""} ${e.message}`) ? "the endpoint's certificate is not the one the manifest pins" : e.message.slice(0, 300)}`;
  }
  await audit.append(AUDIT_KINDS.consentAnswered, { url: consent, status, granted, detail });
  if (!granted) throw new AirlockError("CONSENT", `governance did not consent (${detail})`);
}
