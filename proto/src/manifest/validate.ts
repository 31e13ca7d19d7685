// Validates a room manifest. Every problem is reported with the file, the field path and what was
// expected; all problems are listed at once so a user fixes them in one pass.
//
// One validator for both forms of a manifest: the user's file (validateManifest: paths to the
// bundle, the inputs, recipient and key files, resolved and read here) and the canonical form the
// firewall receives from the host (validateCanonical: those replaced by what the digest covers —
// the bundle's tree digest, the keys' hashes, recipients inline — plus the attestation pins; no
// file is ever read). So the firewall holds a room to exactly the rules `airlock manifest check`
// applies, field path for field path.
import { X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { AirlockError } from "../errors.ts";
import { isNicHost } from "../firewall-nic.ts";
import { compileDenyPattern, egressUrlProblem, HEADER_NAME_RE, isFramingHeader, MAX_EGRESS_ENTRIES, parseEgressUrl, PROXY_PORT, sandboxPort } from "../egress.ts";
import {
  DATA_SCOPES,
  GOVERNANCE_ENDPOINTS,
  type Governance,
  ENV_NAME_RE,
  isGuestPath,
  NAME_RE,
  DEFAULT_CONSOLE_MAX_BYTES,
  DEFAULT_OUTPUT_MAX_BYTES,
  DEFAULT_RESOURCES,
  MAX_CONSOLE_BYTES,
  MIN_MEMORY_MIB,
  OPEN_OUTPUT_MAX_BYTES,
  RESERVED_OUTPUT_NAMES,
  DEFAULT_TIMEOUT_SECONDS,
  DEFAULT_EGRESS_REQUEST_BYTES,
  DEFAULT_EGRESS_RESPONSE_BYTES,
  EGRESS_METHODS,
  MAX_DENY_PATTERN_CHARS,
  MAX_DENY_PATTERNS,
  MAX_EGRESS_BODY_BYTES,
  MAX_EGRESS_HEADERS,
  MAX_EGRESS_SCHEMA_BYTES,
  OUTPUT_FORMATS,
  OUTPUT_MODES,
  type Collaborator,
  type ConsoleOutput,
  type Egress,
  type EgressMethod,
  type EgressRules,
  type EgressSchema,
  type EgressTls,
  type Input,
  type Manifest,
  type Output,
  type RoomPins,
  type Service,
  SERVICE_NAME_RE,
  METHOD_NAME_RE,
  SERVICE_PROTOCOLS,
  SERVICE_RESETS,
  DEFAULT_CALL_BYTES,
  MAX_CALL_BYTES,
  MAX_SERVICE_METHODS,
  type VmResources,
  type Workload,
} from "./schema.ts";

const AGE_RECIPIENT_RE = /^age1[02-9ac-hj-np-z]{58}$/;

type Obj = Record<string, unknown>;

/** Which form is walked: the user's file (paths resolved from its folder) or the canonical form. */
type Form = { kind: "file"; dir: string } | { kind: "canonical" };

const HEX64 = /^[0-9a-f]{64}$/;
const HEX96 = /^[0-9a-f]{96}$/;

/** Collects problems while walking the parsed YAML. */
class Checker {
  readonly problems: string[] = [];
  constructor(readonly form: Form) {}

  fail(at: string, expected: string, got?: unknown): undefined {
    this.problems.push(`${at}: expected ${expected}${got === undefined ? "" : `, got ${describe(got)}`}`);
    return undefined;
  }

  object(v: unknown, at: string): Obj | undefined {
    if (v !== null && typeof v === "object" && !Array.isArray(v)) return v as Obj;
    return this.fail(at, "a mapping", v);
  }

  /** Flags keys the schema does not know: a typo must not silently drop a rule. */
  keys(o: Obj, at: string, allowed: string[]): void {
    for (const k of Object.keys(o)) {
      if (!allowed.includes(k)) this.problems.push(`${join(at, k)}: unknown field (allowed: ${allowed.join(", ")})`);
    }
  }

  string(o: Obj, key: string, at: string, opts: { optional?: boolean; re?: RegExp; reHelp?: string } = {}): string | undefined {
    const v = o[key];
    if (v === undefined && opts.optional) return undefined;
    if (typeof v !== "string" || v.length === 0) return this.fail(join(at, key), "a non-empty string", v);
    if (opts.re && !opts.re.test(v)) return this.fail(join(at, key), opts.reHelp ?? `a string matching ${opts.re}`, v);
    return v;
  }

  integer(o: Obj, key: string, at: string, min: number, max: number, dflt: number): number {
    const v = o[key];
    if (v === undefined) return dflt;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      this.fail(join(at, key), `an integer from ${min} to ${max}`, v);
      return dflt;
    }
    return v;
  }

  oneOf<T extends string>(o: Obj, key: string, at: string, options: readonly T[], dflt?: T): T | undefined {
    const v = o[key];
    if (v === undefined && dflt !== undefined) return dflt;
    if (typeof v === "string" && (options as readonly string[]).includes(v)) return v as T;
    return this.fail(join(at, key), `one of ${options.join(" | ")}`, v);
  }

  list(o: Obj, key: string, at: string): unknown[] {
    const v = o[key];
    if (v === undefined || v === null) return [];
    if (Array.isArray(v)) return v;
    this.fail(join(at, key), "a list", v);
    return [];
  }

  /** A path relative to the manifest's folder that must exist with the given kind. */
  file(o: Obj, key: string, at: string, kind: "file" | "directory"): string | undefined {
    const rel = this.string(o, key, at);
    if (rel === undefined || this.form.kind !== "file") return undefined;
    const abs = path.resolve(this.form.dir, rel);
    let st;
    try {
      st = statSync(abs);
    } catch {
      return this.fail(join(at, key), `an existing ${kind} (relative to the manifest's folder)`, `${rel} (not found at ${abs})`);
    }
    if (kind === "file" ? !st.isFile() : !st.isDirectory()) return this.fail(join(at, key), `a ${kind}`, rel);
    return abs;
  }

  guestPath(o: Obj, key: string, at: string, under: "/data/in" | "/data/out"): string | undefined {
    const v = this.string(o, key, at);
    if (v === undefined) return undefined;
    if (!isGuestPath(v, under)) return this.fail(join(at, key), `a normalized absolute path under ${under}/`, v);
    return v;
  }
}

