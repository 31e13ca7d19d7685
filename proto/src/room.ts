// The room as the firewall VM receives it from the host: the canonical manifest (manifest/digest.ts).
// The host is untrusted, so the firewall checks its shape here and computes its digest itself;
// the digest is what the launch bound into SNP host_data, so a swapped room does not attest.
import { createHash } from "node:crypto";
import { AirlockError } from "./errors.ts";
import { canonicalJson } from "./manifest/digest.ts";
import { CONSOLE_OUTPUT, DATA_SCOPES, OUTPUT_FORMATS, OUTPUT_MODES, type DataScope, type OutputFormat, type OutputMode } from "./manifest/schema.ts";

export interface RoomPlan {
  name: string;
  digest: string;
  workload: { command: string[]; env: Record<string, string>; timeoutSeconds: number; padToSeconds?: number };
  inputs: { name: string; mount: string; mode: "secure" | "trusted"; scope: DataScope }[];
  outputs: { name: string; mount: string; mode: OutputMode; recipient?: string; maxBytes: number; format: OutputFormat }[];
  /** The workload's stdout/stderr and exact exit status, sealed; absent: they never leave. */
  console?: { mode: "secure" | "trusted"; recipient?: string; maxBytes: number };
  /** Collaborators whose signatures over the digest are required (manifest/sign.ts). */
  collaborators: { name: string; publicKeySha256: string }[];
  governance: { consent?: string };
  /** The canonical manifest as received (its digest is `digest`): the agent checks it too. */
  canonical: Record<string, unknown>;
  /** What the signed digest pins: the images' launch measurements and the broker's key hash. */
  attestation: { firewall: string; sandbox: string; broker: string };
}

/**
 * The key broker's id for one input's identity: the room's name, the input's, and the first 24 hex
 * digits of the manifest digest the grant bound it to (host-tools/src/kbs/store.ts KEY_ID holds
 * it). A look-alike manifest reusing the room's and the input's names has another digest, so it
 * asks for another key: the data owner's grant serves only the manifest it was made for.
 */
export const inputKeyId = (room: string, input: string, digestHex: string): string => {
  if (!/^[0-9a-f]{24,}$/.test(digestHex)) throw new AirlockError("INTERNAL", "inputKeyId: the manifest digest must be lower-case hex (at least 24 digits)");
  return `${room}.${input}.${digestHex.slice(0, 24)}`;
};
/** The room's own identity (secure outputs): released only to rooms with this manifest digest. */
export const roomKeyId = (digest: string): string => `room-${digest.slice(0, 32)}`;

/**
 * How long collecting a run's outputs may take after the workload ends, in seconds: a minute,
 * plus a second per MiB the outputs and console may hold (the guests' vsock under emulation moves
 * 1–2 MiB/s). The firewall and the host both enforce timeoutSeconds (+ padTo) plus this.
 */
export function collectionBoundSeconds(room: { outputs: { maxBytes: number }[]; console?: { maxBytes: number } }): number {
  const bytes = room.outputs.reduce((n, o) => n + o.maxBytes, 0) + (room.console?.maxBytes ?? 0);
  return 60 + Math.ceil(bytes / (1024 * 1024));
}

function bad(what: string): never {
  throw new AirlockError("GUEST_PROTOCOL", `room from the host: ${what}`);
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);
const str = (v: unknown, what: string): string => (typeof v === "string" && v.length > 0 && v.length < 4096 ? v : bad(`${what} must be a string`));
const oneOf = <T extends string>(v: unknown, options: readonly T[], what: string): T => ((options as readonly unknown[]).includes(v) ? (v as T) : bad(`${what} must be one of ${options.join("|")}`));
const guestPath = (v: unknown, under: string, what: string): string => {
  const p = str(v, what);
  return p.startsWith(`${under}/`) && !p.split("/").includes("..") ? p : bad(`${what} must lie under ${under}/`);
};

/** canonicalJson, refusing what has no canonical form (1e999 parses to Infinity; deep nesting runs out of stack). */
function canonicalText(v: unknown): string {
  try {
    return canonicalJson(v);
  } catch (err) {
    return bad(`it has no canonical JSON form (${(err as Error).message})`);
  }
}

/** The room as control.proto's Room carries it: the canonical manifest's JSON text. */
export function parseRoomBytes(canonicalJson: Uint8Array): RoomPlan {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(canonicalJson).toString("utf8"));
  } catch {
    bad("it is not JSON");
  }
  return parseRoom(value);
}

/** The canonical manifest's bytes as the room's messages carry them (Room, Run). */
export const roomBytes = (canonical: unknown): Buffer => Buffer.from(canonicalJson(canonical));

