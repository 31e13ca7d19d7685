// The room manifest (apiVersion airlock/v1): the types the rest of airlock works with, after
// validation. docs: README.md § "Room manifest". Paths in the file are relative to the manifest's
// folder; the loader resolves them.
import path from "node:path";

export const DATA_SCOPES = ["PUBLIC", "DOMAIN_OWNED", "USER_PRIVATE", "MULTI_USER_PRIVATE", "SEALED"] as const;
export type DataScope = (typeof DATA_SCOPES)[number];

/** A room, input or output name. */
export const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** An environment variable's name (bounded: it crosses to the sandbox in the Run message). */
export const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,255}$/;

/** A guest path where an input or output lives: normalized, absolute, strictly under `under` (e.g. /data/in). */
export function isGuestPath(p: string, under: "/data/in" | "/data/out"): boolean {
  return p.startsWith(`${under}/`) && p.length > under.length + 1 && path.posix.normalize(p) === p && !p.endsWith("/");
}

export const OUTPUT_MODES = ["secure", "trusted", "open"] as const;
export type OutputMode = (typeof OUTPUT_MODES)[number];

export const OUTPUT_FORMATS = ["bytes", "text", "json", "csv"] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export interface VmResources {
  memoryMiB: number;
  vcpus: number;
}

export interface Workload {
  /** Absolute path of the directory baked into the sandbox image at /workload (so it is measured). */
  bundle: string;
  command: string[];
  env: Record<string, string>;
  /** Bound on the workload's run time; the pair is torn down when it is exceeded. */
  timeoutSeconds: number;
  /**
   * Hide the run's duration: the firewall reports the workload's end no earlier than this many
   * seconds after it started (firewall-vm/README.md, the leakage budget). At most timeoutSeconds.
   */
  padToSeconds?: number;
  /** A service room: the workload is a server answering calls (firewall-vm/src/proxies/service). */
  service?: Service;
}

/** How the firewall speaks to the workload's server inside the sandbox. */
export const SERVICE_PROTOCOLS = ["http", "grpc"] as const;
export type ServiceProtocol = (typeof SERVICE_PROTOCOLS)[number];
/**
 * When the sandbox VM is restarted from its measured image (its scope back to where the room's
 * inputs put it): never; when a call from another session arrives while the scope is above PUBLIC
 * (`session`); or only when the scope would refuse the call (`conflict`).
 */
export const SERVICE_RESETS = ["never", "session", "conflict"] as const;
export type ServiceReset = (typeof SERVICE_RESETS)[number];
/** A gRPC service name (package-qualified) and method name, as EzPublicApi's CallRequest names them. */
export const SERVICE_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,15}$/;
export const METHOD_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
export const DEFAULT_CALL_BYTES = 1024 * 1024;
export const MAX_CALL_BYTES = 16 * 1024 * 1024;
export const MAX_SERVICE_METHODS = 64;

export interface ServiceMethod {
  service: string;
  method: string;
  /** Bound on a call's input (the public input or one decrypted field), refused before forwarding. */
  maxRequestBytes: number;
  /** Bound on the workload's answer; a longer one is refused, never cut. */
  maxResponseBytes: number;
}

export interface Service {
  /** The TCP port the workload listens on, on the sandbox's loopback. */
  port: number;
  protocol: ServiceProtocol;
  /** The methods callers may call; any other is refused before it reaches the sandbox. */
  methods: ServiceMethod[];
  reset: ServiceReset;
  /** Bound on one call inside the sandbox. */
  callTimeoutSeconds: number;
  /** The public API on the firewall's NIC: TLS with the attested key (default), or plaintext. */
  api: { tls: boolean };
}

export interface Input {
  name: string;
  /** Absolute path of the encrypted dataset on the host. */
  path: string;
  /** Where the workload finds it (read-only), under /data/in. */
  mount: string;
  mode: "secure" | "trusted";
  scope: DataScope;
}

export interface Output {
  name: string;
  /** Folder the workload writes into, under /data/out. */
  mount: string;
  mode: OutputMode;
  /** trusted mode: the collaborator's age recipient (age1…), read from a file or given inline. */
  recipient?: string;
  maxBytes: number;
  format: OutputFormat;
}

/**
 * The workload's stdout and stderr (and its exact exit status): shipped only when the manifest
 * declares it, sealed like a secure or trusted output. Absent: they never leave the sandbox.
 */
export interface ConsoleOutput {
  mode: "secure" | "trusted";
  recipient?: string;
  maxBytes: number;
}

/** The methods an egress entry may allow (proto/src/egress.ts has the helpers for endpoints). */
export const EGRESS_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] as const;
export type EgressMethod = (typeof EGRESS_METHODS)[number];

/**
 * How the firewall checks the endpoint's certificate (https only; trusted mode requires exactly
 * one). In the user's file `ca` names a PEM file; the validated manifest and the canonical form
 * hold the certificate itself as `caPem` (one normalized PEM CERTIFICATE block).
 */
export interface EgressTls {
  /** A CA (or self-signed server) certificate, PEM; the endpoint's chain must end at it. */
  caPem?: string;
  /** The server key's SHA-256 (of its DER SubjectPublicKeyInfo), 64 lower-case hex digits. */
  spkiSha256?: string;
}

/** A JSON Schema subset for open request bodies, checked by the firewall (policy/formats.ts parseSchema). */
export type EgressSchema = { [key: string]: EgressJson };
export type EgressJson = null | boolean | number | string | EgressJson[] | { [key: string]: EgressJson };

