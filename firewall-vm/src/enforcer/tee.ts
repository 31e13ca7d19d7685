// Which report provider this VM uses, as the launch says (proto's teeOf: `airlock.tee=` on the
// measured kernel command line; absent means emulated, the images' default).
import { readFileSync } from "node:fs";
import { ConfigfsTsmProvider, teeOf, type ReportProvider } from "../../../proto/src/attestation/index.ts";
import { emulatedProvider } from "./keys.ts";

/** The firewall's report provider: configfs-tsm on real SEV-SNP, else the host's emulated PSP. */
export function reportProvider(cmdline = readFileSync("/proc/cmdline", "utf8")): ReportProvider {
  return teeOf(cmdline) === "snp" ? new ConfigfsTsmProvider() : emulatedProvider();
}
