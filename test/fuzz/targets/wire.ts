// Fuzz targets on the wire decoders: frames and control messages (and the room they carry), the
// PSP and key-broker wire, and the secure channel's hellos and records.
import { createCipheriv, createPublicKey, diffieHellman, hkdfSync, sign } from "node:crypto";
import { Readable } from "node:stream";
import { brokerKeyFrom, unwrapKey, verifyRelease } from "../../../proto/src/attestation/kbs-wire.ts";
import { decodePspRequest, decodePspResponse, encodePspRequest, encodePspResponse } from "../../../proto/src/attestation/psp-wire.ts";
import { parseReport } from "../../../proto/src/attestation/report.ts";
import { parseCert, pemToDers } from "../../../proto/src/attestation/certs.ts";
import { AirlockError } from "../../../proto/src/errors.ts";
import { FrameSource } from "../../../proto/src/channel/link.ts";
import { alertReason, decodeHello, deriveKeys, encodeFrame as encodeChannelFrame, encodeHello, MAX_RECORD, RecordCipher, RecordType, transcriptHash } from "../../../proto/src/channel/protocol.ts";
import type { Role } from "../../../proto/src/channel/protocol.ts";
import { readMessages } from "../../../proto/src/control.ts";
import { create, equals, toBinary, type DescMessage, type Message, type MessageInitShape } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import { decodeMessage } from "../../../proto/src/wire.ts";
import { checkArchiveName } from "../../../proto/src/archive.ts";
import { canonicalJson } from "../../../proto/src/manifest/digest.ts";
import { AgentToFirewallSchema, FirewallToAgentSchema, type Run } from "../../../proto/gen/airlock/v1/agent_pb.ts";
import { Decision, FirewallToHostSchema, HostToFirewallSchema } from "../../../proto/gen/airlock/v1/control_pb.ts";
import { CallRequestSchema } from "../../../proto/gen/enforcer/v1/ez_service_pb.ts";
import { ErrorCode } from "../../../proto/gen/airlock/v1/errors_pb.ts";
import { parseRun } from "../../../sandbox-vm/src/agent/protocol.ts";
import { DEFAULT_MAX_FRAME, encodeFrame, readFrames } from "../../../proto/src/framing.ts";
import { parseRoom, parseRoomBytes } from "../../../proto/src/room.ts";
import { Refused, Violation, type DecoderTarget, type TargetFactory } from "../engine.ts";
import { dictionary, mutate, mutateJsonText, type Field, type Rng, type Seed } from "../mutate.ts";
import { fixedBytes, fixedEd25519, fixedX25519 } from "../keys.ts";
import { attestationSeeds } from "./attestation.ts";

const JSON_DICT = dictionary('"', "{", "}", "[", "]", ",", ":", "null", "true", "1e999", "-0", "-1", "9007199254740993", '"__proto__"', '"type"', "\\u0000", "\\ud800", "[[[[[[[[", '{"a":', " ", "\n");

/** Cuts bytes into chunks at random points (a stream delivers them in pieces of any size). */
function chunks(rng: Rng, b: Buffer): Buffer[] {
  if (rng.chance(0.5)) return [b];
  const out: Buffer[] = [];
  for (let off = 0; off < b.length; ) {
    const n = rng.chance(0.1) ? 0 : 1 + rng.int(rng.chance(0.5) ? 8 : 512);
    out.push(b.subarray(off, off + n));
    off += n;
  }
  return out;
}

function frameFields(frames: Buffer[]): Field[] {
  const fields: Field[] = [];
  let off = 0;
  for (const f of frames) {
    fields.push({ off, size: 4, le: false });
    off += f.length;
  }
  return fields;
}

// ---- frames (framing.ts) ----

