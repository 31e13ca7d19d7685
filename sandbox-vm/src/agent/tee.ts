// Which report provider the agent uses, as the launch says: `airlock.tee=emulated|snp` on the
// kernel command line, part of the launch measurement. Absent means emulated, the images' default;
// any other value is refused. The same rule as the firewall's (firewall-vm/src/enforcer/tee.ts).
import { readFileSync } from "node:fs";
import { connectVsock } from "../../../proto/src/vsock-stream.ts";
import { FIREWALL_CID, SANDBOX_PSP_RELAY_PORT } from "../../../proto/src/control.ts";
import { ConfigfsTsmProvider, EmulatedPspProvider, type ReportProvider } from "../../../proto/src/attestation/index.ts";

export type Tee = "emulated" | "snp";

/** The TEE a kernel command line names (the last airlock.tee= wins, as for the kernel's own parameters). */
export function teeOf(cmdline: string): Tee {
  let tee: string | undefined;
  for (const word of cmdline.trim().split(/\s+/)) if (word.startsWith("airlock.tee=")) tee = word.slice("airlock.tee=".length);
  if (tee === undefined || tee === "emulated") return "emulated";
  if (tee === "snp") return "snp";
  throw new Error(`the kernel command line names an unknown TEE airlock.tee=${JSON.stringify(tee.slice(0, 40))} (expected emulated or snp)`);
}

/** The agent's report provider: configfs-tsm on real SEV-SNP, else its emulated PSP relayed by the firewall. */
export function reportProvider(cmdline = readFileSync("/proc/cmdline", "utf8")): ReportProvider {
  if (teeOf(cmdline) === "snp") return new ConfigfsTsmProvider();
  return new EmulatedPspProvider({ connect: () => connectVsock(FIREWALL_CID, SANDBOX_PSP_RELAY_PORT, 10_000), timeoutMs: 20_000 });
}
