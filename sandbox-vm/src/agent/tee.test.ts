import { describe, expect, it } from "vitest";
import { reportProvider } from "./tee.ts";

describe("the agent's report provider", () => {
  it("follows airlock.tee= on the kernel command line (proto's teeOf)", () => {
    expect(reportProvider("quiet").kind).toBe("emulated");
    expect(reportProvider("airlock.tee=snp").kind).toBe("configfs-tsm");
    expect(() => reportProvider("airlock.tee=tdx")).toThrow(/unknown TEE/);
  });
});