const framing: TargetFactory = {
  name: "framing",
  what: "length-prefixed frames from a byte stream cut at random points (framing.ts readFrames)",
  create(): DecoderTarget {
    const seedOf = (name: string, payloads: Buffer[]): Seed => {
      const frames = payloads.map((p) => encodeFrame(p));
      return { name, data: Buffer.concat(frames), fields: frameFields(frames) };
    };
    const seeds = [
      seedOf("three frames", [Buffer.from("hello"), Buffer.alloc(0), Buffer.alloc(1000, 7)]),
      seedOf("one frame", [Buffer.concat([Buffer.from([1]), toBinary(AgentToFirewallSchema, create(AgentToFirewallSchema, { body: { case: "hello", value: { agent: "airlock-sandbox/1" } } }))])]),
      seedOf("many small frames", Array.from({ length: 40 }, (_, i) => Buffer.alloc(i % 9, i))),
    ];
    const run = async (input: Buffer, rng: Rng): Promise<void> => {
      const maxFrame = rng.chance(0.25) ? rng.pick([0, 1, 16, 1024]) : DEFAULT_MAX_FRAME;
      let consumed = 0;
      for await (const f of readFrames(Readable.from(chunks(rng, input)), maxFrame)) {
        if (f.length > maxFrame) throw new Violation(`a frame of ${f.length} bytes passed the limit of ${maxFrame}`);
        consumed += 4 + f.length;
      }
      if (consumed !== input.length) throw new Violation(`frames account for ${consumed} of ${input.length} bytes, yet the stream ended cleanly`);
    };
    return { name: this.name, what: this.what, seeds, dict: [], maxLen: 256 * 1024, run };
  },
};

// ---- control messages (control.ts) and what the enforcer and the host read from them ----

const MESSAGE_FRAME = 1;
const DATA_FRAME = 2;

/** One message of a link, framed as control.ts sends it. */
function messageFrame<M extends Message>(schema: GenMessage<M>, init: MessageInitShape<GenMessage<M>>): Buffer {
  return encodeFrame(Buffer.concat([Buffer.from([MESSAGE_FRAME]), toBinary(schema, create(schema, init))]));
}

function dataFrame(b: Buffer): Buffer {
  return encodeFrame(Buffer.concat([Buffer.from([DATA_FRAME]), b]));
}

/** Protocol Buffers' edge values: varint continuations, length prefixes past the end, field keys of every wire type, unknown field numbers. */
const PROTO_DICT = [
  Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]),
  Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
  Buffer.from([0x0a, 0xff, 0xff, 0x03]),
  Buffer.from([0x08, 0x00]),
  Buffer.from([0x0d, 0, 0, 0, 0]),
  Buffer.from([0x09, 0, 0, 0, 0, 0, 0, 0, 0]),
  Buffer.from([0x0b]),
  Buffer.from([0x0c]),
  Buffer.from([0xf8, 0x06, 0x01]),
  Buffer.from([0x12, 0x00]),
  Buffer.from([0x00]),
  Buffer.from("\u0000", "utf8"),
  Buffer.from([0xc3, 0x28]),
];

/** A canonical room as the host sends it to the firewall (manifest/digest.ts canonicalManifest). */
function canonicalRoom(): Record<string, unknown> {
  return {
    apiVersion: "airlock/v1",
    name: "word-count",
    workload: { bundleTree: fixedBytes("bundle").toString("hex"), command: ["/bin/sh", "/workload/run.sh"], env: { GREETING: "hello", LANG: "C" }, timeoutSeconds: 600, padTo: 60 },
    inputs: [{ name: "corpus", mount: "/data/in/corpus", mode: "secure", scope: "USER_PRIVATE" }],
    outputs: [
      { name: "greeting", mount: "/data/out/greeting", mode: "open", maxBytes: 4096, format: "text" },
      { name: "counts", mount: "/data/out/counts", mode: "trusted", recipient: "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq", maxBytes: 1048576, format: "json" },
    ],
    console: { mode: "secure", maxBytes: 65536 },
    attestation: { firewall: fixedBytes("firewall measurement", 48).toString("hex"), sandbox: fixedBytes("sandbox measurement", 48).toString("hex"), broker: fixedBytes("broker key").toString("hex") },
    egress: [],
    collaborators: [{ name: "data-owner", publicKeySha256: fixedBytes("owner key").toString("hex") }],
    governance: { consent: "https://governance.example.test/consent", tls: { spkiSha256: "ab".repeat(32) } },
    resources: { firewall: { memoryMiB: 1024, vcpus: 1 }, sandbox: { memoryMiB: 1024, vcpus: 1 } },
  };
}

/**
 * Reads a message the way its consumer does (the firewall's session and host channel, the host
 * link, the agent), after the decoder has checked it; a decoded message must re-encode to a message
 * that decodes equal (the checks are a function of the message, not of its encoding).
 */
