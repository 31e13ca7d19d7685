// The governance party's endpoints (manifest `governance:`), reached by the firewall itself from its
// NIC over TLS pinned by `governance.tls` (for https; the host only relays the TCP stream):
//   - consent, before the workload (consent.ts);
//   - audit, after the run: the signed trail, closed, as the host got it, so governance holds it
//     even if the host drops it;
//   - telemetry, after the run: the enforcer's metrics — counts and timings, never data — padded to
//     a fixed size, so the host relaying it sees one size whatever they are.
// A failure to ship the trail or the metrics is logged; the run's outcome is already decided.
import { readFile } from "node:fs/promises";
import type http from "node:http";
import { governanceEndpoint } from "../../../proto/src/firewall-nic.ts";
import type { GOVERNANCE_ENDPOINTS } from "../../../proto/src/manifest/schema.ts";
import type { RoomPlan } from "../../../proto/src/room.ts";
import { send } from "../proxies/http/upstream.ts";
import type { RunContext } from "./context.ts";

const GOVERNANCE_TIMEOUT_MS = 10_000;
const MAX_ANSWER = 4096;
/** The telemetry document's fixed size: its length says nothing. */
const TELEMETRY_BYTES = 1024;

export interface GovernanceAnswer {
  status: number;
  /** The answer's first MAX_ANSWER bytes. */
  text: string;
}

/** POSTs `body` to a governance endpoint from the NIC; throws on a network or pin failure. */
export async function postToGovernance(room: RoomPlan, key: (typeof GOVERNANCE_ENDPOINTS)[number], body: Buffer, contentType: string): Promise<GovernanceAnswer> {
  const target = room.governance[key];
  const reach = governanceEndpoint(room, key);
  if (!target || !reach) throw new Error(`the room names no governance ${key} endpoint`);
  const url = new URL(target);
  const res: http.IncomingMessage = await send(
    url.protocol === "https:" ? "https" : "http",
    { host: reach.address, port: reach.port, servername: url.hostname, method: "POST", path: `${url.pathname}${url.search}`, headers: { host: url.host, "content-type": contentType, "content-length": String(body.length) }, tls: room.governance.tls, timeoutMs: GOVERNANCE_TIMEOUT_MS },
    (async function* () {
      yield body;
    })(),
  );
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_ANSWER) break;
    parts.push(c);
  }
  res.destroy();
  return { status: res.statusCode ?? 0, text: Buffer.concat(parts).toString("utf8").slice(0, MAX_ANSWER) };
}

/** A pin or TLS failure, said as what it means. */
export function whyUnreachable(err: unknown): string {
  const e = err as Error & { code?: string };
  return e.code === "PIN_MISMATCH" || /certificate|CERT/i.test(`${e.code ?? ""} ${e.message}`) ? "the endpoint's certificate is not the one the manifest pins" : e.message.slice(0, 300);
}

export interface RunMetrics {
  /** Milliseconds each step took (room check, attestation, keys, consent, agent channel, session). */
  stepsMs: Record<string, number>;
  completed: boolean;
}

/** After the run: the closed trail and the metrics to the governance endpoints the room names. */
export async function reportToGovernance(ctx: RunContext, metrics: RunMetrics): Promise<void> {
  const { room, log } = ctx;
  if (room.governance.audit) {
    try {
      const trail = await readFile(ctx.audit.log.path);
      const a = await postToGovernance(room, "audit", trail, "application/x-ndjson");
      log.info({ status: a.status }, "audit trail shipped to governance");
    } catch (err) {
      log.warn({ reason: whyUnreachable(err) }, "the audit trail could not be shipped to governance");
    }
  }
  if (room.governance.telemetry) {
    const doc = { room: room.name, manifestDigest: room.digest, completed: metrics.completed, stepsMs: metrics.stepsMs, inputs: room.inputs.length, outputs: room.outputs.length, egressEndpoints: room.egress.length };
    const text = JSON.stringify(doc);
    const body = Buffer.alloc(TELEMETRY_BYTES, 0x20);
    if (Buffer.byteLength(text) < TELEMETRY_BYTES) {
      body.write(text);
      try {
        const t = await postToGovernance(room, "telemetry", body, "application/json");
        log.info({ status: t.status }, "metrics sent to governance");
      } catch (err) {
        log.warn({ reason: whyUnreachable(err) }, "the metrics could not be sent to governance");
      }
    }
  }
}
