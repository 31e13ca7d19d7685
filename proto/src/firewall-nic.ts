// The firewall's NIC, the one place that says which address inside the firewall leads where. The
// host launch turns each destination into one QEMU guestfwd rule (host-tools/src/launch/nic.ts);
// the firewall's programs connect to `address:port` and reach the destination's real host and port.
//
//   egress[i]              → firewallAddress(i) = 10.0.2.(100+i), the URL's port (default 80/443)
//   governance.consent     → the next free address, the URL's port
//   governance.audit       → the next one (when declared)
//   governance.telemetry   → the next one (when declared)
//
// Nothing else is reachable from the firewall's NIC (QEMU user networking with restrict=on: no
// DNS, no host ports, no internet), and a room with neither egress nor consent gets no NIC at all.
// Design: firewall-vm/src/proxies/README.md § "The firewall's NIC".
import { AirlockError } from "./errors.ts";
import { firewallAddress, parseEgressUrl } from "./egress.ts";
import { GOVERNANCE_ENDPOINTS } from "./manifest/schema.ts";

/** The firewall's own address on its NIC (QEMU user networking's 10.0.2.0/24; no gateway, no resolver). */
export const FIREWALL_NIC_ADDRESS = "10.0.2.15";
export const FIREWALL_NIC_NETWORK = "10.0.2.0/24";

export interface NicDestination {
  /** What the manifest calls it: "egress[i]" or "governance.consent". */
  what: string;
  /** Where the firewall connects: 10.0.2.(100+i). */
  address: string;
  /** The port, the same inside the firewall and on the real destination. */
  port: number;
  /** The real destination the host connects to: a lower-case DNS name or a dotted IPv4 address. */
  host: string;
}

const DNS_NAME_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** A destination host as the launch accepts it: a DNS name or a dotted IPv4 address, nothing else. */
export function isNicHost(host: string): boolean {
  return DNS_NAME_RE.test(host) || IPV4_RE.test(host);
}

export function isNicPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}

/** Host and port of a governance endpoint (any path; the same host rules as an egress URL). */
function governanceHostPort(what: string, url: string): { host: string; port: number } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new AirlockError("MANIFEST_INVALID", `${what}: expected an absolute http(s) URL, got ${JSON.stringify(url)}`);
  }
  if ((u.protocol !== "http:" && u.protocol !== "https:") || u.username || u.password || !isNicHost(u.hostname)) {
    throw new AirlockError("MANIFEST_INVALID", `${what}: expected an http(s) URL whose host is a DNS name or an IPv4 address, with no user name, got ${JSON.stringify(url)}`);
  }
  return { host: u.hostname, port: u.port ? Number(u.port) : u.protocol === "https:" ? 443 : 80 };
}

/**
 * The destinations the firewall's NIC leads to, in address order: one per egress entry, then the
 * governance consent endpoint. Empty when the room declares neither (then there is no NIC).
 */
type GovernanceUrls = { [K in (typeof GOVERNANCE_ENDPOINTS)[number]]?: string | undefined };

export function nicDestinations(m: { egress: readonly { url: string }[]; governance: GovernanceUrls }): NicDestination[] {
  const out: NicDestination[] = m.egress.map((e, i) => {
    const { host, port } = parseEgressUrl(e.url);
    return { what: `egress[${i}]`, address: firewallAddress(i), port, host };
  });
  for (const key of GOVERNANCE_ENDPOINTS) {
    const url = m.governance[key];
    if (url !== undefined) out.push({ what: `governance.${key}`, address: firewallAddress(out.length), ...governanceHostPort(`governance.${key}`, url) });
  }
  for (const d of out) {
    // parseEgressUrl checks these too; the launch puts them on a command line, so check again here.
    if (!isNicHost(d.host) || !isNicPort(d.port)) throw new AirlockError("MANIFEST_INVALID", `${d.what}: the host ${JSON.stringify(d.host)} or port ${d.port} cannot be forwarded (a DNS name or an IPv4 address, a port from 1 to 65535)`);
  }
  return out;
}

/** Where the firewall reaches a governance endpoint (its forwarding address and port), if the room declares it. */
export function governanceEndpoint(m: { egress: readonly { url: string }[]; governance: GovernanceUrls }, key: (typeof GOVERNANCE_ENDPOINTS)[number]): { address: string; port: number } | undefined {
  const d = nicDestinations(m).find((x) => x.what === `governance.${key}`);
  return d && { address: d.address, port: d.port };
}

/** Where the firewall reaches the governance consent endpoint, if the room declares one. */
export const consentEndpoint = (m: Parameters<typeof governanceEndpoint>[0]) => governanceEndpoint(m, "consent");
