// Every decoder `npm run fuzz` drives, in the order it runs them (the ring fuzzer comes first).
import type { TargetFactory } from "../engine.ts";
import { ageTargets } from "./age.ts";
import { attestationTargets } from "./attestation.ts";
import { fabricTargets } from "./fabric.ts";
import { fileTargets } from "./files.ts";
import { wireTargets } from "./wire.ts";

export const RING_TARGET = "ring";
export const RING_WHAT = "hostile guest rings and packets beside a well-behaved guest (host-tools/src/fabric/ring-fuzz.ts)";

export const DECODER_TARGETS: TargetFactory[] = [...fabricTargets, ...wireTargets, ...attestationTargets, ...ageTargets, ...fileTargets];
