// A quick pass of every fuzz target, so a decoder that starts crashing on hostile input fails CI
// fast: a few thousand cases each (fewer for the slow whole-file age and manifest targets), with
// the seed `npm run fuzz` uses by default. `npm run fuzz` runs the same targets at scale;
// AIRLOCK_FUZZ_SEED picks another seed here.
import { describe, expect, it } from "vitest";
import { RingFuzzer, prng } from "../../host-tools/src/fabric/ring-fuzz.ts";
import { checkSeeds, runDecoder, type CaseFailure } from "./engine.ts";
import { hexDump } from "./mutate.ts";
import { DECODER_TARGETS } from "./targets/index.ts";

const SEED = Number(process.env.AIRLOCK_FUZZ_SEED ?? 0x5eed);
const CASES = 2000;
/** Targets whose cases cost milliseconds (a whole age file, a manifest written to disk). */
const FEWER: Record<string, number> = { "age-decrypt": 400, manifest: 600 };

function explain(f: CaseFailure): string {
  return `${f.target} case ${f.index} (${f.kind}): ${f.message}\n${hexDump(f.input, 512)}\nreproduce: npm run fuzz -- --only ${f.target} --seed ${f.seed} --replay ${f.index}`;
}

describe(`fuzz targets, a quick pass (seed ${SEED})`, () => {
  it("ring: 3000 cases of a hostile guest's rings beside a well-behaved guest", () => {
    const fz = new RingFuzzer(prng(SEED));
    while (fz.cases < 3000) {
      const f = fz.episode();
      expect(f, f?.message).toBeNull();
    }
  });

  for (const factory of DECODER_TARGETS) {
    const cases = FEWER[factory.name] ?? CASES;
    it(`${factory.name}: ${cases} cases`, async () => {
      const t = await factory.create();
      try {
        await checkSeeds(t, 2000);
        const r = await runDecoder(t, { seed: SEED, cases, caseTimeoutMs: 2000 });
        expect(r.failures.map(explain)).toEqual([]);
        expect(r.cases).toBe(cases);
      } finally {
        await t.close?.();
      }
    });
  }
});