function join(at: string, key: string | number): string {
  if (typeof key === "number") return `${at}[${key}]`;
  return at ? `${at}.${key}` : key;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function uniqueNames(c: Checker, items: { name: string }[], at: string): void {
  const seen = new Set<string>();
  items.forEach((it, i) => {
    if (seen.has(it.name)) c.problems.push(`${at}[${i}].name: duplicate name ${JSON.stringify(it.name)}`);
    seen.add(it.name);
  });
}

function resources(c: Checker, o: Obj | undefined, at: string, dflt: VmResources): VmResources {
  if (!o) return { ...dflt };
  c.keys(o, at, ["memoryMiB", "vcpus"]);
  return { memoryMiB: c.integer(o, "memoryMiB", at, MIN_MEMORY_MIB, 65536, dflt.memoryMiB), vcpus: c.integer(o, "vcpus", at, 1, 64, dflt.vcpus) };
}

/**
 * A manifest in its canonical form (manifest/digest.ts canonicalManifest) as the firewall gets it:
 * what the user's manifest says, with the bundle as its tree digest, collaborators' keys as their
 * SHA-256, recipients inline, and the pins.
 */
export interface CanonicalManifest extends Omit<Manifest, "file" | "workload" | "inputs" | "collaborators"> {
  workload: Omit<Workload, "bundle"> & { bundleTree: string };
  inputs: Omit<Input, "path">[];
  collaborators: { name: string; publicKeySha256: string }[];
  attestation: RoomPins;
}

/** Validates an already-parsed document; `file` is used for messages and to resolve paths. */
export function validateManifest(doc: unknown, file: string): Manifest {
  const c = new Checker({ kind: "file", dir: path.dirname(file) });
  const w = walk(c, doc);
  if (c.problems.length > 0 || !w) throw manifestError(file, c.problems);
  const { pins: _pins, bundleTree: _tree, bundle, ...rest } = w;
  return { ...rest, file, workload: { ...w.workload, bundle: bundle! }, inputs: w.inputs as Input[], collaborators: w.collaborators as Collaborator[] } as Manifest;
}

/**
 * Validates a canonical manifest received from the host (the firewall's check: the host is not
 * trusted); throws GUEST_PROTOCOL listing every problem by its field path.
 */
export function validateCanonical(doc: unknown): CanonicalManifest {
  const c = new Checker({ kind: "canonical" });
  const w = walk(c, doc);
  if (c.problems.length > 0 || !w) throw new AirlockError("GUEST_PROTOCOL", `the room from the host is not a valid canonical manifest:\n${c.problems.slice(0, 20).map((p) => `  - ${p}`).join("\n")}`);
  const { pins, bundleTree, bundle: _bundle, ...rest } = w;
  return { ...rest, workload: { ...w.workload, bundleTree: bundleTree! }, inputs: w.inputs, collaborators: w.collaborators as CanonicalManifest["collaborators"], attestation: pins! };
}

/** What both forms share, and what each has of its own (filled for the form walked). */
interface Walked extends Omit<Manifest, "file" | "inputs" | "collaborators" | "workload"> {
  workload: Omit<Workload, "bundle">;
  bundle?: string;
  bundleTree?: string;
  inputs: (Omit<Input, "path"> & { path?: string })[];
  collaborators: { name: string; publicKeyPem?: string; publicKeySha256?: string }[];
  pins?: RoomPins;
}

function walk(c: Checker, doc: unknown): Walked | undefined {
  const canonical = c.form.kind === "canonical";
  const top = c.object(doc, "(top level)");
  if (!top) return undefined;
  c.keys(top, "", ["apiVersion", "name", "workload", "inputs", "outputs", "console", "egress", "collaborators", "governance", "resources", ...(canonical ? ["attestation"] : [])]);
  if (top.apiVersion !== "airlock/v1") c.fail("apiVersion", '"airlock/v1"', top.apiVersion);
  const name = c.string(top, "name", "", { re: NAME_RE, reHelp: "a lower-case name of letters, digits and '-' (at most 63)" });

  let pins: RoomPins | undefined;
  if (canonical) {
    const a = c.object(top.attestation, "attestation") ?? {};
    c.keys(a, "attestation", ["firewall", "sandbox", "broker"]);
    const firewall = c.string(a, "firewall", "attestation", { re: HEX96, reHelp: "96 hex digits (a launch measurement)" });
    const sandbox = c.string(a, "sandbox", "attestation", { re: HEX96, reHelp: "96 hex digits (a launch measurement)" });
    const broker = c.string(a, "broker", "attestation", { re: HEX64, reHelp: "64 hex digits (the broker key's SHA-256)" });
    if (firewall && sandbox && broker) pins = { firewall, sandbox, broker };
  }

  const w = c.object(top.workload, "workload") ?? {};
  c.keys(w, "workload", [canonical ? "bundleTree" : "bundle", "command", "env", "timeoutSeconds", "padTo", "service"]);
  const bundle = canonical ? undefined : c.file(w, "bundle", "workload", "directory");
  const bundleTree = canonical ? c.string(w, "bundleTree", "workload", { re: HEX64, reHelp: "64 hex digits (the bundle's tree digest)" }) : undefined;
  const command = w.command;
  if (!Array.isArray(command) || command.length === 0 || !command.every((x) => typeof x === "string" && x.length > 0)) {
    c.fail("workload.command", "a non-empty list of non-empty strings (the argv, e.g. [\"/bin/sh\", \"/workload/run.sh\"])", command);
  }
  const env: Record<string, string> = {};
  if (w.env !== undefined) {
    const e = c.object(w.env, "workload.env");
    for (const [k, v] of Object.entries(e ?? {})) {
      if (!ENV_NAME_RE.test(k)) c.fail(`workload.env.${k}`, "an environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most 256 characters)");
      else if (typeof v !== "string") c.fail(`workload.env.${k}`, "a string value (quote numbers)", v);
      else env[k] = v;
    }
  }
  const timeoutSeconds = c.integer(w, "timeoutSeconds", "workload", 1, 7 * 24 * 3600, DEFAULT_TIMEOUT_SECONDS);
  const padToSeconds = w.padTo === undefined ? undefined : c.integer(w, "padTo", "workload", 1, timeoutSeconds, timeoutSeconds);
  const service = w.service === undefined ? undefined : walkService(c, w.service);

  const inputs: Walked["inputs"] = [];
  c.list(top, "inputs", "").forEach((raw, i) => {
    const at = `inputs[${i}]`;
    const o = c.object(raw, at);
    if (!o) return;
    c.keys(o, at, ["name", ...(canonical ? [] : ["path"]), "mount", "mode", "scope"]);
    const input = {
      name: c.string(o, "name", at, { re: NAME_RE, reHelp: "a lower-case name" }),
      ...(canonical ? {} : { path: c.file(o, "path", at, "file") }),
      mount: c.guestPath(o, "mount", at, "/data/in"),
      mode: c.oneOf(o, "mode", at, ["secure", "trusted"] as const, "secure"),
      scope: c.oneOf(o, "scope", at, DATA_SCOPES, "USER_PRIVATE"),
    };
    if (Object.values(input).every((v) => v !== undefined)) inputs.push(input as Walked["inputs"][number]);
  });
  uniqueNames(c, inputs, "inputs");

  const outputs: Output[] = [];
  c.list(top, "outputs", "").forEach((raw, i) => {
    const at = `outputs[${i}]`;
    const o = c.object(raw, at);
    if (!o) return;
    c.keys(o, at, ["name", "mount", "mode", "recipient", "maxBytes", "format"]);
    const mode = c.oneOf(o, "mode", at, OUTPUT_MODES, "secure");
    let recipient: string | undefined;
    if (mode === "trusted") {
      const r = c.string(o, "recipient", at);
      if (r !== undefined) recipient = readRecipient(c, r, `${at}.recipient`);
    } else if (o.recipient !== undefined) {
      c.fail(`${at}.recipient`, `no recipient (only trusted outputs name one; this one is ${mode})`);
    }
    const outName = c.string(o, "name", at, { re: NAME_RE, reHelp: "a lower-case name" });
    if (outName !== undefined && (RESERVED_OUTPUT_NAMES as readonly string[]).includes(outName)) c.fail(`${at}.name`, `a name other than ${RESERVED_OUTPUT_NAMES.join(", ")} (the run's own; declare the console under console:)`, outName);
    const out = {
      name: outName,
      mount: c.guestPath(o, "mount", at, "/data/out"),
      mode,
      maxBytes: mode === "open" ? c.integer(o, "maxBytes", at, 0, OPEN_OUTPUT_MAX_BYTES, Math.min(DEFAULT_OUTPUT_MAX_BYTES, OPEN_OUTPUT_MAX_BYTES)) : c.integer(o, "maxBytes", at, 0, 2 ** 40, DEFAULT_OUTPUT_MAX_BYTES),
      format: c.oneOf(o, "format", at, OUTPUT_FORMATS, "bytes"),
    };
    if (Object.values(out).every((v) => v !== undefined) && (mode !== "trusted" || recipient)) {
      outputs.push({ ...(out as Omit<Output, "recipient">), ...(recipient ? { recipient } : {}) });
    }
  });
  uniqueNames(c, outputs, "outputs");

  let consoleOut: ConsoleOutput | undefined;
  if (top.console !== undefined) {
    const o = c.object(top.console, "console") ?? {};
    c.keys(o, "console", ["mode", "recipient", "maxBytes"]);
    const mode = c.oneOf(o, "mode", "console", ["secure", "trusted"] as const, "secure");
    let recipient: string | undefined;
    if (mode === "trusted") {
      const r = c.string(o, "recipient", "console");
      if (r !== undefined) recipient = readRecipient(c, r, "console.recipient");
    } else if (o.recipient !== undefined) {
      c.fail("console.recipient", "no recipient (only a trusted console names one)");
    }
    const maxBytes = c.integer(o, "maxBytes", "console", 0, MAX_CONSOLE_BYTES, DEFAULT_CONSOLE_MAX_BYTES);
    if (mode && (mode !== "trusted" || recipient)) consoleOut = { mode, maxBytes, ...(recipient ? { recipient } : {}) };
  }

  const egress = walkEgress(c, top);

  const collaborators: Walked["collaborators"] = [];
  c.list(top, "collaborators", "").forEach((raw, i) => {
    const at = `collaborators[${i}]`;
    const o = c.object(raw, at);
    if (!o) return;
    c.keys(o, at, ["name", canonical ? "publicKeySha256" : "publicKey"]);
    const cname = c.string(o, "name", at);
    if (canonical) {
      const sha = c.string(o, "publicKeySha256", at, { re: HEX64, reHelp: "64 hex digits (the key's SHA-256)" });
      if (cname && sha) collaborators.push({ name: cname, publicKeySha256: sha });
      return;
    }
    const keyFile = c.file(o, "publicKey", at, "file");
    if (cname && keyFile) {
      const pem = readFileSync(keyFile, "utf8");
      if (!pem.includes("-----BEGIN PUBLIC KEY-----")) c.fail(`${at}.publicKey`, "a PEM public key file (-----BEGIN PUBLIC KEY-----)", path.basename(keyFile));
      else collaborators.push({ name: cname, publicKeyPem: pem });
    }
  });
  uniqueNames(c, collaborators, "collaborators");

  const g = top.governance === undefined ? {} : c.object(top.governance, "governance") ?? {};
  c.keys(g, "governance", [...GOVERNANCE_ENDPOINTS, "tls"]);
  // The governance party's endpoints, each asked by the firewall from its NIC; one pin for all.
  const governance: Governance = {};
  let anyHttps = false;
  for (const key of GOVERNANCE_ENDPOINTS) {
    const url = c.string(g, key, "governance", { optional: true });
    if (url === undefined) continue;
    try {
      const u = new URL(url);
      if ((u.protocol !== "http:" && u.protocol !== "https:") || u.username || u.password || !isNicHost(u.hostname)) throw new Error("not one");
      anyHttps ||= u.protocol === "https:";
      governance[key] = url;
    } catch {
      c.fail(`governance.${key}`, "an http(s) URL whose host is a DNS name or an IPv4 address, with no user name", url);
    }
  }
  if (g.tls !== undefined) {
    const t = c.object(g.tls, "governance.tls");
    const tls = t ? walkTls(c, t, "governance.tls", canonical) : undefined;
    if (tls) governance.tls = tls;
    if (!anyHttps) c.fail("governance.tls", "no tls unless a governance endpoint is an https: URL");
  } else if (anyHttps) {
    c.fail("governance.tls", `a pin for the https: governance endpoints: tls.${canonical ? "caPem" : "ca"} or tls.spkiSha256 (the firewall carries no CA bundle)`);
  }

  const r = top.resources === undefined ? {} : c.object(top.resources, "resources") ?? {};
  c.keys(r, "resources", ["firewall", "sandbox"]);
  const res = {
    firewall: resources(c, r.firewall === undefined ? undefined : c.object(r.firewall, "resources.firewall"), "resources.firewall", DEFAULT_RESOURCES.firewall),
    sandbox: resources(c, r.sandbox === undefined ? undefined : c.object(r.sandbox, "resources.sandbox"), "resources.sandbox", DEFAULT_RESOURCES.sandbox),
  };

  const mounts = [...inputs.map((x) => x.mount), ...outputs.map((x) => x.mount)];
  mounts.forEach((m, i) => {
    if (mounts.some((n, j) => j !== i && (n === m || m.startsWith(`${n}/`)))) c.problems.push(`mount ${m}: overlaps another input or output mount`);
  });

  if (service) {
    // A service room answers calls for as long as it runs: nothing is collected at an end.
    if (outputs.length > 0 || consoleOut) c.problems.push("workload.service: a service room has no outputs or console (its answers are its outputs); remove them or the service");
    if (egress.length > 0) c.problems.push("workload.service: egress from a service room is not supported yet; remove the egress entries or the service");
    if (padToSeconds !== undefined) c.problems.push("workload.padTo: a service room has no end to pad; remove it");
    if (inputs.length > 0) c.problems.push("workload.service: a service room takes its data from calls; inputs are not supported in service rooms yet");
  }

  if (c.problems.length > 0) return undefined;
  return {
    apiVersion: "airlock/v1",
    name: name!,
    ...(bundle ? { bundle } : {}),
    ...(bundleTree ? { bundleTree } : {}),
    ...(pins ? { pins } : {}),
    workload: { command: command as string[], env, timeoutSeconds, ...(padToSeconds !== undefined ? { padToSeconds } : {}), ...(service ? { service } : {}) },
    inputs,
    outputs,
    ...(consoleOut ? { console: consoleOut } : {}),
    egress,
    collaborators,
    governance,
    resources: res,
  };
}

function walkService(c: Checker, raw: unknown): Service | undefined {
  const at = "workload.service";
  const o = c.object(raw, at);
  if (!o) return undefined;
  c.keys(o, at, ["port", "protocol", "methods", "reset", "callTimeoutSeconds", "api"]);
  const port = c.integer(o, "port", at, 1, 65535, 0);
  if (o.port === undefined) c.fail(`${at}.port`, "the TCP port the workload listens on inside the sandbox (1-65535)");
  const protocol = c.oneOf(o, "protocol", at, SERVICE_PROTOCOLS, "http");
  const reset = c.oneOf(o, "reset", at, SERVICE_RESETS, "never");
  const callTimeoutSeconds = c.integer(o, "callTimeoutSeconds", at, 1, 3600, 30);
  const apiRaw = o.api === undefined ? {} : c.object(o.api, `${at}.api`);
  let tls = true;
  if (apiRaw) {
    c.keys(apiRaw, `${at}.api`, ["tls"]);
    if (apiRaw.tls !== undefined && typeof apiRaw.tls !== "boolean") c.fail(`${at}.api.tls`, "true or false", apiRaw.tls);
    else if (apiRaw.tls === false) tls = false;
  }
  const methods: Service["methods"] = [];
  const list = c.list(o, "methods", at);
  if (list.length === 0) c.fail(`${at}.methods`, "a non-empty list of {service, method} (the only calls the firewall forwards)");
  if (list.length > MAX_SERVICE_METHODS) c.fail(`${at}.methods`, `at most ${MAX_SERVICE_METHODS} methods`, `${list.length}`);
  list.slice(0, MAX_SERVICE_METHODS).forEach((m, i) => {
    const mat = `${at}.methods[${i}]`;
    const mo = c.object(m, mat);
    if (!mo) return;
    c.keys(mo, mat, ["service", "method", "maxRequestBytes", "maxResponseBytes"]);
    const service = c.string(mo, "service", mat, { re: SERVICE_NAME_RE, reHelp: "a gRPC service name such as helloworld.Greeter" });
    const method = c.string(mo, "method", mat, { re: METHOD_NAME_RE, reHelp: "a gRPC method name such as SayHello" });
    const maxRequestBytes = c.integer(mo, "maxRequestBytes", mat, 1, MAX_CALL_BYTES, DEFAULT_CALL_BYTES);
    const maxResponseBytes = c.integer(mo, "maxResponseBytes", mat, 1, MAX_CALL_BYTES, DEFAULT_CALL_BYTES);
    if (service === undefined || method === undefined) return;
    if (methods.some((x) => x.service === service && x.method === method)) c.problems.push(`${mat}: ${service}/${method} is listed twice`);
    methods.push({ service, method, maxRequestBytes, maxResponseBytes });
  });
  return { port, protocol: protocol ?? "http", methods, reset: reset ?? "never", callTimeoutSeconds, api: { tls } };
}

/** Bound on a CA certificate file (a PEM certificate is 1-3 KiB). */
const MAX_CA_FILE_BYTES = 64 * 1024;
const CERT_BLOCK_RE = /-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----/g;

/** One PEM CERTIFICATE block, re-encoded by node:crypto (so one room has one canonical form), or why not. */
function certificatePem(text: string): { pem: string } | { problem: string } {
  if (text.includes("PRIVATE KEY-----")) return { problem: "a certificate with no private key beside it" };
  const blocks = text.match(CERT_BLOCK_RE) ?? [];
  if (blocks.length !== 1) return { problem: `exactly one PEM certificate (-----BEGIN CERTIFICATE-----), found ${blocks.length}` };
  try {
    return { pem: new X509Certificate(blocks[0]!).toString() };
  } catch (err) {
    return { problem: `a PEM certificate that parses (${(err as Error).message.slice(0, 80)})` };
  }
}

/** A JSON value as YAML or JSON.parse gives it (plain mappings and lists, finite numbers), at most `depth` deep. */
function isJson(v: unknown, depth: number): boolean {
  if (depth < 0) return false;
  if (v === null || typeof v === "string" || typeof v === "boolean") return true;
  if (typeof v === "number") return Number.isFinite(v);
  if (Array.isArray(v)) return v.every((x) => isJson(x, depth - 1));
  if (typeof v !== "object") return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  if (proto !== Object.prototype && proto !== null) return false;
  return Object.values(v as Obj).every((x) => isJson(x, depth - 1));
}

/**
 * The egress entries (firewall-vm/src/proxies/README.md § The manifest). The file form names the
 * CA certificate as a file (tls.ca); the canonical form holds it (tls.caPem). Format, schema and
 * deny exist for open entries only, with their defaults filled in, so the canonical form is
 * exactly what this walk accepts.
 */
function walkEgress(c: Checker, top: Obj): Egress[] {
  const canonical = c.form.kind === "canonical";
  const entries = c.list(top, "egress", "");
  if (entries.length > MAX_EGRESS_ENTRIES) c.fail("egress", `at most ${MAX_EGRESS_ENTRIES} entries`, `${entries.length} entries`);
  const egress: Egress[] = [];
  const endpoints = new Map<string, number>();
  const names = new Map<string, number>();
  entries.forEach((raw, i) => {
    const at = `egress[${i}]`;
    const o = c.object(raw, at);
    if (!o) return;
    const before = c.problems.length;
    c.keys(o, at, ["name", "url", "methods", "mode", "scope", "tls", "rules"]);
    const name = c.string(o, "name", at, { re: NAME_RE, reHelp: "a lower-case name of letters, digits and '-' (at most 63)" });
    if (name !== undefined) {
      if (names.has(name)) c.problems.push(`${at}.name: duplicate name ${JSON.stringify(name)} (as egress[${names.get(name)}])`);
      else names.set(name, i);
    }
    const mode = c.oneOf(o, "mode", at, OUTPUT_MODES, "open");
    const scope = c.oneOf(o, "scope", at, DATA_SCOPES, "USER_PRIVATE");

    const rawUrl = c.string(o, "url", at);
    let url: string | undefined;
    let scheme: "http" | "https" | undefined;
    if (rawUrl !== undefined) {
      const problem = egressUrlProblem(rawUrl);
      if (problem) {
        c.fail(`${at}.url`, problem, rawUrl);
      } else {
        url = new URL(rawUrl).href;
        const u = parseEgressUrl(url);
        scheme = u.scheme;
        const port = sandboxPort({ url });
        if (port === PROXY_PORT) c.fail(`${at}.url`, `a port other than ${PROXY_PORT} (the sandbox agent's HTTP proxy listens there)`, rawUrl);
        // The sandbox sees every endpoint as plain HTTP on sandboxPort: http:80 and https:443 meet on 80.
        const key = `${u.host}:${port}${u.pathPrefix}`;
        const other = endpoints.get(key);
        if (other !== undefined) c.problems.push(`${at}.url: the same host, port and path prefix as egress[${other}] (in the sandbox, where http:80 and https:443 are both port 80)`);
        else endpoints.set(key, i);
      }
    }

    let methods: EgressMethod[] = ["GET"];
    if (o.methods !== undefined) {
      methods = [];
      if (!Array.isArray(o.methods) || o.methods.length === 0) {
        c.fail(`${at}.methods`, `a non-empty list of methods (${EGRESS_METHODS.join(" | ")}; default [GET])`, o.methods);
      } else {
        o.methods.forEach((m, j) => {
          if (typeof m !== "string" || !(EGRESS_METHODS as readonly string[]).includes(m)) c.fail(`${at}.methods[${j}]`, `one of ${EGRESS_METHODS.join(" | ")}`, m);
          else if (methods.includes(m as EgressMethod)) c.problems.push(`${at}.methods[${j}]: duplicate method ${m}`);
          else methods.push(m as EgressMethod);
        });
      }
    }

    let tls: EgressTls | undefined;
    if (o.tls !== undefined) {
      const t = c.object(o.tls, `${at}.tls`);
      if (t) tls = walkTls(c, t, `${at}.tls`, canonical);
      if (scheme === "http") c.fail(`${at}.tls`, "no tls on an http: URL (tls pins an https: endpoint's certificate)");
    }
    if (mode === "trusted" && scheme === "http") c.fail(`${at}.url`, "an https: URL (a trusted endpoint is reached over TLS, pinned)", rawUrl);
    // The firewall carries no CA bundle: every https: endpoint names what it trusts.
    if (scheme === "https" && o.tls === undefined) c.fail(`${at}.tls`, `a pin for an https: endpoint: tls.${canonical ? "caPem" : "ca"} or tls.spkiSha256`);

    const ra = `${at}.rules`;
    const r = o.rules === undefined ? {} : c.object(o.rules, ra) ?? {};
    c.keys(r, ra, ["maxRequestBytes", "maxResponseBytes", "headers", "format", "schema", "deny"]);
    const rules: EgressRules = {
      maxRequestBytes: c.integer(r, "maxRequestBytes", ra, 0, MAX_EGRESS_BODY_BYTES, DEFAULT_EGRESS_REQUEST_BYTES),
      maxResponseBytes: c.integer(r, "maxResponseBytes", ra, 0, MAX_EGRESS_BODY_BYTES, DEFAULT_EGRESS_RESPONSE_BYTES),
      headers: walkHeaders(c, r, ra),
    };
    if (mode !== undefined && mode !== "open") {
      const why = mode === "trusted" ? "a trusted endpoint's request bodies leave over TLS to its pinned endpoint, unchecked" : "a secure endpoint's request bodies leave sealed to the room, unchecked";
      for (const k of ["format", "schema", "deny"]) if (r[k] !== undefined) c.fail(`${ra}.${k}`, `no ${k}: format, schema and deny check open request bodies only; ${why}`);
    } else if (mode === "open") {
      const format = c.oneOf(r, "format", ra, OUTPUT_FORMATS, "bytes");
      if (format) rules.format = format;
      if (r.schema !== undefined) {
        if (r.schema === null || typeof r.schema !== "object" || Array.isArray(r.schema) || !isJson(r.schema, 32)) c.fail(`${ra}.schema`, "a mapping of plain JSON values (a JSON Schema subset; at most 32 levels deep)", r.schema);
        else if (JSON.stringify(r.schema).length > MAX_EGRESS_SCHEMA_BYTES) c.fail(`${ra}.schema`, `a schema of at most ${MAX_EGRESS_SCHEMA_BYTES} bytes as JSON`);
        else if (format !== "json" && format !== "csv") c.fail(`${ra}.schema`, `no schema unless format is json or csv (format is ${format ?? "invalid"})`);
        else rules.schema = r.schema as EgressSchema;
      }
      rules.deny = walkDeny(c, r, ra);
    }

    if (c.problems.length === before && name && url && mode && scope) {
      egress.push({ name, url, methods, mode, scope, ...(tls ? { tls } : {}), rules });
    }
  });
  return egress;
}

function walkTls(c: Checker, t: Obj, at: string, canonical: boolean): EgressTls | undefined {
  const caKey = canonical ? "caPem" : "ca";
  c.keys(t, at, [caKey, "spkiSha256"]);
  const hasCa = t[caKey] !== undefined;
  const hasSpki = t.spkiSha256 !== undefined;
  if (hasCa && hasSpki) return c.fail(at, `exactly one pin: ${caKey} or spkiSha256, not both`);
  if (!hasCa && !hasSpki) return c.fail(at, `a pin: ${caKey} (${canonical ? "a PEM certificate" : "a CA certificate file, PEM"}) or spkiSha256 (the server key's SHA-256, 64 hex digits)`);
  if (hasSpki) {
    const spkiSha256 = c.string(t, "spkiSha256", at, { re: HEX64, reHelp: "64 lower-case hex digits (SHA-256 of the server's DER SubjectPublicKeyInfo)" });
    return spkiSha256 ? { spkiSha256 } : undefined;
  }
  if (canonical) {
    const text = c.string(t, "caPem", at);
    if (text === undefined) return undefined;
    const cert = certificatePem(text);
    if ("problem" in cert) return c.fail(`${at}.caPem`, cert.problem);
    if (cert.pem !== text) return c.fail(`${at}.caPem`, "the certificate in its normalized PEM form (as airlock writes it)");
    return { caPem: cert.pem };
  }
  const file = c.file(t, "ca", at, "file");
  if (file === undefined) return undefined;
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    return c.fail(`${at}.ca`, "a readable certificate file", `${String(t.ca)} (${(err as NodeJS.ErrnoException).code ?? "unreadable"})`);
  }
  if (data.length > MAX_CA_FILE_BYTES) return c.fail(`${at}.ca`, `a certificate file of at most ${MAX_CA_FILE_BYTES} bytes`, String(t.ca));
  const cert = certificatePem(data.toString("utf8"));
  if ("problem" in cert) return c.fail(`${at}.ca`, `a file holding ${cert.problem}`, String(t.ca));
  return { caPem: cert.pem };
}

