// The attestation side of the agent↔enforcer channel (proto/src/channel): what each VM proves and
// what it demands of the other. Both ends use roomChannelOptions(); the trust each check gives
// (and does not give) is written down in firewall-vm/src/enforcer/README.md, "The agent link".
//  - Evidence: an SNP report from the VM's own provider, binding the channel's transcript.
//  - Root: on real SNP, AMD's roots. With the emulated PSP, the ARK that the VM's OWN report
//    chained to: both VMs' reports come from the same (host-run) emulated PSP, so a peer whose
//    report chains to another root is not from this room's launch.
//  - host_data: the room's manifest digest, given, or else read from the VM's own report (the
//    sandbox is never told the room; its own host_data is what it was launched for).
//  - measurement: the peer image's launch digest when known (the firewall knows the sandbox's);
//    otherwise any, and the one seen is returned so it can be recorded.
import { X509Certificate } from "node:crypto";
import { AirlockError } from "./errors.ts";
import { parseReport, ReportVerifier, type ReportProvider } from "./attestation/index.ts";
import { decodePspResponse, encodePspResponse, type ReportEvidence } from "./attestation/psp-wire.ts";
import type { ChannelOptions, PeerIdentity } from "./channel/index.ts";
import type { Logger } from "./log.ts";

export interface RoomPeer extends PeerIdentity {
  measurement: string;
  hostData: string;
}

/** The self-signed certificate of a chain (ASK then ARK, PEM), as PEM. */
function arkOf(chain: string | undefined): string {
  const pems = (chain ?? "").match(/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----/g) ?? [];
  for (const pem of pems) {
    const c = new X509Certificate(pem);
    if (c.subject === c.issuer) return pem;
  }
  throw new AirlockError("REPORT_INVALID", "our own emulated report came without a root certificate in its chain, so there is no root to hold the peer to");
}

export function roomChannelOptions(
  provider: ReportProvider,
  expected: { peer: string; measurement?: Buffer; hostData?: Buffer; timeoutMs?: number; log?: Logger },
): ChannelOptions<RoomPeer> {
  if (expected.measurement && expected.measurement.length !== 48) throw new AirlockError("INTERNAL", "roomChannelOptions: a measurement is 48 bytes");
  if (expected.hostData && expected.hostData.length !== 32) throw new AirlockError("INTERNAL", "roomChannelOptions: host_data is 32 bytes");
  // The handshake makes our evidence while the peer's travels; verifyPeer waits for ours to learn
  // our root (and host_data). A failure here fails verifyPeer too, so it is never left unhandled.
  let resolveOwn!: (e: ReportEvidence) => void;
  let rejectOwn!: (e: unknown) => void;
  const own = new Promise<ReportEvidence>((resolve, reject) => ((resolveOwn = resolve), (rejectOwn = reject)));
  own.catch(() => undefined);
  return {
    ...(expected.timeoutMs ? { timeoutMs: expected.timeoutMs } : {}),
    ...(expected.log ? { log: expected.log } : {}),
    async attest(reportData) {
      try {
        const evidence = await provider.getReport(reportData);
        resolveOwn(evidence);
        return encodePspResponse(evidence);
      } catch (err) {
        rejectOwn(err);
        throw err;
      }
    },
    async verifyPeer(evidence, reportData) {
      let decoded: ReportEvidence;
      try {
        decoded = decodePspResponse(evidence);
      } catch (err) {
        throw new AirlockError("REPORT_INVALID", `the ${expected.peer}'s evidence is malformed: ${(err as Error).message}`, { cause: err });
      }
      const mine = await own;
      const verifier = provider.kind === "emulated" ? new ReportVerifier({ trustRoots: [arkOf(mine.chain)] }) : new ReportVerifier();
      const hostData = expected.hostData ?? parseReport(mine.report).hostData;
      const result = verifier.verify(decoded, { reportData, hostData, ...(expected.measurement ? { measurement: expected.measurement } : {}) });
      if (!result.ok) throw new AirlockError("REPORT_REJECTED", `the ${expected.peer}'s attestation report rejected: ${result.failed?.check}: ${result.failed?.reason}`);
      return { name: expected.peer, measurement: result.report.measurement.toString("hex"), hostData: result.report.hostData.toString("hex") };
    },
  };
}
