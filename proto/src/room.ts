// The room as the firewall VM receives it from the host: the canonical manifest (manifest/digest.ts).
// The host is untrusted, so the firewall checks its shape here and computes its digest itself;
// the digest is what the launch bound into SNP host_data, so a swapped room does not attest.
import { createHash } from "node:crypto";
import { AirlockError } from "./errors.ts";
import { canonicalJson } from "./manifest/digest.ts";
import type { DataScope, Egress, Governance, OutputFormat, OutputMode, Service } from "./manifest/schema.ts";
import { validateCanonical } from "./manifest/validate.ts";

export interface RoomPlan {
  name: string;
  digest: string;
  workload: { command: string[]; env: Record<string, string>; timeoutSeconds: number; padToSeconds?: number; service?: Service };
  inputs: { name: string; mount: string; mode: "secure" | "trusted"; scope: DataScope }[];
  outputs: { name: string; mount: string; mode: OutputMode; recipient?: string; maxBytes: number; format: OutputFormat }[];
  /** The workload's stdout/stderr and exact exit status, sealed; absent: they never leave. */
  console?: { mode: "secure" | "trusted"; recipient?: string; maxBytes: number };
  /** Collaborators whose signatures over the digest are required (manifest/sign.ts). */
  collaborators: { name: string; publicKeySha256: string }[];
  governance: Governance;
  /** The canonical manifest as received (its digest is `digest`): the agent checks it too. */
  canonical: Record<string, unknown>;
  /** What the signed digest pins: the images' launch measurements and the broker's key hash. */
  attestation: { firewall: string; sandbox: string; broker: string };
  /** The HTTP endpoints the workload may call through the firewall (firewall-vm/src/proxies). */
  egress: Egress[];
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

/**
 * Checks a canonical manifest received from the host, with the same validator the CLI applies to
 * the user's file (manifest/load.ts validateCanonical), and returns what the enforcer needs.
 */
export function parseRoom(canonical: unknown): RoomPlan {
  const digest = createHash("sha256").update(canonicalText(canonical)).digest("hex");
  const m = validateCanonical(canonical);
  return {
    name: m.name,
    collaborators: m.collaborators,
    governance: m.governance,
    attestation: m.attestation,
    canonical: canonical as Record<string, unknown>,
    digest,
    workload: { command: m.workload.command, env: m.workload.env, timeoutSeconds: m.workload.timeoutSeconds, ...(m.workload.padToSeconds !== undefined ? { padToSeconds: m.workload.padToSeconds } : {}), ...(m.workload.service ? { service: m.workload.service } : {}) },
    inputs: m.inputs,
    outputs: m.outputs.map((o) => ({ name: o.name, mount: o.mount, mode: o.mode, maxBytes: o.maxBytes, format: o.format, ...(o.recipient ? { recipient: o.recipient } : {}) })),
    ...(m.console ? { console: m.console } : {}),
    egress: m.egress,
  };
}
