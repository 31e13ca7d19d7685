// Which QEMU launches `--tee snp` guests. Debian 12's own QEMU (7.2, on PATH, which runs the
// emulated pairs) predates `sev-snp-guest` (QEMU 9.1), so host-tools/scripts/setup.sh unpacks
// Debian's QEMU 10.0 from bookworm-backports into a private prefix, PRIVATE_SNP_QEMU, beside it:
// nothing else on the host changes. This is the one place that chooses: AIRLOCK_SNP_QEMU when set
// (taken at its word), else the private copy, else qemu-system-x86_64 on PATH, whichever is new
// enough first; none is a TEE_UNSUPPORTED error that names what to install.
import { existsSync } from "node:fs";
import { AirlockError } from "../../../proto/src/errors.ts";
import { localQemuVersion, MIN_QEMU_SNP, parseQemuVersion, QEMU_SNP_BINARY } from "./snp-plan.ts";

export const SNP_QEMU_ENV = "AIRLOCK_SNP_QEMU";
/** Where setup.sh unpacks Debian's bookworm-backports QEMU 10.0 (`dpkg -x`, not installed). */
export const PRIVATE_SNP_QEMU_PREFIX = "/opt/airlock/qemu-10";
export const PRIVATE_SNP_QEMU = `${PRIVATE_SNP_QEMU_PREFIX}/usr/bin/qemu-system-x86_64`;

export interface SnpQemu {
  /** The executable to run (an absolute path, or a name looked up on PATH). */
  binary: string;
  /** Its version, "10.0.2". */
  version: string;
}

const INSTALL_HINT = `run host-tools/scripts/setup.sh (it unpacks Debian's QEMU 10.0 from bookworm-backports into ${PRIVATE_SNP_QEMU_PREFIX}), or set ${SNP_QEMU_ENV} to a qemu-system-x86_64 of version ${MIN_QEMU_SNP.replace(/\.0$/, "")} or later`;

const atLeast = (version: string, min: string): boolean => {
  const [h, w] = [parseQemuVersion(version), parseQemuVersion(min)];
  for (let i = 0; i < 3; i++) if (h[i] !== w[i]) return h[i]! > w[i]!;
  return true;
};

/** The QEMU that launches SNP guests, with its version; refuses, naming what to install, when none is new enough. */
export async function findSnpQemu(env: NodeJS.ProcessEnv = process.env): Promise<SnpQemu> {
  const chosen = env[SNP_QEMU_ENV];
  if (chosen !== undefined && chosen !== "") {
    let version: string;
    try {
      version = await localQemuVersion(chosen);
    } catch (err) {
      throw new AirlockError("TEE_UNSUPPORTED", `${SNP_QEMU_ENV}=${chosen} does not run: ${AirlockError.from(err).message}`, { hint: INSTALL_HINT, cause: err });
    }
    if (!atLeast(version, MIN_QEMU_SNP)) throw new AirlockError("TEE_UNSUPPORTED", `${SNP_QEMU_ENV}=${chosen} is QEMU ${version}, which cannot launch an SEV-SNP guest (sev-snp-guest): it needs QEMU ${MIN_QEMU_SNP} or later`, { hint: INSTALL_HINT });
    return { binary: chosen, version };
  }
  const seen: string[] = [];
  for (const binary of [PRIVATE_SNP_QEMU, QEMU_SNP_BINARY]) {
    if (binary.startsWith("/") && !existsSync(binary)) {
      seen.push(`${binary} is not installed`);
      continue;
    }
    try {
      const version = await localQemuVersion(binary);
      if (atLeast(version, MIN_QEMU_SNP)) return { binary, version };
      seen.push(`${binary} is QEMU ${version}`);
    } catch (err) {
      seen.push(`${binary} does not run (${AirlockError.from(err).message})`);
    }
  }
  throw new AirlockError("TEE_UNSUPPORTED", `no QEMU here can launch an SEV-SNP guest (sev-snp-guest needs QEMU ${MIN_QEMU_SNP} or later): ${seen.join("; ")}`, { hint: INSTALL_HINT });
}
