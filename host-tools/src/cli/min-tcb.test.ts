import { describe, expect, it } from "vitest";
import { parseMinTcb } from "./min-tcb.ts";

describe("parseMinTcb", () => {
  it("parses --min-tcb forms", () => {
    expect(parseMinTcb("bootloader=3,snp=8", "milan")).toEqual({ bootloader: 3, snp: 8 });
    expect(parseMinTcb("0x7308000000000003", "milan")).toEqual({ bootloader: 3, tee: 0, snp: 8, microcode: 115 });
  });

  it("refuses anything else as a usage error", () => {
    expect(() => parseMinTcb("snp=x", "milan")).toThrow(expect.objectContaining({ code: "USAGE", message: expect.stringMatching(/^--min-tcb "snp=x": expected/) }));
    expect(() => parseMinTcb("snp=256", "milan")).toThrow(expect.objectContaining({ code: "USAGE" }));
    expect(() => parseMinTcb("0x7308000000000003", undefined)).toThrow(expect.objectContaining({ code: "USAGE", message: expect.stringMatching(/needs --product/) }));
  });
});