function walkHeaders(c: Checker, r: Obj, at: string): string[] {
  const list = c.list(r, "headers", at);
  if (list.length > MAX_EGRESS_HEADERS) c.fail(`${at}.headers`, `at most ${MAX_EGRESS_HEADERS} header names`, `${list.length} names`);
  const headers: string[] = [];
  list.forEach((h, j) => {
    const hat = `${at}.headers[${j}]`;
    if (typeof h !== "string" || h.length > 64 || !HEADER_NAME_RE.test(h) || h !== h.toLowerCase()) c.fail(hat, "a lower-case header name (letters, digits and ! # $ % & ' * + - . ^ _ ` | ~; at most 64)", h);
    else if (isFramingHeader(h)) c.fail(hat, "a header other than host, connection, content-length, transfer-encoding, te, trailer, upgrade, keep-alive and proxy-* (the proxy manages framing and hop-by-hop headers itself)", h);
    else if (headers.includes(h)) c.problems.push(`${hat}: duplicate header ${JSON.stringify(h)}`);
    else headers.push(h);
  });
  return headers;
}

function walkDeny(c: Checker, r: Obj, at: string): string[] {
  const list = c.list(r, "deny", at);
  if (list.length > MAX_DENY_PATTERNS) c.fail(`${at}.deny`, `at most ${MAX_DENY_PATTERNS} patterns`, `${list.length} patterns`);
  const deny: string[] = [];
  list.forEach((p, j) => {
    const pat = `${at}.deny[${j}]`;
    if (typeof p !== "string" || p.length === 0 || p.length > MAX_DENY_PATTERN_CHARS) return c.fail(pat, `a regular expression of 1 to ${MAX_DENY_PATTERN_CHARS} characters`, p);
    try {
      compileDenyPattern(p);
      deny.push(p);
    } catch (err) {
      c.fail(pat, `a JavaScript regular expression (flag u; a leading (?i) ignores case): ${(err as Error).message.slice(0, 100)}`, p);
    }
    return undefined;
  });
  return deny;
}

function readRecipient(c: Checker, value: string, at: string): string | undefined {
  if (AGE_RECIPIENT_RE.test(value)) return value;
  // The canonical form holds the recipient itself: the firewall reads no file the host names.
  if (c.form.kind !== "file") return c.fail(at, "an age recipient (age1…)", value);
  const abs = path.resolve(c.form.dir, value);
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch {
    return c.fail(at, "an age recipient (age1…) or a file holding one", `${value} (no such file)`);
  }
  const line = text.split("\n").map((l) => l.trim()).find((l) => l && !l.startsWith("#"));
  if (!line || !AGE_RECIPIENT_RE.test(line)) return c.fail(at, "a file whose first line is an age recipient (age1…)", value);
  return line;
}

function manifestError(file: string, problems: string[]): AirlockError {
  const list = problems.map((p) => `  - ${p}`).join("\n");
  return new AirlockError("MANIFEST_INVALID", `${file}: invalid room manifest:\n${list}`, {
    hint: "fix the fields listed above (see README.md § Room manifest)",
  });
}