function consume(schema: DescMessage, message: Message): void {
  const again = decodeMessage(schema, toBinary(schema, message), "re-encoded");
  if (!equals(schema, message, again)) throw new Violation(`${schema.typeName} does not survive a re-encoding`);
  const body = (message as unknown as { body: { case: string; value: Record<string, unknown> } }).body;
  switch (body.case) {
    case "room":
      parseRoomBytes(body.value.canonicalJson as Uint8Array);
      break;
    case "run":
      parseRun(body.value as unknown as Run);
      break;
    case "file":
      checkArchiveName(Buffer.from(body.value.name as Uint8Array));
      break;
  }
}

const LINKS: DescMessage[] = [AgentToFirewallSchema, FirewallToAgentSchema, HostToFirewallSchema, FirewallToHostSchema];

const control: TargetFactory = {
  name: "control",
  what: "the links' messages between host, firewall and agent (control.ts readMessages, wire.ts decodeMessage against control.proto and agent.proto; then room.ts parseRoomBytes, the agent's parseRun, archive.ts checkArchiveName)",
  create(): DecoderTarget {
    const seedOf = (name: string, frames: Buffer[]): Seed => ({ name, data: Buffer.concat(frames), fields: frameFields(frames) });
    const agent = [
      messageFrame(AgentToFirewallSchema, { body: { case: "hello", value: { agent: "airlock-sandbox/1" } } }),
      messageFrame(AgentToFirewallSchema, { body: { case: "inputPlaced", value: { name: "corpus" } } }),
      messageFrame(AgentToFirewallSchema, { body: { case: "inputRefused", value: { name: "corpus", fault: 1, chunk: 3n } } }),
      messageFrame(AgentToFirewallSchema, { body: { case: "output", value: { output: "counts", files: 2, bytes: 2048n, refused: { special: 1 } } } }),
      messageFrame(AgentToFirewallSchema, { body: { case: "file", value: { output: "counts", name: Buffer.from("a/b.txt"), mode: 0o644, size: 5n } } }),
      dataFrame(Buffer.from("hello")),
      messageFrame(AgentToFirewallSchema, { body: { case: "file", value: { output: "counts", name: Buffer.from("c.json"), mode: 0o755, size: 6n } } }),
      dataFrame(Buffer.from("world!")),
      messageFrame(AgentToFirewallSchema, { body: { case: "console", value: { bytes: 3n } } }),
      dataFrame(Buffer.from("ok\n")),
      messageFrame(AgentToFirewallSchema, { body: { case: "stray", value: { count: 0n } } }),
      messageFrame(AgentToFirewallSchema, { body: { case: "exit", value: { code: 0 } } }),
      messageFrame(AgentToFirewallSchema, { body: { case: "serverListening", value: {} } }),
      messageFrame(AgentToFirewallSchema, { body: { case: "egressData", value: { stream: 1024, data: Buffer.from("HTTP/1.1 200 OK") } } }),
    ];
    const room = Buffer.from(canonicalJson(canonicalRoom()));
    const toAgent = [
      messageFrame(FirewallToAgentSchema, { body: { case: "input", value: { name: "corpus", mount: "/data/in/corpus", payloadKey: new Uint8Array(32) } } }),
      dataFrame(Buffer.from("the cat")),
      messageFrame(FirewallToAgentSchema, { body: { case: "inputEnd", value: { name: "corpus", bytes: 7n } } }),
      messageFrame(FirewallToAgentSchema, {
        body: { case: "run", value: { command: ["/bin/sh", "/workload/run.sh"], env: { LANG: "C" }, timeoutSeconds: 600, padToSeconds: 60, roomCanonicalJson: room, outputs: [{ name: "counts", mount: "/data/out/counts", maxBytes: 1048576n }], console: { maxBytes: 65536n } } },
      }),
      messageFrame(FirewallToAgentSchema, { body: { case: "bye", value: {} } }),
      messageFrame(FirewallToAgentSchema, { body: { case: "serviceOpen", value: { stream: 1024 } } }),
    ];
    const host = [
      messageFrame(HostToFirewallSchema, { body: { case: "room", value: { canonicalJson: room, hold: false, brokerPublicKey: fixedBytes("broker").toString("base64") } } }),
      messageFrame(HostToFirewallSchema, { body: { case: "signatures", value: { signatures: [{ name: "data-owner", publicKeyPem: "-----BEGIN PUBLIC KEY-----", alg: "ed25519", signature: "AAAA", digest: "00" }] } } }),
      messageFrame(HostToFirewallSchema, { body: { case: "inputFile", value: { name: "corpus", size: 3n } } }),
      dataFrame(Buffer.from("age")),
    ];
    const firewall = [
      messageFrame(FirewallToHostSchema, { body: { case: "inputRequest", value: { name: "corpus" } } }),
      messageFrame(FirewallToHostSchema, { body: { case: "outputDecided", value: { output: "counts", decision: Decision.ENCRYPT, reason: "sealed", sealedBytes: 16_512n } } }),
      messageFrame(FirewallToHostSchema, { body: { case: "sealedData", value: { output: "counts", size: 3 } } }),
      dataFrame(Buffer.from("age")),
      messageFrame(FirewallToHostSchema, { body: { case: "refused", value: { code: ErrorCode.KEY_RELEASE, reason: "no key" } } }),
      messageFrame(FirewallToHostSchema, { body: { case: "done", value: { completed: false } } }),
      messageFrame(FirewallToHostSchema, { body: { case: "serviceReady", value: { apiPort: 8443, tls: true, apiTlsSpkiSha256: "a".repeat(64) } } }),
      messageFrame(FirewallToHostSchema, { body: { case: "serviceStats", value: { served: 3n, refused: 1n, resets: 1n } } }),
      messageFrame(FirewallToHostSchema, { body: { case: "resetSandbox", value: {} } }),
    ];
    const seeds = [seedOf("agent to firewall", agent), seedOf("firewall to agent", toAgent), seedOf("host to firewall", host), seedOf("firewall to host", firewall)];
    // Structured: one frame's message mutated as bytes, every frame length kept right.
    const structured = (rng: Rng, seed: Seed): Buffer => {
      const frames: Buffer[] = [];
      for (let off = 0; off + 4 <= seed.data.length; ) {
        const len = seed.data.readUInt32BE(off);
        frames.push(seed.data.subarray(off + 4, off + 4 + len));
        off += 4 + len;
      }
      const i = rng.int(frames.length);
      if (frames[i]![0] === MESSAGE_FRAME) {
        const payload = mutate(rng, [{ name: "message", data: frames[i]!.subarray(1) }], { maxLen: 64 * 1024, dict: PROTO_DICT });
        frames[i] = Buffer.concat([Buffer.from([MESSAGE_FRAME]), payload]);
      } else {
        frames[i] = Buffer.concat([Buffer.from([rng.pick([DATA_FRAME, MESSAGE_FRAME, 0, 3, 255])]), rng.bytes(rng.int(64))]);
      }
      return Buffer.concat(frames.map((f) => encodeFrame(f)));
    };
    const run = async (input: Buffer, rng: Rng): Promise<void> => {
      const maxFrame = rng.chance(0.25) ? rng.pick([0, 1, 64, 4096]) : undefined;
      // The bytes could be any link's: accepted when one link's reader takes them all.
      let refusal: unknown;
      for (const schema of LINKS) {
        try {
          for await (const m of readMessages(Readable.from(chunks(rng, input)), schema, "the peer", maxFrame)) {
            if (m.kind === "message") consume(schema, m.message);
          }
          return;
        } catch (err) {
          if (!(err instanceof AirlockError)) throw err;
          refusal = err;
        }
      }
      throw refusal;
    };
    return { name: this.name, what: this.what, seeds, dict: PROTO_DICT, maxLen: 256 * 1024, structured, run };
  },
};

