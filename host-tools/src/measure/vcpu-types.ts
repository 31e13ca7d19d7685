// vCPU signatures (CPUID Fn0000_0001_EAX) that QEMU puts in RDX of the initial VMSA. The names are
// the QEMU CPU models sev-snp-measure's vcpu_types.py lists; the VMSA, and so the digest, depends
// only on the signature.
import { AirlockError } from "../../../proto/src/errors.ts";

/** The 32-bit CPUID signature from family, model and stepping (AMD CPUID spec, pub. 25481). */
export function cpuSig(family: number, model: number, stepping: number): number {
  // The widest values the signature can encode: family 0xf + 0xff extended, model 8 bits, stepping 4 bits.
  const limits = { family: 0xf + 0xff, model: 0xff, stepping: 0xf };
  for (const [name, v] of [["family", family], ["model", model], ["stepping", stepping]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > limits[name]) {
      throw new AirlockError("MEASURE", `vCPU ${name} must be an integer from 0 to ${limits[name]}, got ${v}`);
    }
  }
  const [familyLow, familyHigh] = family > 0xf ? [0xf, (family - 0xf) & 0xff] : [family, 0];
  const modelLow = model & 0xf;
  const modelHigh = (model >> 4) & 0xf;
  const steppingLow = stepping & 0xf;
  return ((familyHigh << 20) | (modelHigh << 16) | (familyLow << 8) | (modelLow << 4) | steppingLow) >>> 0;
}

const EPYC = cpuSig(23, 1, 2);
const ROME = cpuSig(23, 49, 0);
const MILAN = cpuSig(25, 1, 1);
const GENOA = cpuSig(25, 17, 0);
const TURIN = cpuSig(26, 0, 0);

/** QEMU CPU model name → signature, as sev-snp-measure lists them. */
export const VCPU_TYPES: Readonly<Record<string, number>> = Object.freeze({
  EPYC: EPYC,
  "EPYC-v1": EPYC,
  "EPYC-v2": EPYC,
  "EPYC-IBPB": EPYC,
  "EPYC-v3": EPYC,
  "EPYC-v4": EPYC,
  "EPYC-Rome": ROME,
  "EPYC-Rome-v1": ROME,
  "EPYC-Rome-v2": ROME,
  "EPYC-Rome-v3": ROME,
  "EPYC-Milan": MILAN,
  "EPYC-Milan-v1": MILAN,
  "EPYC-Milan-v2": MILAN,
  "EPYC-Genoa": GENOA,
  "EPYC-Genoa-v1": GENOA,
  "EPYC-Turin": TURIN,
  "EPYC-Turin-v1": TURIN,
});

/** The signature of a named vCPU type (case-insensitive); an unknown name is a MEASURE error listing the known ones. */
export function vcpuSigByType(name: string): number {
  const key = Object.keys(VCPU_TYPES).find((k) => k.toLowerCase() === name.toLowerCase());
  if (key === undefined) {
    throw new AirlockError("MEASURE", `unknown vCPU type ${JSON.stringify(name)}`, {
      hint: `use one of ${Object.keys(VCPU_TYPES).join(", ")}, or give --vcpu-sig / --vcpu-family, --vcpu-model, --vcpu-stepping`,
    });
  }
  return VCPU_TYPES[key]!;
}
