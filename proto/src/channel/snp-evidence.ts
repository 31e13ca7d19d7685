// The channel's evidence in production: an SEV-SNP report from a ReportProvider (configfs-tsm in a
// real guest, the emulated PSP otherwise) with its VCEK and chain, encoded with the PSP wire codec
// (psp-wire.ts: one home for that encoding). The checks are the caller's verifier (host-tools'
// ReportVerifier fits SnpReportChecker) plus what the channel needs: report_data = this session's
// binding, and the expected measurement and host_data of that peer.
import { AirlockError } from "../errors.ts";
import type { ReportProvider } from "../attestation/provider.ts";
import { decodePspResponse, encodePspResponse } from "../attestation/psp-wire.ts";
import type { ReportEvidence } from "../attestation/psp-wire.ts";
import type { Evidence, PeerIdentity } from "./handshake.ts";

/** The part of a report verifier the channel uses (host-tools' ReportVerifier has this shape). */
export interface SnpReportChecker {
  verify(
    evidence: ReportEvidence,
    expectations: { reportData: Buffer; measurement: Buffer; hostData: Buffer },
  ): { ok: boolean; failed?: { check: string; reason: string } };
}

export interface SnpPeerIdentity extends PeerIdentity {
  measurement: string;
}

/** attest() for ChannelOptions: a fresh report binding reportData. */
export function snpAttest(provider: ReportProvider): (reportData: Buffer) => Promise<Evidence> {
  return async (reportData) => encodePspResponse(await provider.getReport(reportData));
}

/**
 * verifyPeer() for ChannelOptions. `expected` is what the peer must be: the SNP launch digest of
 * its image (48 bytes) and the room's manifest digest as host_data (32 bytes).
 */
export function snpVerifyPeer(checker: SnpReportChecker, expected: { name: string; measurement: Buffer; hostData: Buffer }): (evidence: Evidence, expectedReportData: Buffer) => Promise<SnpPeerIdentity> {
  if (expected.measurement.length !== 48 || expected.hostData.length !== 32) throw new AirlockError("INTERNAL", "snpVerifyPeer: measurement must be 48 bytes and hostData 32");
  return async (evidence, reportData) => {
    let decoded: ReportEvidence;
    try {
      decoded = decodePspResponse(evidence);
    } catch (err) {
      throw new AirlockError("REPORT_INVALID", `${expected.name}'s evidence is malformed: ${(err as Error).message}`, { cause: err });
    }
    const result = checker.verify(decoded, { reportData, measurement: expected.measurement, hostData: expected.hostData });
    if (!result.ok) throw new AirlockError("REPORT_REJECTED", `${expected.name}'s attestation report rejected: ${result.failed?.check}: ${result.failed?.reason}`);
    return { name: expected.name, measurement: expected.measurement.toString("hex") };
  };
}