const room: TargetFactory = {
  name: "room",
  what: "the room the host hands the firewall (room.ts parseRoom on JSON text)",
  create(): DecoderTarget {
    const minimal = { apiVersion: "airlock/v1", name: "hello", workload: { bundleTree: fixedBytes("bundle").toString("hex"), command: ["/bin/true"], timeoutSeconds: 1 }, inputs: [], outputs: [], attestation: canonicalRoom().attestation };
    const seeds: Seed[] = [
      { name: "word-count", data: Buffer.from(JSON.stringify(canonicalRoom())) },
      { name: "minimal", data: Buffer.from(JSON.stringify(minimal)) },
    ];
    const run = (input: Buffer): void => {
      let v: unknown;
      try {
        v = JSON.parse(input.toString("utf8"));
      } catch {
        throw new Refused("not JSON (readMessages refuses it first)");
      }
      const plan = parseRoom(v);
      if (!/^[0-9a-f]{64}$/.test(plan.digest)) throw new Violation(`room digest ${plan.digest}`);
      if (plan.workload.command.some((c) => typeof c !== "string")) throw new Violation("a command part that is not a string");
    };
    return {
      name: this.name,
      what: this.what,
      seeds,
      dict: JSON_DICT,
      maxLen: 256 * 1024,
      structured: (rng, seed) => Buffer.from(mutateJsonText(rng, JSON.parse(seed.data.toString("utf8")))),
      run,
    };
  },
};

