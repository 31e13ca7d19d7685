import { describe, expect, it } from "vitest";
import { teeOf } from "./index.ts";

describe("the TEE named on the kernel command line", () => {
  it("emulated when absent, else what airlock.tee= says; an unknown TEE is refused", () => {
    expect(teeOf("console=ttyS0 quiet")).toBe("emulated");
    expect(teeOf("")).toBe("emulated");
    expect(teeOf("quiet airlock.tee=emulated")).toBe("emulated");
    expect(teeOf("airlock.tee=snp quiet\n")).toBe("snp");
    expect(teeOf("airlock.tee=snp airlock.tee=emulated")).toBe("emulated");
    expect(() => teeOf("airlock.tee=tdx")).toThrow(/unknown TEE/);
    expect(() => teeOf("airlock.tee=")).toThrow(/unknown TEE/);
  });
});
