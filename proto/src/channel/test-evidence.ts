// TEST ONLY. A stand-in for SEV-SNP evidence in unit tests and benches: an Ed25519 signature
// over the report data by a key that plays the part of "the expected measurement". It proves
// nothing about what runs where; never use it outside tests (production uses snp-evidence.ts).
//
//   evidence = "airlock-test-evidence" ‖ u8 name length ‖ name ‖ Ed25519 public[32]
//              ‖ reportData[64] ‖ signature[64] over everything before it
import { generateKeyPairSync, sign, verify } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { AirlockError } from "../errors.ts";
import type { Evidence, PeerIdentity } from "./handshake.ts";

const MAGIC = Buffer.from("airlock-test-evidence");

export interface TestIdentity {
  name: string;
  privateKey: KeyObject;
  publicRaw: Buffer;
}

export function testIdentity(name: string): TestIdentity {
  if (Buffer.byteLength(name) > 255) throw new AirlockError("INTERNAL", "test identity name too long");
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { name, privateKey, publicRaw: Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url") };
}

/** Evidence by `id` binding `reportData` (tests also use it to bind the wrong data on purpose). */
export function signTestEvidence(id: TestIdentity, reportData: Buffer): Evidence {
  const name = Buffer.from(id.name);
  const body = Buffer.concat([MAGIC, Buffer.from([name.length]), name, id.publicRaw, reportData]);
  return Buffer.concat([body, sign(null, body, id.privateKey)]);
}

/** attest() for ChannelOptions. */
export function testAttest(id: TestIdentity): (reportData: Buffer) => Promise<Evidence> {
  return async (reportData) => signTestEvidence(id, reportData);
}

/** verifyPeer() for ChannelOptions: accepts evidence signed by `trusted` and binding the expected data. */
export function testVerifyPeer(trusted: TestIdentity): (evidence: Evidence, expectedReportData: Buffer) => Promise<PeerIdentity> {
  const publicKey = { key: { kty: "OKP", crv: "Ed25519", x: trusted.publicRaw.toString("base64url") }, format: "jwk" } as const;
  return async (evidence, expected) => {
    const bad = (why: string): AirlockError => new AirlockError("REPORT_REJECTED", `test evidence: ${why}`);
    if (evidence.length < MAGIC.length + 1 + 32 + 64 + 64 || !evidence.subarray(0, MAGIC.length).equals(MAGIC)) throw bad("malformed");
    const nameLength = evidence[MAGIC.length]!;
    let off = MAGIC.length + 1;
    const name = evidence.subarray(off, (off += nameLength)).toString();
    const pub = evidence.subarray(off, (off += 32));
    const reportData = evidence.subarray(off, (off += 64));
    if (evidence.length !== off + 64) throw bad("malformed");
    if (!pub.equals(trusted.publicRaw)) throw bad(`made by ${JSON.stringify(name)}, not by the expected ${trusted.name}`);
    if (!verify(null, evidence.subarray(0, off), publicKey, evidence.subarray(off))) throw bad("signature does not verify with the trusted key");
    if (!reportData.equals(expected)) throw bad("report data does not bind this session's transcript");
    return { name };
  };
}