// ---- the PSP wire (psp-wire.ts) ----

const pspWire: TargetFactory = {
  name: "psp-wire",
  what: "requests to and responses from the (emulated) PSP (psp-wire.ts decodePspRequest/decodePspResponse, then the report and certificates inside)",
  create(): DecoderTarget {
    const a = attestationSeeds();
    const response = encodePspResponse({ report: a.reports[1]!.data, vcek: a.vcekDer, chain: a.chainPem });
    const seeds: Seed[] = [
      { name: "request", data: encodePspRequest({ vmpl: 0, reportData: fixedBytes("report data", 64) }) },
      { name: "response", data: response },
      { name: "response without chain", data: encodePspResponse({ report: a.reports[0]!.data, vcek: a.vcekDer }) },
      { name: "refusal", data: encodePspResponse({ error: "no launch for this guest" }) },
    ];
    const run = (input: Buffer): void => {
      let accepted = false;
      try {
        decodePspRequest(input);
        accepted = true;
      } catch (err) {
        if (!(err instanceof AirlockError)) throw err;
      }
      let ev;
      try {
        ev = decodePspResponse(input);
      } catch (err) {
        if (!(err instanceof AirlockError)) throw err;
        // A refusal from the PSP is a well-formed response.
        if (err.code === "REPORT_INVALID") accepted = true;
      }
      if (ev) {
        accepted = true;
        const evidence = ev;
        const inner = [() => parseReport(evidence.report), () => parseCert(evidence.vcek, "VCEK"), () => pemToDers(evidence.chain ?? "", "chain").forEach((d, i) => parseCert(d, `chain ${i}`))];
        for (const f of inner) {
          try {
            f();
          } catch (err) {
            if (!(err instanceof AirlockError)) throw err;
          }
        }
      }
      if (!accepted) throw new Refused("neither a request nor a response");
    };
    return { name: this.name, what: this.what, seeds, dict: [...PROTO_DICT, ...dictionary("-----BEGIN CERTIFICATE-----\n", "-----END CERTIFICATE-----\n")], maxLen: 64 * 1024, run };
  },
};

// ---- the key broker's wire (kbs-wire.ts): a release as the firewall receives it ----

const KBS_INFO = "airlock-kbs-v1 wrap";
/** Low-order X25519 points (zero, one, and the two of order 8), base64: known-bad public keys. */
const LOW_ORDER_X25519 = ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=", "X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc="];

