// Steps 5-8 of a service room (../proxies/service/README.md): instead of one run, the sandbox's
// workload serves calls for as long as the pair lives. The firewall makes the API's keys (a TLS
// key and an age identity for scoped inputs), binds them to its attestation report with the audit
// key, starts a sandbox instance (the attested channel, Run with the service port, ServerListening)
// and serves the public API on its NIC. A reset retires the instance: the host restarts the
// sandbox VM from its measured image, whose agent attests afresh before it is sent anything.
import { createPublicKey, generateKeyPairSync, sign } from "node:crypto";
import { AirlockError } from "../../../proto/src/errors.ts";
import { X25519Identity } from "../../../proto/src/age/index.ts";
import { selfSignedCertificate, spkiSha256 } from "../../../proto/src/tls-cert.ts";
import { scopeToWire, SERVICE_API_PORT, serviceBinding } from "../../../proto/src/service.ts";
import { roomBytes } from "../../../proto/src/room.ts";
import { IsolateState } from "../../../proto/gen/enforcer/v1/isolate_state_pb.ts";
import { EzIsolateHealth_ContainerRunStatus_Status as RunStatus } from "../../../proto/gen/enforcer/v1/isolate_health_pb.ts";
import { scopeRank } from "../policy/index.ts";
import { handshakeAgent, listenForAgent, openAgentChannel, type AgentListeners } from "./agent-channel.ts";
import type { RunContext } from "./context.ts";
import type { ReleasedKeys } from "./key-release.ts";
import { SandboxInstance } from "../proxies/service/sandbox.ts";
import { ServiceCalls } from "../proxies/service/calls.ts";
import { startApi } from "../proxies/service/api.ts";
import type { AuditAppend } from "../proxies/http/proxy.ts";

/** How long a reset may take: a new sandbox VM booted, attested and its server listening. */
const RESET_BOUND_S = 240;

/** Serves the room's API until the VM is stopped; throws when it cannot serve at all. */
export async function serveServiceRoom(ctx: RunContext, keys: ReleasedKeys, firstListeners: AgentListeners): Promise<never> {
  const { room, host, audit, log } = ctx;
  const service = room.workload.service!;
  if (!ctx.evidence) throw new AirlockError("INTERNAL", "a service room needs the firewall's attestation evidence");

  // The API's keys, made here and never leaving the VM; the audit key (which the report binds) signs their hashes.
  const tlsKey = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const now = Date.now();
  const certPem = selfSignedCertificate({ ...tlsKey, commonName: `${room.name}.airlock`, dnsNames: ["localhost", `${room.name}.airlock`], ipAddresses: ["127.0.0.1"], notBefore: new Date(now - 3600_000), notAfter: new Date(now + 365 * 86400_000) });
  const tlsSpki = spkiSha256(tlsKey.publicKey);
  const inputIdentity = X25519Identity.generate();
  const inputRecipient = inputIdentity.recipient.toString();
  const binding = sign(null, serviceBinding(room.digest, tlsSpki, inputRecipient), ctx.key.privateKey);
  const auditSpki = createPublicKey(ctx.key.privateKey).export({ type: "spki", format: "der" });
  await audit.append("service.keys", { apiTlsSpkiSha256: tlsSpki, inputRecipient, tls: service.api.tls });

  let generation = 0;
  let state: IsolateState = IsolateState.STARTING;
  let resetting = false;
  const startInstance = async (listeners: AgentListeners): Promise<SandboxInstance> => {
    generation++;
    state = IsolateState.STARTING;
    const channel = await openAgentChannel(ctx, handshakeAgent(ctx, listeners, Promise.resolve()));
    const inst = await SandboxInstance.start(generation, channel.stream, room, () => host.send({ case: "sandboxReady", value: {} }));
    await audit.append("service.ready", { generation, port: service.port });
    state = IsolateState.READY;
    return inst;
  };
  let instance = await startInstance(firstListeners);

  const calls: ServiceCalls = new ServiceCalls({
    service,
    inputIdentity,
    ...(keys.roomRecipient ? { roomRecipient: keys.roomRecipient } : {}),
    audit: audit as unknown as AuditAppend,
    log,
    instance: () => instance,
    onStats: (s) => {
      if (scopeRank(calls.data.scope) > scopeRank("DOMAIN_OWNED")) state = IsolateState.SERVING;
      void host.send({ case: "serviceStats", value: { served: BigInt(s.served), refused: BigInt(s.refused), resets: BigInt(s.resets) } }).catch(() => undefined);
    },
    reset: async (reason) => {
      resetting = true;
      state = IsolateState.RETIRING;
      try {
        await audit.append("service.reset", { reason, generation, scopeBefore: calls.data.scope });
        // Listen for the new agent before the old one goes, then ask the host for the new VM.
        const listeners = listenForAgent(ctx);
        await host.send({ case: "resetSandbox", value: {} });
        instance.close();
        // Bounded: a new sandbox that never serves leaves the old one retired, and calls refused.
        let timer: NodeJS.Timeout | undefined;
        try {
          instance = await Promise.race([startInstance(listeners), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new AirlockError("TIMEOUT", `the new sandbox did not serve within ${RESET_BOUND_S} s`)), RESET_BOUND_S * 1000)))]);
        } finally {
          clearTimeout(timer);
        }
        await host.send({ case: "serviceReady", value: { apiPort: SERVICE_API_PORT, tls: service.api.tls, apiTlsSpkiSha256: service.api.tls ? tlsSpki : "" } });
      } finally {
        resetting = false;
      }
    },
  });

  const report = ctx.evidence;
  await startApi({
    port: SERVICE_API_PORT,
    ...(service.api.tls ? { tls: { keyPem: tlsKey.privateKey.export({ type: "pkcs8", format: "pem" }).toString(), certPem } } : {}),
    calls,
    streamIdleSeconds: 2 * service.callTimeoutSeconds,
    log,
    evidence: () => ({ report: report.report, vcek: report.vcek, chain: report.chain ?? "", roomCanonicalJson: roomBytes(room.canonical), auditKeySpki: auditSpki, apiTlsSpkiSha256: tlsSpki, inputRecipient, binding, tee: ctx.provider.kind === "emulated" ? "emulated" : "snp" }),
    health: () => {
      // The enforcer's own state; the workload's exit status only while its scope allows clear data out.
      const exit = instance.exitCode;
      const shownExit = exit !== undefined && scopeRank(calls.data.scope) <= scopeRank("DOMAIN_OWNED") ? { exitCode: exit } : {};
      return {
        healthReport: {
          isolates: [{
            isolateId: `${room.name}-sandbox-${generation}`,
            state,
            containerRunStatus: { status: instance.broken ? (exit !== undefined ? RunStatus.EXITED : RunStatus.NOT_FOUND) : RunStatus.RUNNING, ...shownExit },
            containerResetRequested: resetting,
            services: [...new Set(service.methods.map((m) => m.service))].map((s) => ({ operatorDomain: room.name, serviceName: s })),
            currentScope: scopeToWire(calls.data.scope),
          }],
          startTimestamp: BigInt(now),
          endTimestamp: BigInt(Date.now()),
        },
      };
    },
  });
  await host.send({ case: "serviceReady", value: { apiPort: SERVICE_API_PORT, tls: service.api.tls, apiTlsSpkiSha256: service.api.tls ? tlsSpki : "" } });
  log.info({ port: SERVICE_API_PORT }, "serving the room's API");
  // Serves until the pair is stopped (the host kills the VM); nothing else ends a service room.
  return new Promise<never>(() => setInterval(() => {}, 60_000));
}
