import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { readFrames } from "../framing.ts";
import { newX25519, releaseTranscript, reportDataFor, unwrapKey, wrapKey } from "./kbs-wire.ts";
import { decodePspRequest, decodePspResponse, encodePspRequest, encodePspResponse, nextFrame } from "./psp-wire.ts";
import { REPORT_SIZE } from "./report.ts";
import { create, toBinary } from "@bufbuild/protobuf";
import { PspRequestSchema, PspResponseSchema } from "../../gen/airlock/v1/psp_pb.ts";

describe("emulated PSP wire format", () => {
  it("round-trips requests and responses", () => {
    const req = { vmpl: 2, reportData: Buffer.alloc(64, 9) };
    expect(decodePspRequest(encodePspRequest(req))).toEqual(req);
    const ev = { report: Buffer.alloc(REPORT_SIZE, 1), vcek: Buffer.from("vcek"), chain: "PEM" };
    expect(decodePspResponse(encodePspResponse(ev))).toEqual(ev);
    expect(() => decodePspResponse(encodePspResponse({ error: "no" }))).toThrow(/emulated PSP refused: no/);
  });

  it("refuses hostile requests and responses, naming the field", () => {
    const req = encodePspRequest({ vmpl: 0, reportData: Buffer.alloc(64) });
    expect(() => decodePspRequest(req.subarray(1))).toThrow(/PSP request: not a well-formed PspRequest/);
    expect(() => decodePspRequest(toBinary(PspRequestSchema, create(PspRequestSchema, { vmpl: 4, reportData: Buffer.alloc(64) })))).toThrow(/PspRequest.vmpl must be from 0 to 3/);
    expect(() => decodePspRequest(toBinary(PspRequestSchema, create(PspRequestSchema, { reportData: Buffer.alloc(63) })))).toThrow(/PspRequest.report_data is shorter than 64/);
    expect(() => decodePspRequest(Buffer.concat([req, Buffer.from([0x18, 0x01])]))).toThrow(/PspRequest.#3 is not a field/);
    const res = encodePspResponse({ report: Buffer.alloc(REPORT_SIZE), vcek: Buffer.from("v") });
    expect(() => decodePspResponse(res.subarray(0, res.length - 1))).toThrow(/not a well-formed PspResponse/);
    const evidence = (report: Buffer) => toBinary(PspResponseSchema, create(PspResponseSchema, { result: { case: "evidence", value: { report, vcek: Buffer.from("v") } } }));
    expect(() => decodePspResponse(Buffer.from(evidence(Buffer.alloc(10))))).toThrow(/PspResponse.evidence.report is shorter than 1184/);
    expect(() => decodePspResponse(Buffer.alloc(0))).toThrow(/PspResponse.result must be set/);
  });

  it("bounds the wait for a frame", async () => {
    const s = new PassThrough();
    const frames = readFrames(s)[Symbol.asyncIterator]();
    await expect(nextFrame(frames, 50)).rejects.toThrow(/no complete frame within 50 ms/);
    s.destroy();
  });
});

describe("key broker wrap", () => {
  const nonce = Buffer.alloc(32, 1);
  it("unwraps only with the requester's key, the same key id and nonce, and untampered bytes", () => {
    const requester = newX25519();
    const key = Buffer.from("AGE-SECRET-KEY-1...");
    const w = wrapKey(key, "corpus", nonce, requester.publicRaw);
    expect(unwrapKey(w, "corpus", nonce, requester).equals(key)).toBe(true);
    expect(() => unwrapKey(w, "other", nonce, requester)).toThrow(/does not authenticate/);
    expect(() => unwrapKey(w, "corpus", Buffer.alloc(32, 2), requester)).toThrow(/does not authenticate/);
    expect(() => unwrapKey(w, "corpus", nonce, newX25519())).toThrow(/does not authenticate/);
    const ct = Buffer.from(w.ciphertext, "base64");
    ct[0] ^= 1;
    expect(() => unwrapKey({ ...w, ciphertext: ct.toString("base64") }, "corpus", nonce, requester)).toThrow(/does not authenticate/);
    expect(() => unwrapKey({ ...w, ciphertext: "AAAA" }, "corpus", nonce, requester)).toThrow(/truncated/);
  });

  it("refuses low-order broker and requester keys with KEY_RELEASE, whatever OpenSSL says (found by npm run fuzz)", () => {
    // OpenSSL fails the derivation itself for these points; that error used to escape as a plain Error.
    const lowOrder = ["00".repeat(32), `01${"00".repeat(31)}`, "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"];
    const requester = newX25519();
    const w = wrapKey(Buffer.from("k"), "id", nonce, requester.publicRaw);
    for (const hex of lowOrder) {
      const point = Buffer.from(hex, "hex");
      expect(() => unwrapKey({ ...w, brokerPublicKey: point.toString("base64") }, "id", nonce, requester)).toThrow(expect.objectContaining({ name: "AirlockError", code: "KEY_RELEASE" }));
      expect(() => wrapKey(Buffer.from("k"), "id", nonce, point)).toThrow(expect.objectContaining({ name: "AirlockError", code: "KEY_RELEASE" }));
    }
  });

  it("refuses a low-order public key and binds every release field", () => {
    expect(() => wrapKey(Buffer.from("k"), "id", nonce, Buffer.alloc(32))).toThrow();
    const pub = newX25519().publicRaw;
    expect(reportDataFor(nonce, pub)).toHaveLength(64);
    const w = wrapKey(Buffer.from("k"), "id", nonce, pub);
    const t = releaseTranscript("id", nonce, pub, w, "USER_PRIVATE");
    expect(releaseTranscript("id2", nonce, pub, w, "USER_PRIVATE").equals(t)).toBe(false);
    expect(releaseTranscript("id", Buffer.alloc(32, 3), pub, w, "USER_PRIVATE").equals(t)).toBe(false);
    expect(releaseTranscript("id", nonce, pub, w, "PUBLIC").equals(t)).toBe(false);
  });
});
