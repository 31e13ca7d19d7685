// The room the host hands the firewall is hostile until parseRoom has checked it.
import { describe, expect, it } from "vitest";
import { parseRoom } from "./room.ts";

const room = {
  apiVersion: "airlock/v1",
  name: "hello",
  workload: { bundleTree: "0".repeat(64), command: ["/bin/true"], timeoutSeconds: 1 },
  inputs: [],
  outputs: [],
  attestation: { firewall: "a".repeat(96), sandbox: "b".repeat(96), broker: "c".repeat(64) },
};

describe("parseRoom", () => {
  it("refuses a room with no canonical form as GUEST_PROTOCOL, not a TypeError or a stack overflow (found by npm run fuzz)", () => {
    expect(parseRoom(JSON.parse(JSON.stringify(room))).digest).toMatch(/^[0-9a-f]{64}$/);
    // JSON.parse reads 1e999 as Infinity, which canonical JSON cannot write; deep nesting runs out of stack.
    for (const extra of ["1e999", `[${"[".repeat(20000)}${"]".repeat(20000)}]`]) {
      const text = JSON.stringify({ ...room, egress: "EXTRA" }).replace('"EXTRA"', extra);
      expect(() => parseRoom(JSON.parse(text))).toThrow(expect.objectContaining({ name: "AirlockError", code: "GUEST_PROTOCOL", message: expect.stringMatching(/no canonical JSON form/) }));
    }
  });
});
