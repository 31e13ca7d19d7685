// Decoding and encoding the contracts of proto/airlock/v1/*.proto. The types are generated from
// the declarations (proto/gen/, by `npm run build`); the checks here are derived from the same
// declarations: every field's (airlock.v1.bounds) option, plus the rules bounds.proto states for
// every message. A peer's message reaches a program only after it has passed them, and an error
// names the field by its path (`Run.outputs[2].mount`) but never quotes the peer's data.
//
// Sizes are bounded before allocation: the frame reader refuses a frame over its link's limit
// before buffering it (framing.ts), and a message decoded from a frame cannot hold more than the
// frame's bytes.
import { create, fromBinary, fromJson, getOption, toBinary, toJson, type DescEnum, type DescField, type DescMessage, type JsonValue, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { bounds as boundsOption, Format, type Bounds } from "../gen/airlock/v1/bounds_pb.ts";
import { AirlockError, type ErrorCode } from "./errors.ts";
import { DATA_SCOPES, ENV_NAME_RE, isGuestPath, NAME_RE } from "./manifest/schema.ts";

/** The formats bounds.proto names, each checked by the manifest's own rule (one home per rule). */
const FORMATS: Record<Exclude<Format, Format.UNSPECIFIED>, { test: (s: string) => boolean; what: string }> = {
  [Format.NAME]: { test: (s) => NAME_RE.test(s), what: "a lower-case name" },
  [Format.ENV_NAME]: { test: (s) => ENV_NAME_RE.test(s), what: "an environment variable name" },
  [Format.SHA256_HEX]: { test: (s) => /^[0-9a-f]{64}$/.test(s), what: "64 lower-case hex digits" },
  [Format.BASE64]: { test: (s) => /^[A-Za-z0-9+/]*={0,2}$/.test(s) && s.length % 4 === 0, what: "padded base64" },
  [Format.INPUT_MOUNT]: { test: (s) => isGuestPath(s, "/data/in"), what: "a normalized absolute path under /data/in/" },
  [Format.OUTPUT_MOUNT]: { test: (s) => isGuestPath(s, "/data/out"), what: "a normalized absolute path under /data/out/" },
  [Format.DATA_SCOPE]: { test: (s) => (DATA_SCOPES as readonly string[]).includes(s), what: "a data scope" },
};

/** What a field may hold: its declared bounds (read once per field). */
const boundsCache = new WeakMap<DescField, Bounds>();
function boundsOf(field: DescField): Bounds {
  let b = boundsCache.get(field);
  if (!b) {
    b = getOption(field, boundsOption);
    boundsCache.set(field, b);
  }
  return b;
}

/** Each enum's declared numbers, as a set (read once per enum). */
const enumCache = new WeakMap<DescEnum, Set<number>>();
function declaredValues(e: DescEnum): Set<number> {
  let v = enumCache.get(e);
  if (!v) {
    v = new Set(e.values.map((x) => x.number));
    enumCache.set(e, v);
  }
  return v;
}

/** The field's bounds, with their checks compiled once (regular expressions). */
const patternCache = new Map<string, RegExp>();
function regex(source: string): RegExp {
  let r = patternCache.get(source);
  if (!r) {
    r = new RegExp(source, "u");
    patternCache.set(source, r);
  }
  return r;
}

class Checker {
  constructor(
    private readonly what: string,
    private readonly code: ErrorCode,
  ) {}

  fail(path: string, rule: string): never {
    throw new AirlockError(this.code, `${this.what}: ${path} ${rule}`);
  }

  message(desc: DescMessage, msg: Record<string, unknown>, path: string): void {
    const unknown = msg.$unknown as { no: number }[] | undefined;
    if (unknown && unknown.length > 0) this.fail(`${path}.#${unknown[0]!.no}`, `is not a field of ${desc.typeName}`);
    for (const oneof of desc.oneofs) {
      const v = msg[oneof.localName] as { case: string | undefined; value?: unknown };
      if (v.case === undefined) this.fail(`${path}.${oneof.name}`, "must be set");
      const field = oneof.fields.find((f) => f.localName === v.case)!;
      this.field(field, v.value, `${path}.${field.name}`);
    }
    for (const field of desc.fields) {
      if (field.oneof) continue;
      this.field(field, msg[field.localName], `${path}.${field.name}`);
    }
  }

  private field(field: DescField, value: unknown, path: string): void {
    const b = boundsOf(field);
    switch (field.fieldKind) {
      case "scalar":
        if (value !== undefined) this.scalar(value, b, path);
        return;
      case "enum":
        if (value !== undefined) this.enumValue(declaredValues(field.enum), value as number, path);
        return;
      case "message":
        if (value === undefined) {
          if (b.required) this.fail(path, "must be set");
        } else this.message(field.message, value as Record<string, unknown>, path);
        return;
      case "list": {
        const list = value as unknown[];
        if (list.length > (b.maxCount || 0)) this.fail(path, `has more than ${b.maxCount} entries`);
        list.forEach((item, i) => {
          const at = `${path}[${i}]`;
          if (field.listKind === "message") this.message(field.message, item as Record<string, unknown>, at);
          else if (field.listKind === "enum") this.enumValue(declaredValues(field.enum), item as number, at);
          else this.scalar(item, b, at);
        });
        return;
      }
      case "map": {
        const entries = Object.entries(value as Record<string, unknown>);
        if (entries.length > (b.maxCount || 0)) this.fail(path, `has more than ${b.maxCount} entries`);
        entries.forEach(([key, item], i) => {
          // Keys are the peer's data: the path names the entry by its position.
          const at = `${path}[entry ${i}]`;
          if (b.keyFormat !== Format.UNSPECIFIED && !FORMATS[b.keyFormat].test(key)) this.fail(`${at}.key`, `must be ${FORMATS[b.keyFormat].what}`);
          if (key.includes("\0")) this.fail(`${at}.key`, "must not contain NUL");
          if (field.mapKind === "message") this.message(field.message, item as Record<string, unknown>, at);
          else if (field.mapKind === "enum") this.enumValue(declaredValues(field.enum), item as number, at);
          else this.scalar(item, b, at);
        });
        return;
      }
    }
  }

  private enumValue(declared: Set<number>, value: number, path: string): void {
    // Zero is each enum's UNSPECIFIED: a message that leaves it unset says nothing.
    if (value === 0 || !declared.has(value)) this.fail(path, "is not one of its enum's values");
  }

  private scalar(value: unknown, b: Bounds, path: string): void {
    if (typeof value === "string") {
      const n = Buffer.byteLength(value, "utf8");
      if (n > b.maxLen) this.fail(path, `is longer than ${b.maxLen} bytes`);
      if (n < b.minLen) this.fail(path, `is shorter than ${b.minLen} bytes`);
      if (value.includes("\0")) this.fail(path, "must not contain NUL");
      if (b.pattern && !regex(b.pattern).test(value)) this.fail(path, `must match ${b.pattern}`);
      if (b.format !== Format.UNSPECIFIED && !FORMATS[b.format].test(value)) this.fail(path, `must be ${FORMATS[b.format].what}`);
    } else if (value instanceof Uint8Array) {
      if (value.length > b.maxLen) this.fail(path, `is longer than ${b.maxLen} bytes`);
      if (value.length < b.minLen) this.fail(path, `is shorter than ${b.minLen} bytes`);
    } else if (typeof value === "number" || typeof value === "bigint") {
      const v = BigInt(value);
      if (v < b.min || (b.max !== 0n && v > b.max)) this.fail(path, `must be from ${b.min} to ${b.max}`);
      if (typeof value === "number" && !Number.isFinite(value)) this.fail(path, "must be a finite number");
    }
  }
}

/**
 * Decodes one message from a peer and checks it against its declaration; throws `code`
 * (GUEST_PROTOCOL by default) naming the field. `what` says whose message it is, for the error.
 */
export function decodeMessage<D extends DescMessage>(schema: D, bytes: Uint8Array, what: string, code: ErrorCode = "GUEST_PROTOCOL"): MessageShape<D> {
  let msg: MessageShape<D>;
  try {
    msg = fromBinary(schema, bytes, { readUnknownFields: true });
  } catch (err) {
    throw new AirlockError(code, `${what}: not a well-formed ${schema.name} message (${(err as Error).message.slice(0, 200)})`);
  }
  new Checker(what, code).message(schema, msg as unknown as Record<string, unknown>, schema.name);
  return msg;
}

/** Checks a message we are about to send (our own bug must not reach the peer as a refusal). */
function checkMessage<D extends DescMessage>(schema: D, msg: MessageShape<D>, what: string): void {
  new Checker(what, "INTERNAL").message(schema, msg as unknown as Record<string, unknown>, schema.name);
}

/** Builds, checks and encodes one message. */
export function encodeMessage<D extends DescMessage>(schema: D, init: MessageInitShape<D>): Uint8Array {
  const msg = create(schema, init);
  checkMessage(schema, msg, `outgoing ${schema.name}`);
  return toBinary(schema, msg);
}

/**
 * Decodes one message from a peer's JSON (Protocol Buffers' JSON mapping: the key broker's HTTP
 * bodies) and checks it as decodeMessage does; unknown fields are refused.
 */
export function decodeJson<D extends DescMessage>(schema: D, text: string, what: string, code: ErrorCode = "GUEST_PROTOCOL"): MessageShape<D> {
  let msg: MessageShape<D>;
  try {
    msg = fromJson(schema, JSON.parse(text) as JsonValue, { ignoreUnknownFields: false });
  } catch (err) {
    throw new AirlockError(code, `${what}: not a well-formed ${schema.name} (${(err as Error).message.slice(0, 200)})`);
  }
  new Checker(what, code).message(schema, msg as unknown as Record<string, unknown>, schema.name);
  return msg;
}

/** Builds, checks and encodes one message as JSON text. */
export function encodeJson<D extends DescMessage>(schema: D, init: MessageInitShape<D>): string {
  const msg = create(schema, init);
  checkMessage(schema, msg, `outgoing ${schema.name}`);
  return JSON.stringify(toJson(schema, msg));
}

/** A 64-bit field as a number: the bounds keep every such field below 2^53. */
export const num = (v: bigint): number => Number(v);
