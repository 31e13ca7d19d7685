// airlock's proto/enforcer/v1 against Encrypted Zone's own files (test/fixtures/ez-sdk): every
// message, field, enum value and method the SDK declares must be declared the same way here — same
// package and names, field numbers, types, cardinality — so a client built from the SDK's files
// speaks to the firewall unchanged. Then a request encoded with the SDK's descriptors decodes,
// checked, with ours, and an answer encoded with ours decodes with the SDK's.
import { describe, expect, it } from "vitest";
import { create, fromBinary, toBinary, type DescEnum, type DescFile, type DescMessage } from "@bufbuild/protobuf";
import { file_enforcer_v1_ez_service, CallRequestSchema, CallResponseSchema } from "../../proto/gen/enforcer/v1/ez_service_pb.ts";
import { decodeMessage } from "../../proto/src/wire.ts";
import { ezSdkModule } from "./ez-sdk.ts";

function shape(m: DescMessage): unknown {
  return {
    name: m.typeName,
    fields: m.fields.map((f) => ({ no: f.number, name: f.name, kind: f.fieldKind, scalar: "scalar" in f ? f.scalar : undefined, listKind: f.fieldKind === "list" ? f.listKind : undefined, mapKey: f.fieldKind === "map" ? f.mapKey : undefined, type: f.message?.typeName ?? f.enum?.typeName, proto3Optional: f.proto.proto3Optional })),
    nested: m.nestedMessages.map(shape),
    enums: m.nestedEnums.map(enumShape),
  };
}
const enumShape = (e: DescEnum): unknown => ({ name: e.typeName, values: e.values.map((v) => [v.name, v.number]) });

function everything(file: DescFile, seen = new Map<string, unknown>()): Map<string, unknown> {
  for (const m of file.messages) seen.set(m.typeName, shape(m));
  for (const e of file.enums) seen.set(e.typeName, enumShape(e));
  for (const s of file.services) seen.set(s.typeName, s.methods.map((x) => [x.name, x.methodKind, x.input.typeName, x.output.typeName]));
  for (const d of file.dependencies) if (d.name.startsWith("enforcer/")) everything(d, seen);
  return seen;
}

describe("enforcer.v1 as Encrypted Zone's SDK declares it", () => {
  it("declares every message, field, enum and method of the SDK's ez_service.proto and its imports the same way", async () => {
    const sdk = (await import(ezSdkModule())) as { file_enforcer_v1_ez_service: DescFile };
    const theirs = everything(sdk.file_enforcer_v1_ez_service);
    const ours = everything(file_enforcer_v1_ez_service);
    expect([...theirs.keys()].sort()).toEqual([...ours.keys()].sort());
    for (const [name, s] of theirs) expect(ours.get(name), name).toEqual(s);
  });

  it("decodes a request the SDK's descriptors encode, and the SDK decodes our answer", async () => {
    const sdk = (await import(ezSdkModule())) as { CallRequestSchema: DescMessage; CallResponseSchema: DescMessage };
    const req = toBinary(sdk.CallRequestSchema, create(sdk.CallRequestSchema, { operatorDomain: "d", publisherId: "p", isolateName: "i", serviceName: "demo.Echo", methodName: "Echo", sessionMetadata: { sessionId: 7n, ezClientUuid: new Uint8Array(16).fill(1) }, inputParams: { publicInput: new TextEncoder().encode("hi"), encryptedInput: [{ ciphertext: new Uint8Array([1, 2]), scope: { staticInfo: { scopeType: 3, scopeInstanceId: 9n, scopeOwner: { ownerUuid: new Uint8Array(16) } } } }], requestMetadata: { k: new Uint8Array([3]) } } }));
    const mine = decodeMessage(CallRequestSchema, req, "the caller");
    expect(mine).toMatchObject({ serviceName: "demo.Echo", methodName: "Echo", isolateName: "i", sessionMetadata: { sessionId: 7n } });
    expect(Buffer.from(mine.inputParams!.publicInput).toString()).toBe("hi");
    expect(mine.inputParams!.encryptedInput[0]!.scope!.staticInfo!.scopeType).toBe(3);
    const res = toBinary(CallResponseSchema, create(CallResponseSchema, { publicOutput: new TextEncoder().encode("ok"), responseMetadata: { "airlock-released": new TextEncoder().encode("public") } }));
    const theirs = fromBinary(sdk.CallResponseSchema, res) as unknown as { publicOutput: Uint8Array };
    expect(Buffer.from(theirs.publicOutput).toString()).toBe("ok");
  });
});