/** Checks a canonical manifest received from the host and returns what the enforcer needs. */
export function parseRoom(canonical: unknown): RoomPlan {
  if (!isObj(canonical) || canonical.apiVersion !== "airlock/v1") bad("not an airlock/v1 canonical manifest");
  const w = isObj(canonical.workload) ? canonical.workload : bad("workload missing");
  const command = Array.isArray(w.command) && w.command.length > 0 ? w.command.map((c, i) => str(c, `workload.command[${i}]`)) : bad("workload.command must be a list");
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(isObj(w.env) ? w.env : {})) env[k] = typeof v === "string" ? v : bad(`workload.env.${k} must be a string`);
  const timeoutSeconds = Number.isInteger(w.timeoutSeconds) && (w.timeoutSeconds as number) > 0 ? (w.timeoutSeconds as number) : bad("workload.timeoutSeconds");
  const padToSeconds = w.padTo === undefined ? undefined : Number.isInteger(w.padTo) && (w.padTo as number) > 0 && (w.padTo as number) <= timeoutSeconds ? (w.padTo as number) : bad("workload.padTo");
  const inputs = (Array.isArray(canonical.inputs) ? canonical.inputs : bad("inputs must be a list")).map((x, i) => {
    const o = isObj(x) ? x : bad(`inputs[${i}]`);
    return { name: str(o.name, `inputs[${i}].name`), mount: guestPath(o.mount, "/data/in", `inputs[${i}].mount`), mode: oneOf(o.mode, ["secure", "trusted"] as const, `inputs[${i}].mode`), scope: oneOf(o.scope, DATA_SCOPES, `inputs[${i}].scope`) };
  });
  const outputs = (Array.isArray(canonical.outputs) ? canonical.outputs : bad("outputs must be a list")).map((x, i) => {
    const o = isObj(x) ? x : bad(`outputs[${i}]`);
    const maxBytes = Number.isSafeInteger(o.maxBytes) && (o.maxBytes as number) >= 0 ? (o.maxBytes as number) : bad(`outputs[${i}].maxBytes`);
    return {
      name: str(o.name, `outputs[${i}].name`),
      mount: guestPath(o.mount, "/data/out", `outputs[${i}].mount`),
      mode: oneOf(o.mode, OUTPUT_MODES, `outputs[${i}].mode`),
      ...(o.recipient === undefined ? {} : { recipient: str(o.recipient, `outputs[${i}].recipient`) }),
      maxBytes,
      format: oneOf(o.format, OUTPUT_FORMATS, `outputs[${i}].format`),
    };
  });
  const a = isObj(canonical.attestation) ? canonical.attestation : bad("attestation (the pinned measurements and broker) missing");
  const hex = (v: unknown, n: number, what: string): string => (typeof v === "string" && new RegExp(`^[0-9a-f]{${n}}$`).test(v) ? v : bad(`${what} must be ${n} hex digits`));
  const attestation = { firewall: hex(a.firewall, 96, "attestation.firewall"), sandbox: hex(a.sandbox, 96, "attestation.sandbox"), broker: hex(a.broker, 64, "attestation.broker") };
  let consoleOut: RoomPlan["console"];
  if (canonical.console !== undefined) {
    const o = isObj(canonical.console) ? canonical.console : bad("console must be an object");
    const maxBytes = Number.isSafeInteger(o.maxBytes) && (o.maxBytes as number) >= 0 ? (o.maxBytes as number) : bad("console.maxBytes");
    const mode = oneOf(o.mode, ["secure", "trusted"] as const, "console.mode");
    consoleOut = { mode, maxBytes, ...(o.recipient === undefined ? {} : { recipient: str(o.recipient, "console.recipient") }) };
    if (mode === "trusted" && !consoleOut.recipient) bad("a trusted console names its recipient");
  }
  if (outputs.some((o) => o.name === CONSOLE_OUTPUT)) bad(`an output may not be named ${CONSOLE_OUTPUT}`);
  // Absent means none: the digest covers what was sent, so a host that strips them changes the digest.
  const collaborators = (canonical.collaborators === undefined ? [] : Array.isArray(canonical.collaborators) ? canonical.collaborators : bad("collaborators must be a list")).map((x, i) => {
    const o = isObj(x) ? x : bad(`collaborators[${i}]`);
    const sha = str(o.publicKeySha256, `collaborators[${i}].publicKeySha256`);
    return { name: str(o.name, `collaborators[${i}].name`), publicKeySha256: /^[0-9a-f]{64}$/.test(sha) ? sha : bad(`collaborators[${i}].publicKeySha256`) };
  });
  const g = canonical.governance === undefined ? {} : isObj(canonical.governance) ? canonical.governance : bad("governance must be an object");
  const consent = g.consent === undefined ? undefined : str(g.consent, "governance.consent");
  if (consent !== undefined && !/^https?:\/\//.test(consent)) bad("governance.consent must be an http(s) URL");
  return {
    name: str(canonical.name, "name"),
    collaborators,
    governance: consent ? { consent } : {},
    attestation,
    canonical,
    digest: createHash("sha256").update(canonicalText(canonical)).digest("hex"),
    workload: { command, env, timeoutSeconds, ...(padToSeconds !== undefined ? { padToSeconds } : {}) },
    inputs,
    outputs,
    ...(consoleOut ? { console: consoleOut } : {}),
  };
}
