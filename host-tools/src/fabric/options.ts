// Command-line and config-file syntax of rust-vmm's vhost-device-vsock, so `airlock vsock-fabric`
// is a drop-in replacement:
//   --vm guest-cid=N,socket=PATH,uds-path=PATH[,groups=a+b][,host-ports=P+Q]     (repeatable)
//   --guest-cid N --socket PATH --uds-path PATH [--groups a+b] [--host-ports P+Q]  (one VM)
//   --config FILE   (YAML: vms: [{guest_cid, socket, uds_path, groups, host_ports}])
// `host-ports` is ours, not vhost-device-vsock's: guest -> host is deny-by-default here, so a VM
// reaches `<uds-path>_P` only for the ports P listed for it (none when the key is absent).
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { AirlockError } from "../../../proto/src/errors.ts";

export interface VmSpec {
  cid: number;
  /** vhost-user socket the fabric listens on; QEMU's `-chardev socket,path=` connects to it. */
  socket: string;
  /** Hybrid-vsock socket for host programs; guest -> host port P goes to `<udsPath>_P` if P is in hostPorts. */
  udsPath: string;
  /** VMs talk to each other only when they share a group. Default: ["default"]. */
  groups: string[];
  /**
   * Host (CID 2) ports this VM may connect to; a request to any other host port gets RST without
   * the fabric looking at the filesystem. Default: none (absent means empty).
   */
  hostPorts?: number[];
}

const GROUP_RE = /^[A-Za-z0-9_.-]+$/;
/**
 * vhost-device-vsock tuning keys, accepted so its command lines work unchanged. They have no
 * effect here: the fabric sizes its buffers from the guest's own rings and credit.
 */
const COMPAT_KEYS = ["tx-buffer-size", "queue-size"];

/** The VM list is malformed: a `--vm` value, a config file entry or a spec given to the fabric. */
function configError(message: string): AirlockError {
  return new AirlockError("FABRIC_CONFIG", message, { hint: "expected --vm guest-cid=N,socket=PATH,uds-path=PATH[,groups=a+b][,host-ports=P+Q]" });
}

export function checkCid(value: unknown, where: string): number {
  const n = typeof value === "number" ? value : typeof value === "string" && /^[0-9]+$/.test(value) ? Number(value) : NaN;
  // 0-2 are reserved (hypervisor, local, host); 0xffffffff is VMADDR_CID_ANY.
  if (!Number.isInteger(n) || n < 3 || n >= 0xffffffff) throw configError(`${where}: guest CID must be an integer from 3 to 4294967294, got ${JSON.stringify(value)}`);
  return n;
}

function checkGroups(value: string, where: string): string[] {
  const groups = value.split("+");
  if (groups.some((g) => !GROUP_RE.test(g))) throw configError(`${where}: groups must be names joined by '+', got ${JSON.stringify(value)}`);
  return groups;
}

/** Largest vsock port a host listener may have (0xffffffff is VMADDR_PORT_ANY). */
const MAX_PORT = 0xfffffffe;

function checkPort(value: unknown, where: string): number {
  const n = typeof value === "number" ? value : typeof value === "string" && /^[0-9]{1,10}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > MAX_PORT) throw configError(`${where}: host ports must be integers from 0 to ${MAX_PORT}, got ${JSON.stringify(value)}`);
  return n;
}

/** Host ports as `P+Q` (command line, YAML string), a YAML list (may be empty) or a single YAML number. */
function checkHostPorts(value: unknown, where: string): number[] {
  let items: unknown[];
  if (Array.isArray(value)) items = value;
  else if (typeof value === "number") items = [value];
  else if (typeof value === "string") items = value.split("+");
  else throw configError(`${where}: host ports must be port numbers joined by '+' or a list, got ${JSON.stringify(value)}`);
  return [...new Set(items.map((v) => checkPort(v, where)))].sort((x, y) => x - y);
}