const kbsWire: TargetFactory = {
  name: "kbs-wire",
  what: "key releases and broker keys the firewall receives (kbs-wire.ts unwrapKey, verifyRelease, x25519PublicFromRaw, brokerKeyFrom)",
  create(): DecoderTarget {
    const requester = fixedX25519("kbs requester");
    const broker = fixedX25519("kbs broker ephemeral");
    const identity = fixedEd25519("kbs identity");
    const identityPub = createPublicKey(identity);
    const nonce = fixedBytes("kbs nonce");
    const keyId = "word-count.corpus.0123456789abcdef01234567";
    // The broker's wrap (kbs-wire.ts wrapKey) with fixed keys, so the seed is the same every run.
    const shared = diffieHellman({ privateKey: broker.privateKey, publicKey: createPublicKey({ key: { kty: "OKP", crv: "X25519", x: requester.publicRaw.toString("base64url") }, format: "jwk" }) });
    const info = Buffer.concat([Buffer.from(KBS_INFO), Buffer.from([0]), Buffer.from(keyId, "utf8"), Buffer.from([0]), requester.publicRaw, broker.publicRaw]);
    const k = Buffer.from(hkdfSync("sha256", shared, nonce, info, 32));
    const c = createCipheriv("chacha20-poly1305", k, Buffer.alloc(12), { authTagLength: 16 });
    const secret = fixedBytes("dataset key");
    c.setAAD(Buffer.from(keyId, "utf8"), { plaintextLength: secret.length });
    const ciphertext = Buffer.concat([c.update(secret), c.final(), c.getAuthTag()]);
    const wrapped = { brokerPublicKey: broker.publicRaw.toString("base64"), ciphertext: ciphertext.toString("base64") };
    // The signed bytes: the fields the client relies on (releaseTranscript's layout is the
    // broker's business; verifyRelease takes any bytes).
    const transcriptOf = (v: { keyId: string; scope?: unknown; wrapped: { brokerPublicKey: string; ciphertext: string } }): Buffer =>
      Buffer.concat([Buffer.from(v.keyId), Buffer.from(String(v.scope)), nonce, requester.publicRaw, Buffer.from(v.wrapped.brokerPublicKey, "base64"), Buffer.from(v.wrapped.ciphertext, "base64")]);
    const release = { keyId, scope: "USER_PRIVATE", wrapped, signature: "" };
    release.signature = sign(null, transcriptOf(release), identity).toString("base64");
    const spkiB64 = identityPub.export({ format: "der", type: "spki" }).toString("base64");
    const seeds: Seed[] = [
      { name: "release", data: Buffer.from(JSON.stringify(release)) },
      { name: "broker key, base64 SPKI", data: Buffer.from(spkiB64) },
      { name: "broker key, PEM", data: Buffer.from(identityPub.export({ format: "pem", type: "spki" }) as string) },
    ];
    const requesterPair = { privateKey: requester.privateKey, publicRaw: requester.publicRaw };
    const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);
    const run = (input: Buffer): void => {
      const text = input.toString("utf8");
      if (!text.startsWith("{")) {
        const key = brokerKeyFrom(text);
        if (key.asymmetricKeyType !== "ed25519") throw new Violation(`brokerKeyFrom returned a ${key.asymmetricKeyType} key`);
        return;
      }
      let v: unknown;
      try {
        v = JSON.parse(text);
      } catch {
        throw new Refused("not JSON (the client refuses it first)");
      }
      // The client's shape check (kbs-client.ts requestKey), then the wire functions.
      if (!isObj(v) || typeof v.keyId !== "string" || !isObj(v.wrapped) || typeof v.wrapped.ciphertext !== "string" || typeof v.wrapped.brokerPublicKey !== "string" || typeof v.signature !== "string") {
        throw new Refused("malformed release");
      }
      // The client asked for this key id and refuses a release that names another.
      if (v.keyId !== keyId) throw new Refused("a release for another key id");
      const r = { keyId, scope: v.scope, wrapped: { brokerPublicKey: v.wrapped.brokerPublicKey, ciphertext: v.wrapped.ciphertext } };
      const signed = verifyRelease(identityPub, transcriptOf(r), v.signature);
      const key = unwrapKey(r.wrapped, r.keyId, nonce, requesterPair);
      if (signed && !key.equals(secret)) throw new Violation("a signed release unwrapped to another key");
    };
    return {
      name: this.name,
      what: this.what,
      seeds,
      dict: dictionary(...JSON_DICT.map((b) => b.toString("latin1")), ...LOW_ORDER_X25519, "-----BEGIN PUBLIC KEY-----\n"),
      maxLen: 16 * 1024,
      structured: (rng, seed) => (seed.data[0] === 0x7b ? Buffer.from(mutateJsonText(rng, JSON.parse(seed.data.toString("utf8")), undefined, LOW_ORDER_X25519)) : seed.data),
      run,
    };
  },
};

// ---- the secure channel (channel/protocol.ts, link.ts FrameSource): the peer's bytes ----

