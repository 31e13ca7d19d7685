// Step 2: attestation. A report binding the audit key, so the trail's signatures name this VM; its
// host_data must be the room's digest and its measurement the firewall image the room pins.
import { AirlockError } from "../../../proto/src/errors.ts";
import { parseReport } from "../../../proto/src/attestation/index.ts";
import { AUDIT_KINDS } from "../../../proto/src/audit/index.ts";
import type { RunContext } from "./context.ts";

export async function attest(ctx: RunContext): Promise<void> {
  const { room, audit, key, provider } = ctx;
  const evidence = await provider.getReport(key.reportData);
  // A service room publishes it to its callers (proxies/service/evidence.ts).
  ctx.evidence = evidence;
  const report = parseReport(evidence.report);
  await audit.append(AUDIT_KINDS.attestation, {
    provider: provider.kind,
    measurement: report.measurement.toString("hex"),
    hostData: report.hostData.toString("hex"),
    auditKeySpkiSha256: key.spkiSha256,
    report: evidence.report.toString("base64"),
    // What a verifier needs offline (`airlock audit verify`): the VCEK that signed the report and
    // the ASK+ARK the provider returned (absent from configfs-tsm without a host chain: AMD's then).
    vcek: evidence.vcek.toString("base64"),
    ...(evidence.chain ? { chain: evidence.chain } : {}),
  });
  if (report.hostData.toString("hex") !== room.digest) throw new AirlockError("REPORT_REJECTED", "this VM's host_data is not the digest of the room it was sent: the host swapped the room");
  if (report.measurement.toString("hex") !== room.attestation.firewall) throw new AirlockError("REPORT_REJECTED", "this firewall's launch measurement is not the one the signed room pins: the host launched another firewall image");
}