/** Parses one `--vm` value. */
export function parseVmOption(spec: string): VmSpec {
  const fields = new Map<string, string>();
  for (const part of spec.split(",")) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw configError(`--vm ${spec}: '${part}' is not key=value`);
    const k = part.slice(0, eq);
    if (fields.has(k)) throw configError(`--vm ${spec}: '${k}' given twice`);
    fields.set(k, part.slice(eq + 1));
  }
  for (const [k, v] of fields) {
    if (COMPAT_KEYS.includes(k)) {
      if (!/^[1-9][0-9]{0,9}$/.test(v)) throw configError(`--vm ${spec}: ${k} must be a positive integer`);
      continue;
    }
    if (!["guest-cid", "socket", "uds-path", "groups", "host-ports"].includes(k)) throw configError(`--vm ${spec}: unknown key '${k}'`);
  }
  return toSpec(
    { cid: fields.get("guest-cid"), socket: fields.get("socket"), udsPath: fields.get("uds-path"), groups: fields.get("groups"), hostPorts: fields.get("host-ports") },
    `--vm ${spec}`,
  );
}

function toSpec(raw: { cid: unknown; socket: unknown; udsPath: unknown; groups: unknown; hostPorts: unknown }, where: string): VmSpec {
  if (raw.cid === undefined) throw configError(`${where}: guest-cid is missing`);
  for (const [name, v] of [
    ["socket", raw.socket],
    ["uds-path", raw.udsPath],
  ] as const) {
    if (typeof v !== "string" || v === "") throw configError(`${where}: ${name} is missing`);
    if (Buffer.byteLength(v) > 100) throw configError(`${where}: ${name} is longer than a Unix socket path may be`);
  }
  const groups = raw.groups === undefined ? ["default"] : checkGroups(String(raw.groups), where);
  const hostPorts = raw.hostPorts === undefined || raw.hostPorts === null ? [] : checkHostPorts(raw.hostPorts, where);
  return { cid: checkCid(raw.cid, where), socket: raw.socket as string, udsPath: raw.udsPath as string, groups, hostPorts };
}

/** Parses a vhost-device-vsock YAML config file. */
export function parseConfigFile(file: string): VmSpec[] {
  const unreadable = (code: "FILE_UNREADABLE" | "FABRIC_CONFIG", err: unknown): AirlockError =>
    new AirlockError(code, `${file}: cannot read the fabric config: ${(err as Error).message}`, { cause: err });
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw unreadable("FILE_UNREADABLE", err);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw unreadable("FABRIC_CONFIG", err);
  }
  const vms = (doc as { vms?: unknown } | null)?.vms;
  if (!Array.isArray(vms) || vms.length === 0) throw configError(`${file}: expected a non-empty 'vms' list`);
  return vms.map((v: unknown, i) => {
    const o = (v ?? {}) as Record<string, unknown>;
    return toSpec({ cid: o.guest_cid, socket: o.socket, udsPath: o.uds_path, groups: o.groups, hostPorts: o.host_ports }, `${file}: vms[${i}]`);
  });
}

/** Rejects duplicate CIDs or paths across VMs, and host ports out of range. */
export function checkVmSpecs(specs: VmSpec[]): void {
  if (specs.length === 0) throw configError("no VM given");
  const seen = new Set<string>();
  for (const s of specs) {
    if (s.hostPorts !== undefined) {
      if (!Array.isArray(s.hostPorts)) throw configError(`VM ${s.cid}: hostPorts must be a list of port numbers`);
      for (const p of s.hostPorts) checkPort(p, `VM ${s.cid}`);
    }
    for (const k of [`cid:${s.cid}`, `path:${s.socket}`, `path:${s.udsPath}`]) {
      if (seen.has(k)) throw configError(`${k.slice(k.indexOf(":") + 1)} is used by more than one VM`);
      seen.add(k);
    }
  }
}