const channel: TargetFactory = {
  name: "channel",
  what: "the secure channel's frames, hellos, handshake and application records from the peer (protocol.ts, link.ts FrameSource)",
  create(): DecoderTarget {
    const eph = { client: fixedX25519("channel client"), server: fixedX25519("channel server") };
    const hello = (role: Role): Buffer => encodeHello({ publicRaw: eph[role].publicRaw, nonce: fixedBytes(`channel nonce ${role}`) });
    const hellos = { client: hello("client"), server: hello("server") };
    const transcript = transcriptHash(hellos.client, hellos.server);
    const keys = deriveKeys(eph.client, eph.server.publicRaw, transcript);
    interface Rec {
      hs: boolean;
      type: number;
      payload: Buffer;
    }
    const recordsOf = (from: Role, alert = false): Rec[] => {
      if (alert) return [{ hs: true, type: RecordType.ALERT, payload: Buffer.from("REPORT_REJECTED: measurement differs") }];
      return [
        { hs: true, type: RecordType.EVIDENCE, payload: fixedBytes(`evidence ${from}`, 1184) },
        ...(from === "server" ? [{ hs: true, type: RecordType.FINISHED, payload: Buffer.alloc(0) }] : []),
        { hs: false, type: RecordType.DATA, payload: Buffer.from("hello over the channel") },
        { hs: false, type: RecordType.DATA, payload: Buffer.alloc(3000, 1) },
        { hs: false, type: RecordType.CLOSE, payload: Buffer.alloc(0) },
      ];
    };
    /** What one side sends, as the other side reads it: records sealed in order under their keys. */
    const seal = (from: Role, records: Rec[]): Buffer => {
      const hs = new RecordCipher(from === "client" ? keys.handshake.clientToServer : keys.handshake.serverToClient);
      const app = new RecordCipher(from === "client" ? keys.application.clientToServer : keys.application.serverToClient);
      return Buffer.concat([encodeChannelFrame(hellos[from]), ...records.map((r) => (r.hs ? hs : app).seal(r.type, r.payload))]);
    };
    const streamOf = (from: Role, alert = false): Buffer => seal(from, recordsOf(from, alert));
    // Structured: records that authenticate but say the wrong thing (type, payload, order, one
    // too many or too few), sealed with the session's real keys.
    const structured = (rng: Rng, seed: Seed): Buffer => {
      const reader: Role = seed.data[0]! & 1 ? "server" : "client";
      const from: Role = reader === "client" ? "server" : "client";
      const recs = recordsOf(from, rng.chance(0.1));
      for (let e = 1 + rng.int(2); e > 0; e--) {
        if (recs.length === 0) recs.push({ hs: true, type: RecordType.EVIDENCE, payload: Buffer.alloc(0) });
        const i = rng.int(recs.length);
        const op = rng.int(6);
        if (op === 0) recs[i]!.type = rng.pick([0, 1, 2, 3, 4, 5, 6, 255]);
        else if (op === 1) recs[i]!.payload = rng.chance(0.5) ? rng.bytes(rng.int(300)) : Buffer.alloc(rng.pick([0, 1, 65536]));
        else if (op === 2) recs.splice(i, 1);
        else if (op === 3) recs.splice(i, 0, { ...recs[i]! });
        else if (op === 4) recs[i]!.hs = !recs[i]!.hs;
        else recs.push({ hs: rng.chance(0.3), type: rng.pick([1, 2, 5]), payload: rng.bytes(rng.int(40)) });
      }
      return Buffer.concat([seed.data.subarray(0, 1), seal(from, recs)]);
    };
    // Byte 0: which side reads (0 = the client reads the server's bytes, 1 = the server reads the client's).
    const seedOf = (name: string, reader: Role, alert = false): Seed => {
      const body = streamOf(reader === "client" ? "server" : "client", alert);
      const fields: Field[] = [];
      for (let off = 0; off + 4 <= body.length; off += 4 + body.readUInt32BE(off)) fields.push({ off: 1 + off, size: 4, le: false });
      return { name, data: Buffer.concat([Buffer.from([reader === "client" ? 0 : 1]), body]), fields };
    };
    const seeds = [seedOf("server to client", "client"), seedOf("client to server", "server")];
    const alertSeed = seedOf("server alert", "client", true);
    const run = (input: Buffer, rng: Rng): void => {
      if (input.length === 0) throw new Refused("empty");
      const me: Role = input[0]! & 1 ? "server" : "client";
      const peer: Role = me === "client" ? "server" : "client";
      const src = new FrameSource(MAX_RECORD);
      // Copies: application records are decrypted where they lie, as the link's own chunks are.
      for (const c of chunks(rng, input.subarray(1))) src.push(Buffer.from(c));
      const next = (what: string): { head: Buffer; body: Buffer } => {
        const f = src.next();
        if (!f) throw new Refused(`the stream ended before ${what}`);
        if (f.body.length > MAX_RECORD || f.head.length !== 4) throw new Violation(`a frame of ${f.body.length} bytes passed the limit`);
        return f;
      };
      const peerHello = next("the hello");
      const h = decodeHello(peerHello.body, peer);
      const t = me === "client" ? transcriptHash(hellos.client, peerHello.body) : transcriptHash(peerHello.body, hellos.server);
      const k = deriveKeys(eph[me], h.publicRaw, t);
      const c2s = me === "server";
      const hs = new RecordCipher(c2s ? k.handshake.clientToServer : k.handshake.serverToClient);
      const app = new RecordCipher(c2s ? k.application.clientToServer : k.application.serverToClient);
      // handshake.ts expect(): an ALERT is the peer refusing us.
      const expect = (type: number, what: string): Buffer => {
        const f = next(what);
        const r = hs.open(f.head, f.body);
        if (r.type === RecordType.ALERT) throw new Refused(`peer refused: ${alertReason(r.payload)}`);
        if (r.type !== type) throw new Refused(`expected record type ${type}, got ${r.type}`);
        return r.payload;
      };
      expect(RecordType.EVIDENCE, "the evidence");
      if (me === "client" && expect(RecordType.FINISHED, "the verdict").length !== 0) throw new Refused("FINISHED with a payload");
      // secure-stream.ts pump(): DATA until CLOSE, nothing after it; each record opened in place.
      for (;;) {
        const f = src.nextParts();
        if (!f) throw new Refused("the stream ended before the close");
        if (f.length > MAX_RECORD || f.head.length !== 4 || f.parts.reduce((n, p) => n + p.length, 0) !== f.length) throw new Violation(`a frame of ${f.length} bytes passed the limit or lost bytes`);
        const r = app.openInPlace(f.head, f.parts);
        if (r.type === RecordType.CLOSE) {
          if (r.payload.length !== 0) throw new Refused("CLOSE with a payload");
          if (src.buffered > 0) throw new Refused("records after the close");
          return;
        }
        if (r.type !== RecordType.DATA) throw new Refused(`record type ${r.type} on an open channel`);
      }
    };
    // The alert seed is refused by design (the peer refuses us), so it joins the corpus after the seed check.
    return { name: this.name, what: this.what, seeds, extraCorpus: [alertSeed], dict: LOW_ORDER_X25519.map((b) => Buffer.from(b, "base64")), maxLen: 256 * 1024, structured, run };
  },
};

