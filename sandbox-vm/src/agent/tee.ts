// Which report provider the agent uses, as the launch says (proto's teeOf: `airlock.tee=` on the
// measured kernel command line; absent means emulated, the images' default).
import { readFileSync } from "node:fs";
import { connectVsock } from "../../../proto/src/vsock-stream.ts";
import { FIREWALL_CID, SANDBOX_PSP_RELAY_PORT } from "../../../proto/src/control.ts";
import { ConfigfsTsmProvider, EmulatedPspProvider, teeOf, type ReportProvider } from "../../../proto/src/attestation/index.ts";

/** The agent's report provider: configfs-tsm on real SEV-SNP, else its emulated PSP relayed by the firewall. */
export function reportProvider(cmdline = readFileSync("/proc/cmdline", "utf8")): ReportProvider {
  if (teeOf(cmdline) === "snp") return new ConfigfsTsmProvider();
  return new EmulatedPspProvider({ connect: () => connectVsock(FIREWALL_CID, SANDBOX_PSP_RELAY_PORT, 10_000), timeoutMs: 20_000 });
}
