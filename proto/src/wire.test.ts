import { create, getOption, ScalarType, toBinary, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { bounds } from "../gen/airlock/v1/bounds_pb.ts";
import { file_airlock_v1_agent, AgentToFirewallSchema, RunSchema } from "../gen/airlock/v1/agent_pb.ts";
import { file_airlock_v1_control, FirewallToHostSchema, HostToFirewallSchema } from "../gen/airlock/v1/control_pb.ts";
import { ErrorCode } from "../gen/airlock/v1/errors_pb.ts";
import { file_airlock_v1_psp } from "../gen/airlock/v1/psp_pb.ts";
import { file_airlock_v1_service } from "../gen/airlock/v1/service_pb.ts";
import { ERROR_CODES, errorCodeFromWire, errorCodeToWire } from "./errors.ts";
import { decodeMessage, encodeMessage } from "./wire.ts";

const CONTRACTS = [file_airlock_v1_control, file_airlock_v1_agent, file_airlock_v1_psp, file_airlock_v1_service];
const allFields = (): { message: DescMessage; field: DescField }[] => CONTRACTS.flatMap((f) => f.messages.flatMap((message) => message.fields.map((field) => ({ message, field }))));
const LONG = [ScalarType.INT64, ScalarType.UINT64, ScalarType.SINT64, ScalarType.FIXED64, ScalarType.SFIXED64];

describe("the contracts' declarations", () => {
  it("bound every string, bytes, list and map field, and keep 64-bit fields exact as numbers", () => {
    const unbounded: string[] = [];
    for (const { message, field } of allFields()) {
      const b = getOption(field, bounds);
      const name = `${message.typeName}.${field.name}`;
      if (field.fieldKind === "list" || field.fieldKind === "map") {
        if (b.maxCount === 0) unbounded.push(`${name}: no max_count`);
        if ((field.fieldKind === "list" ? field.listKind : field.mapKind) === "scalar" && b.maxLen === 0) unbounded.push(`${name}: no max_len for its entries`);
      } else if (field.fieldKind === "scalar") {
        if ((field.scalar === ScalarType.STRING || field.scalar === ScalarType.BYTES) && b.maxLen === 0) unbounded.push(`${name}: no max_len`);
        if (LONG.includes(field.scalar) && (b.max === 0n || b.max > 2n ** 53n)) unbounded.push(`${name}: 64-bit without a max below 2^53`);
      }
    }
    expect(unbounded).toEqual([]);
  });

  it("declare each error code once, the same on the wire as in errors.ts", () => {
    const wire = Object.keys(ErrorCode).filter((k) => Number.isNaN(Number(k)) && k !== "UNSPECIFIED");
    expect(wire.sort()).toEqual(Object.keys(ERROR_CODES).sort());
    for (const code of Object.keys(ERROR_CODES) as (keyof typeof ERROR_CODES)[]) {
      expect(errorCodeToWire(code), code).toBe(ErrorCode[code]);
      expect(errorCodeFromWire(errorCodeToWire(code))).toBe(code);
    }
    expect(errorCodeFromWire(ErrorCode.UNSPECIFIED)).toBe("INTERNAL");
    expect(errorCodeFromWire(999 as ErrorCode)).toBe("INTERNAL");
  });
});

describe("decoding a peer's message", () => {
  const encode = (schema: DescMessage, init: Record<string, unknown>): Uint8Array => toBinary(schema, create(schema, init));

  it("accepts what the declaration allows and round-trips it", () => {
    const bytes = encodeMessage(FirewallToHostSchema, { body: { case: "outputDecided", value: { output: "counts", decision: 2, reason: "sealed", sealedBytes: 16_512n } } });
    const m = decodeMessage(FirewallToHostSchema, bytes, "the firewall");
    expect(m.body.case).toBe("outputDecided");
    expect(m.body.value).toMatchObject({ output: "counts", decision: 2, sealedBytes: 16_512n });
  });

  it.each([
    ["an unknown field, by its number", HostToFirewallSchema, Buffer.from([0x2a, 0x00]), /HostToFirewall.#5 is not a field of airlock.v1.HostToFirewall/],
    ["an unknown field inside a message", FirewallToHostSchema, Buffer.from([0x8a, 0x01, 0x02, 0x10, 0x01]) /* done (field 17) { #2: 1 } */, /FirewallToHost.done.#2 is not a field/],
    ["an empty message (no body)", FirewallToHostSchema, Buffer.alloc(0), /FirewallToHost.body must be set/],
    ["an enum's zero", FirewallToHostSchema, encode(FirewallToHostSchema, { body: { case: "refused", value: { code: 0, reason: "x" } } }), /FirewallToHost.refused.code is not one of its enum's values/],
    ["an enum value not declared", FirewallToHostSchema, encode(FirewallToHostSchema, { body: { case: "refused", value: { code: 999, reason: "x" } } }), /FirewallToHost.refused.code is not one of/],
    ["a string over its bound", FirewallToHostSchema, encode(FirewallToHostSchema, { body: { case: "openFile", value: { output: "o", path: "a".repeat(1025), size: 1n } } }), /FirewallToHost.open_file.path is longer than 1024 bytes/],
    ["a string not in its format", FirewallToHostSchema, encode(FirewallToHostSchema, { body: { case: "sealedBegin", value: { output: "../x" } } }), /FirewallToHost.sealed_begin.output must be a lower-case name/],
    ["a NUL in a string", AgentToFirewallSchema, encode(AgentToFirewallSchema, { body: { case: "hello", value: { agent: "a\0b" } } }), /AgentToFirewall.hello.agent must not contain NUL/],
    ["an integer past its bound", AgentToFirewallSchema, encode(AgentToFirewallSchema, { body: { case: "exit", value: { code: 256 } } }), /AgentToFirewall.exit.code must be from 0 to 255/],
    ["a 64-bit count past 2^53", AgentToFirewallSchema, encode(AgentToFirewallSchema, { body: { case: "stray", value: { count: 2n ** 60n } } }), /AgentToFirewall.stray.count must be from 0 to/],
    ["invalid UTF-8", AgentToFirewallSchema, Buffer.from([0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28]), /not a well-formed AgentToFirewall/],
    ["a length past the end", AgentToFirewallSchema, Buffer.from([0x0a, 0x7f, 0x0a]), /not a well-formed AgentToFirewall/],
  ])("refuses %s, naming the field", (_what, schema, bytes, error) => {
    expect(() => decodeMessage(schema, bytes, "the peer")).toThrow(error);
    try {
      decodeMessage(schema, bytes, "the peer");
    } catch (err) {
      expect((err as { code: string }).code).toBe("GUEST_PROTOCOL");
    }
  });

  it("never quotes the peer's data, only the field's path", () => {
    const secret = "SECRET-5e1f";
    for (const value of [{ output: `${secret}/x` }, { output: `${secret}`.repeat(10) }]) {
      const bytes = encode(FirewallToHostSchema, { body: { case: "sealedBegin", value } });
      expect(() => decodeMessage(FirewallToHostSchema, bytes, "the firewall")).toThrow(expect.objectContaining({ message: expect.not.stringContaining(secret) }));
    }
    const env = encode(RunSchema, { command: ["x"], timeoutSeconds: 1, roomCanonicalJson: Buffer.from("{}"), env: { [`${secret}=`]: "1" } });
    expect(() => decodeMessage(RunSchema, env, "the firewall")).toThrow(expect.objectContaining({ message: expect.not.stringContaining(secret) }));
  });

  it("refuses to send what the declaration does not allow", () => {
    expect(() => encodeMessage(AgentToFirewallSchema, { body: { case: "exit", value: { code: 300 } } })).toThrow(expect.objectContaining({ code: "INTERNAL" }));
  });
});