// ---- a service room's public API: the requests any caller sends the firewall ----

const serviceCall: TargetFactory = {
  name: "service-call",
  what: "EzPublicApi requests a caller sends (wire.ts decodeMessage against proto/enforcer/v1/ez_service.proto, as the firewall's api.ts decodes them)",
  create(): DecoderTarget {
    const seed = (name: string, init: Parameters<typeof create<typeof CallRequestSchema>>[1]): Seed => ({ name, data: Buffer.from(toBinary(CallRequestSchema, create(CallRequestSchema, init))) });
    const seeds: Seed[] = [
      seed("public", { serviceName: "demo.Echo", methodName: "Echo", sessionMetadata: { sessionId: 1n, ezClientUuid: fixedBytes("client").subarray(0, 16) }, inputParams: { publicInput: Buffer.from("hello") } }),
      seed("user private", {
        operatorDomain: "d",
        serviceName: "demo.Echo",
        methodName: "Remember",
        inputParams: { encryptedInput: [{ ciphertext: fixedBytes("age"), scope: { staticInfo: { scopeType: 3, scopeInstanceId: 7n, scopeOwner: { ownerUuid: fixedBytes("owner").subarray(0, 16) } } } }], requestMetadata: { "airlock-reply-to": Buffer.from("age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq") } },
      }),
    ];
    const run = (input: Buffer): void => {
      const m = decodeMessage(CallRequestSchema, input, "the caller", "POLICY");
      const again = decodeMessage(CallRequestSchema, toBinary(CallRequestSchema, m), "re-encoded", "POLICY");
      if (!equals(CallRequestSchema, m, again)) throw new Violation("a CallRequest does not survive a re-encoding");
      for (const f of m.inputParams?.encryptedInput ?? []) if (f.scope?.staticInfo === undefined) throw new Violation("an encrypted field without its scope passed the decoder");
    };
    return { name: this.name, what: this.what, seeds, dict: PROTO_DICT, maxLen: 64 * 1024, run };
  },
};

export const wireTargets: TargetFactory[] = [framing, control, room, pspWire, kbsWire, channel, serviceCall];
