// Validates a room manifest. Every problem is reported with the file, the field path and what was
// expected; all problems are listed at once so a user fixes them in one pass.
//
// One validator for both forms of a manifest: the user's file (validateManifest: paths to the
// bundle, the inputs, recipient and key files, resolved and read here) and the canonical form the
// firewall receives from the host (validateCanonical: those replaced by what the digest covers —
// the bundle's tree digest, the keys' hashes, recipients inline — plus the attestation pins; no
// file is ever read). So the firewall holds a room to exactly the rules `airlock manifest check`
// applies, field path for field path.
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { AirlockError } from "../errors.ts";
import {
  DATA_SCOPES,
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
  OUTPUT_FORMATS,
  OUTPUT_MODES,
  type Collaborator,
  type ConsoleOutput,
  type Egress,
  type Input,
  type Manifest,
  type Output,
  type RoomPins,
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
  c.keys(w, "workload", [canonical ? "bundleTree" : "bundle", "command", "env", "timeoutSeconds", "padTo"]);
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

  const egress: Egress[] = [];
  c.list(top, "egress", "").forEach((raw, i) => {
    const at = `egress[${i}]`;
    const o = c.object(raw, at);
    if (!o) return;
    c.keys(o, at, ["url", "methods", "mode", "rules"]);
    const url = c.string(o, "url", at);
    if (url !== undefined) {
      try {
        const u = new URL(url);
        if (u.protocol !== "https:" && u.protocol !== "http:") c.fail(`${at}.url`, "an http(s) URL", url);
      } catch {
        c.fail(`${at}.url`, "an absolute URL", url);
      }
    }
    const methods = c.list(o, "methods", at).filter((m, j) => {
      if (typeof m === "string" && /^(GET|HEAD|POST|PUT|PATCH|DELETE)$/.test(m)) return true;
      c.fail(`${at}.methods[${j}]`, "one of GET | HEAD | POST | PUT | PATCH | DELETE", m);
      return false;
    }) as string[];
    const mode = c.oneOf(o, "mode", at, OUTPUT_MODES, "open");
    const rulesRaw = o.rules === undefined ? {} : c.object(o.rules, `${at}.rules`) ?? {};
    c.keys(rulesRaw, `${at}.rules`, ["maxRequestBytes", "maxResponseBytes"]);
    const rules: Egress["rules"] = {};
    if (rulesRaw.maxRequestBytes !== undefined) rules.maxRequestBytes = c.integer(rulesRaw, "maxRequestBytes", `${at}.rules`, 0, 2 ** 32, 0);
    if (rulesRaw.maxResponseBytes !== undefined) rules.maxResponseBytes = c.integer(rulesRaw, "maxResponseBytes", `${at}.rules`, 0, 2 ** 32, 0);
    if (url && mode) egress.push({ url, methods: methods.length ? methods : ["GET"], mode, rules });
  });

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
  c.keys(g, "governance", ["consent"]);
  const consent = c.string(g, "consent", "governance", { optional: true });
  if (consent !== undefined && !/^https?:\/\//.test(consent)) c.fail("governance.consent", "an http(s) URL", consent);

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

  if (c.problems.length > 0) return undefined;
  return {
    apiVersion: "airlock/v1",
    name: name!,
    ...(bundle ? { bundle } : {}),
    ...(bundleTree ? { bundleTree } : {}),
    ...(pins ? { pins } : {}),
    workload: { command: command as string[], env, timeoutSeconds, ...(padToSeconds !== undefined ? { padToSeconds } : {}) },
    inputs,
    outputs,
    ...(consoleOut ? { console: consoleOut } : {}),
    egress,
    collaborators,
    governance: consent ? { consent } : {},
    resources: res,
  };
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
