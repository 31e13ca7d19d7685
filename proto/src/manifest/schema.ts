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

export interface Egress {
  url: string;
  methods: string[];
  mode: OutputMode;
  rules: { maxRequestBytes?: number; maxResponseBytes?: number };
}

export interface Collaborator {
  name: string;
  /** PEM of the public key whose signature over the manifest digest is required. */
  publicKeyPem: string;
}

export interface Governance {
  /** Consent endpoint; the enforcer fails closed when it is unreachable or says no. */
  consent?: string;
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
/** The smallest VM that boots airlock's images (the initrd alone unpacks to ~110 MB of RAM). */
export const MIN_MEMORY_MIB = 512;
/** Names the run itself uses in --out and on the links: no output may take them. */
export const RESERVED_OUTPUT_NAMES = ["console", "audit", "summary"] as const;
/** The name the workload's console goes by as an output (on the links, in the trail, in --out). */
export const CONSOLE_OUTPUT = RESERVED_OUTPUT_NAMES[0];
