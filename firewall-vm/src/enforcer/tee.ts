// Which report provider this VM uses, as the launch says: `airlock.tee=emulated|snp` on the kernel
// command line, which is part of the launch measurement (so the host cannot change it unseen).
// Absent means emulated, the images' default (images/recipes.ts sets no airlock.tee today); any
// other value is refused. The sandbox agent reads it the same way (sandbox-vm/src/agent/tee.ts).
import { readFileSync } from "node:fs";
import { AirlockError } from "../../../proto/src/errors.ts";
import { ConfigfsTsmProvider, type ReportProvider } from "../../../proto/src/attestation/index.ts";
import { emulatedProvider } from "./keys.ts";

export type Tee = "emulated" | "snp";

/** The TEE a kernel command line names (the last airlock.tee= wins, as for the kernel's own parameters). */
export function teeOf(cmdline: string): Tee {
  let tee: string | undefined;
  for (const word of cmdline.trim().split(/\s+/)) if (word.startsWith("airlock.tee=")) tee = word.slice("airlock.tee=".length);
  if (tee === undefined || tee === "emulated") return "emulated";
  if (tee === "snp") return "snp";
  throw new AirlockError("LAUNCH", `the kernel command line names an unknown TEE airlock.tee=${JSON.stringify(tee.slice(0, 40))} (expected emulated or snp)`);
}

/** The firewall's report provider: configfs-tsm on real SEV-SNP, else the host's emulated PSP. */
export function reportProvider(cmdline = readFileSync("/proc/cmdline", "utf8")): ReportProvider {
  return teeOf(cmdline) === "snp" ? new ConfigfsTsmProvider() : emulatedProvider();
}