export interface EgressRules {
  /** Request body bound in bytes (default 64 KiB, at most 64 MiB): refused before it is buffered. */
  maxRequestBytes: number;
  /** Response body bound in bytes (default 1 MiB, at most 64 MiB). */
  maxResponseBytes: number;
  /** Request headers the workload may set: lower-case names, never hop-by-hop or framing ones. */
  headers: string[];
  /** Open mode only (absent otherwise; default bytes): the request body's format. */
  format?: OutputFormat;
  /** Open mode only, format json or csv: the schema the body must meet (csv: one row). */
  schema?: EgressSchema;
  /**
   * Open mode only (absent otherwise; default []): JavaScript regular expressions (flag "u"; a
   * leading "(?i)" adds "i") that no request body or path may match. At most 32, each at most 256
   * characters; no guarantee against slow (backtracking) patterns is made beyond that bound.
   */
  deny?: string[];
}

export interface Egress {
  /** Lower-case name (NAME_RE), unique in the room: receipts and the audit trail use it. */
  name: string;
  /** Normalized http(s) URL: scheme, host, port, path prefix ending in "/" (proto/src/egress.ts). */
  url: string;
  /** Allowed methods, at least one (default [GET]), no repeats. */
  methods: EgressMethod[];
  /** trusted (TLS to a pinned endpoint) | secure (bodies sealed to the room) | open (checked bodies; default). */
  mode: OutputMode;
  /** The scope of what the endpoint answers (default USER_PRIVATE): reading a response raises the sandbox's. */
  scope: DataScope;
  tls?: EgressTls;
  rules: EgressRules;
}

export interface Collaborator {
  name: string;
  /** PEM of the public key whose signature over the manifest digest is required. */
  publicKeyPem: string;
}

/** The governance party's endpoints, in the order the firewall's NIC forwards them. */
export const GOVERNANCE_ENDPOINTS = ["consent", "audit", "telemetry"] as const;

export interface Governance {
  /**
   * Consent endpoint, asked by the firewall itself from its NIC before the workload; the enforcer
   * fails closed when it is unreachable or says no.
   */
  consent?: string;
  /** Where the firewall also ships the signed audit trail, once the run is over (as the host gets it). */
  audit?: string;
  /** Where the firewall sends its metrics once the run is over: counts and timings only, never data. */
  telemetry?: string;
  /** The governance endpoints' pin (required when any is https: the firewall carries no CA bundle). */
  tls?: EgressTls;
}

/**
 * Who a room trusts, pinned in its canonical form and so in the digest collaborators sign and the
 * launch binds as host_data: the firewall and sandbox images' launch measurements (hex SNP launch
 * digests of airlock's reproducible images) and the key broker's identity (SHA-256 of its SPKI).
 * The host computes them; anyone can recompute them (`airlock manifest digest --json` shows them), and a
 * host that launches other images or names another broker is refused inside the VMs.
 */
export interface RoomPins {
  firewall: string;
  sandbox: string;
  broker: string;
}

export interface Manifest {
  apiVersion: "airlock/v1";
  name: string;
  /** Absolute path of the manifest file. */
  file: string;
  workload: Workload;
  inputs: Input[];
  outputs: Output[];
  console?: ConsoleOutput;
  egress: Egress[];
  collaborators: Collaborator[];
  governance: Governance;
  resources: { firewall: VmResources; sandbox: VmResources };
}

export const DEFAULT_RESOURCES = {
  firewall: { memoryMiB: 1024, vcpus: 1 },
  sandbox: { memoryMiB: 1024, vcpus: 1 },
} as const;
export const DEFAULT_TIMEOUT_SECONDS = 600;
export const DEFAULT_OUTPUT_MAX_BYTES = 64 * 1024 * 1024;
/** Open outputs are checked whole in the firewall before release, so they are held in its memory. */
export const OPEN_OUTPUT_MAX_BYTES = 16 * 1024 * 1024;
export const DEFAULT_CONSOLE_MAX_BYTES = 1024 * 1024;
/** The console is held in the firewall until the exit status (sealed with it) arrives. */
export const MAX_CONSOLE_BYTES = 16 * 1024 * 1024;
/** Egress bodies: defaults and the bound on both (the firewall holds a request body to check it). */
export const DEFAULT_EGRESS_REQUEST_BYTES = 64 * 1024;
export const DEFAULT_EGRESS_RESPONSE_BYTES = 1024 * 1024;
export const MAX_EGRESS_BODY_BYTES = 64 * 1024 * 1024;
/** Egress rule bounds: header names, deny patterns (count and length), a schema's canonical JSON. */
export const MAX_EGRESS_HEADERS = 32;
export const MAX_DENY_PATTERNS = 32;
export const MAX_DENY_PATTERN_CHARS = 256;
export const MAX_EGRESS_SCHEMA_BYTES = 16 * 1024;
/** The smallest VM that boots airlock's images (the initrd alone unpacks to ~110 MB of RAM). */
export const MIN_MEMORY_MIB = 512;
/** Names the run itself uses in --out and on the links: no output may take them. */
export const RESERVED_OUTPUT_NAMES = ["console", "audit", "summary"] as const;
/** The name the workload's console goes by as an output (on the links, in the trail, in --out). */
export const CONSOLE_OUTPUT = RESERVED_OUTPUT_NAMES[0];
