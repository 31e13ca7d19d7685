// One run of the room, step by step (README.md § Order): room check, attestation, keys, consent,
// agent channel, session; then the trail's end and the outcome to the host. Any refusal before the
// workload starts ends the run with nothing in clear having left.
import { AirlockError, errorCodeToWire } from "../../../proto/src/errors.ts";
import { checkRoom } from "./room-check.ts";
import { attest } from "./attestation.ts";
import { releaseKeys } from "./key-release.ts";
import { askConsent } from "./consent.ts";
import { handshakeAgent, listenForAgent, openAgentChannel } from "./agent-channel.ts";
import { serveAgent } from "./session.ts";
import type { RunContext } from "./context.ts";
import { reportToGovernance } from "./governance.ts";

/** The steps of the run; throws on the first refusal. Each step's time goes into `stepsMs`. */
async function runSteps(ctx: RunContext, stepsMs: Record<string, number>): Promise<void> {
  const timed = async <T>(step: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    try {
      return await fn();
    } finally {
      stepsMs[step] = Date.now() - t0;
    }
  };
  // 0. Listen for the agent (and relay its PSP) at once: the sandbox boots alongside us.
  const listeners = listenForAgent(ctx);
  // 1. The room: its digest computed here; every required collaborator's signature over it.
  await timed("room", () => checkRoom(ctx));
  // 2. Attestation: a report binding the audit key, so the trail's signatures name this VM.
  const attested = timed("attestation", () => attest(ctx));
  // 5 (its handshake): the sandbox proves itself beside steps 2-4, but is sent nothing before them
  // (its records follow the attestation's).
  const handshake = ctx.room.workload.service ? undefined : handshakeAgent(ctx, listeners, attested);
  handshake?.catch(() => undefined); // awaited at step 5; a refusal at steps 2-4 ends the run first
  await attested;
  // 3. Keys: each input's identity, and the room's own identity for secure outputs.
  const keys = await timed("keys", () => releaseKeys(ctx));
  // 4. Consent, asked by the firewall itself from its NIC; fail closed.
  await timed("consent", () => askConsent(ctx));
  // 5-8, a service room: the sandbox's server answers calls through the API until the pair stops.
  // (Loaded only here: gRPC's library is most of the firewall's code, and batch rooms never run it.)
  if (ctx.room.workload.service) return void (await (await import("./service-room.ts")).serveServiceRoom(ctx, keys, listeners));
  // 5. The sandbox: one agent, over the attested channel.
  const channel = await timed("agentChannel", () => openAgentChannel(ctx, handshake!));
  // 6-8. Inputs, workload (with egress), outputs.
  const { host, room, log, hold, audit, violations } = ctx;
  await timed("session", () => serveAgent(channel.stream, host, room, log, { hold, identities: keys.identities, ownerScopes: keys.ownerScopes, audit, violations, ...(keys.roomRecipient ? { roomRecipient: keys.roomRecipient } : {}), ...(keys.roomIdentity ? { roomIdentity: keys.roomIdentity } : {}) }));
}

/** Runs the room to its end and tells the host how it ended; resolves with the exit status. */
export async function runEnforcer(ctx: RunContext): Promise<number> {
  const { host, audit, log, violations } = ctx;
  let failure: AirlockError | undefined;
  const stepsMs: Record<string, number> = {};
  try {
    await runSteps(ctx, stepsMs);
  } catch (err) {
    failure = AirlockError.from(err);
    log.error({ code: failure.code }, "run refused or failed");
    await violations.flush(audit).catch(() => undefined);
    await audit.append("run.failed", { code: failure.code, reason: failure.message.slice(0, 1000) }).catch(() => undefined);
  }
  // The trail has gone to the host record by record; the signed "closed" record ends it, saying
  // whether the run completed (the exit status itself is in workload.exited, at the scope's rules).
  await audit.close({ completed: !failure });
  // The governance party's copy of the closed trail, and the metrics, from the NIC (when named).
  await reportToGovernance(ctx, { stepsMs, completed: !failure });
  await host.send({ case: "auditEnd", value: {} });
  if (failure) await host.send({ case: "refused", value: { code: errorCodeToWire(failure.code), reason: failure.message.slice(0, 2000) } });
  await host.send({ case: "done", value: { completed: !failure } });
  if (ctx.hold && !failure) {
    // `airlock up`: both VMs stay up with their results until the pair is stopped from the host.
    log.info("holding the pair until it is stopped");
    await new Promise(() => setInterval(() => {}, 60_000));
  }
  // An authenticated close, so the agent sees a clean end rather than a truncated channel.
  ctx.agentLink?.end();
  await new Promise((r) => setTimeout(r, 200));
  ctx.agentLink?.destroy();
  return failure ? 1 : 0;
}
