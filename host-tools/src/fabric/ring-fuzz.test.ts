// Randomized hostile-guest test: a guest (A) that writes garbage into its rings and packet headers
// while a well-behaved guest (B) shares the fabric with it. Thousands of cases; for each: nothing
// throws out of the device, no byte outside A's RAM changes (guard zones), B is never cut off and
// keeps routing, and A is cut off whenever its ring breaks a rule the device must catch. The case
// generator and checks live in ring-fuzz.ts (`npm run fuzz` drives them at scale).
// AIRLOCK_FUZZ_SEED / AIRLOCK_FUZZ_EPISODES reproduce or extend a run.
import { describe, expect, it } from "vitest";
import { RingFuzzer, prng } from "./ring-fuzz.ts";

const SEED = Number(process.env.AIRLOCK_FUZZ_SEED ?? 0x5eed);
const EPISODES = Number(process.env.AIRLOCK_FUZZ_EPISODES ?? 3000);

describe("virtqueues under a hostile guest", () => {
  it(`survives ${EPISODES} episodes of malformed rings and packets (seed ${SEED})`, () => {
    const fuzzer = new RingFuzzer(prng(SEED));
    for (let ep = 0; ep < EPISODES; ep++) {
      const failure = fuzzer.episode();
      expect(failure, failure?.message).toBeNull();
    }
    console.log(`ring fuzz: ${fuzzer.cases} cases, ${fuzzer.cutOff} episodes ended with the hostile guest cut off`);
    expect(fuzzer.cases).toBeGreaterThan(5000);
    expect(fuzzer.cutOff).toBeGreaterThan(EPISODES / 4);
  });
});
