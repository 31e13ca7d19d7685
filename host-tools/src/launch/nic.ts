// The firewall's NIC as QEMU gets it: user networking with restrict=on and exactly one guestfwd
// rule per destination of the room (proto's nicDestinations: egress[i] at 10.0.2.(100+i), then the
// governance endpoint). With restrict=on the guest reaches nothing but those rules: no DNS, no
// host port, no internet, and no hostfwd is ever added. The sandbox never gets a NIC.
//
// Each rule is `guestfwd=tcp:ADDR:PORT-cmd:COMMAND`: for every guest connection to ADDR:PORT,
// libslirp (Debian 12: 4.7.0, fork_exec in misc.c) splits COMMAND with g_shell_parse_argv, which
// tokenizes and expands nothing, and starts it with g_spawn_async_with_fds with the connection on
// its stdin, stdout and stderr; no shell runs. COMMAND is socat at a fixed path, connecting to the
// destination; its host and port are checked here once more (a DNS name or a dotted IPv4 address,
// a port 1..65535), so they carry no space, quote, comma or other character either QEMU's option
// parser, g_shell_parse_argv or socat's address syntax would read.
//
// QEMU's own seccomp filter (-sandbox) must then let QEMU fork and exec, and let the child call
// setsid (libslirp's child setup): with spawn=deny a guest connection kills QEMU with SIGSYS, and
// with elevateprivileges=deny (or =children) the child dies before socat runs. So a firewall with
// a NIC runs under QEMU_SECCOMP_NIC; the sandbox always keeps QEMU_SECCOMP.
import { existsSync } from "node:fs";
import { AirlockError } from "../../../proto/src/errors.ts";
import { FIREWALL_NIC_ADDRESS, FIREWALL_NIC_NETWORK, isNicHost, isNicPort, nicDestinations, type NicDestination } from "../../../proto/src/firewall-nic.ts";
import { SERVICE_API_PORT } from "../../../proto/src/service.ts";

export { nicDestinations, type NicDestination } from "../../../proto/src/firewall-nic.ts";

/**
 * The room's destinations as this host reaches them: AIRLOCK_EGRESS_RESOLVE="NAME=IPV4,…" makes
 * the host connect to IPV4 where the manifest names NAME (as curl --resolve does), for a name this
 * host's resolver does not know. The host resolves names in any case — it is not trusted with
 * them: TLS inside the firewall still names NAME and checks the manifest's pin.
 */
export function hostNicDestinations(m: Parameters<typeof nicDestinations>[0], env: NodeJS.ProcessEnv = process.env): NicDestination[] {
  const resolve = new Map<string, string>();
  for (const pair of (env.AIRLOCK_EGRESS_RESOLVE ?? "").split(",").filter(Boolean)) {
    const [name, address, ...rest] = pair.split("=");
    if (!name || !address || rest.length > 0 || !isNicHost(name.toLowerCase()) || !/^\d{1,3}(\.\d{1,3}){3}$/.test(address) || !isNicHost(address)) {
      throw new AirlockError("LAUNCH", `AIRLOCK_EGRESS_RESOLVE: expected NAME=IPV4[,NAME=IPV4...], got ${JSON.stringify(pair.slice(0, 100))}`, { hint: "set AIRLOCK_EGRESS_RESOLVE to comma-separated NAME=IPV4 pairs, or unset it" });
    }
    resolve.set(name.toLowerCase(), address);
  }
  return nicDestinations(m).map((d) => (resolve.has(d.host) ? { ...d, host: resolve.get(d.host)! } : d));
}

/** QEMU's seccomp filter: no spawning, no privilege changes, no obsolete calls, no resource control. */
export const QEMU_SECCOMP = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
/** The firewall's with a NIC: QEMU starts one socat per guest connection (see above); the rest stays denied. */
export const QEMU_SECCOMP_NIC = "on,obsolete=deny,elevateprivileges=allow,spawn=allow,resourcecontrol=deny";

/** Debian's socat (setup.sh installs it); a fixed path, so no PATH lookup decides what QEMU runs. */
export const SOCAT = "/usr/bin/socat";
/** socat gives up connecting to a destination after this many seconds. */
export const CONNECT_TIMEOUT_S = 10;
export const NETDEV_ID = "net0";

const GUEST_ADDRESS_RE = /^10\.0\.2\.(1\d\d)$/;

function check(d: NicDestination): void {
  const m = GUEST_ADDRESS_RE.exec(d.address);
  if (!m || Number(m[1]) > 199 || !isNicPort(d.port) || !isNicHost(d.host)) {
    throw new AirlockError("LAUNCH", `${d.what}: cannot forward ${JSON.stringify(d.address)}:${d.port} to ${JSON.stringify(d.host)}: a destination is a DNS name or a dotted IPv4 address, a port from 1 to 65535, reached at 10.0.2.100 to 10.0.2.199`);
  }
}

/**
 * The command QEMU runs for each connection to one destination, as one string that
 * g_shell_parse_argv splits on spaces. socat's diagnostics go to /dev/null, never into the
 * guest's stream (which is the child's stderr too). The comma before connect-timeout is doubled
 * for QEMU's option parser, which gives socat a single one.
 */
export function guestfwdRule(d: NicDestination): string {
  check(d);
  return `tcp:${d.address}:${d.port}-cmd:${SOCAT} -lf /dev/null - TCP:${d.host}:${d.port},,connect-timeout=${CONNECT_TIMEOUT_S}`;
}

/**
 * A service room's one way in: the host's `address:port` forwarded to the firewall's API port
 * (QEMU's hostfwd; restrict=on leaves explicit forwarding rules working). The address is a
 * loopback or another of the host's IPv4 addresses; nothing else reaches the firewall.
 */
export interface ApiForward {
  hostAddress: string;
  hostPort: number;
}

function hostfwdRule(f: ApiForward): string {
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(f.hostAddress) || !isNicHost(f.hostAddress) || !isNicPort(f.hostPort)) {
    throw new AirlockError("LAUNCH", `the service API cannot listen on ${JSON.stringify(f.hostAddress)}:${f.hostPort}: expected a dotted IPv4 address and a port from 1 to 65535`);
  }
  return `tcp:${f.hostAddress}:${f.hostPort}-${FIREWALL_NIC_ADDRESS}:${SERVICE_API_PORT}`;
}

/** The -netdev value: user networking, restricted, IPv4 only, one guestfwd per destination, the API's hostfwd if any, and nothing else. */
export function nicNetdev(destinations: readonly NicDestination[], api?: ApiForward): string {
  const seen = new Set<string>();
  for (const d of destinations) {
    const key = `${d.address}:${d.port}`;
    if (seen.has(key)) throw new AirlockError("LAUNCH", `${d.what}: ${key} is forwarded twice`);
    seen.add(key);
  }
  return [`user,id=${NETDEV_ID},restrict=on,ipv6=off,net=${FIREWALL_NIC_NETWORK}`, ...destinations.map((d) => `guestfwd=${guestfwdRule(d)}`), ...(api ? [`hostfwd=${hostfwdRule(api)}`] : [])].join(",");
}

/**
 * The firewall's NIC as QEMU option groups; none without destinations. `accessPlatform`: an SNP
 * guest's virtio devices need VIRTIO_F_ACCESS_PLATFORM (iommu_platform=on). Modern virtio only
 * (0x1af4:0x1041, what the pre-launch checks expect) and no option ROM (romfile=).
 */
export function nicArgs(destinations: readonly NicDestination[] | undefined, accessPlatform = false, api?: ApiForward): string[][] {
  if ((!destinations || destinations.length === 0) && !api) return [];
  return [
    ["-netdev", nicNetdev(destinations ?? [], api)],
    ["-device", `virtio-net-pci,netdev=${NETDEV_ID},id=${NETDEV_ID},disable-legacy=on,romfile=${accessPlatform ? ",iommu_platform=on" : ""}`],
  ];
}

/** The host can run the forwarding command (socat, from setup.sh). */
export function checkForwarder(destinations: readonly NicDestination[] | undefined, socat = SOCAT): void {
  if (!destinations || destinations.length === 0 || existsSync(socat)) return;
  throw new AirlockError("LAUNCH", `the firewall's NIC forwards its connections with ${socat}, which is not installed`, { hint: "run host-tools/scripts/setup.sh (it installs socat)" });
}

/** QEMU network device models, for the plan checks (a -device whose driver is one of these is a NIC). */
const NIC_DRIVERS = /^(virtio-net|e1000|e1000e|igb|rtl8139|ne2k_|pcnet|vmxnet3|i8255|i82|tulip|usb-net|sungem|lan9118|smc91c111|xgmac|cadence_gem|ftgmac|imx\.enet)/;

/**
 * What a plan (argv) says about networking, checked before QEMU starts: the sandbox's has no
 * -netdev, -nic, -net or network -device; the firewall's has either none or exactly the restricted
 * user netdev derived from its destinations and one virtio-net device on it. Returns the problems.
 */
export function networkPlanProblems(role: string, argv: readonly string[], destinations?: readonly NicDestination[], api?: ApiForward): string[] {
  const problems: string[] = [];
  if (!argv.includes("-nodefaults")) problems.push("the plan lacks -nodefaults (QEMU would add a default NIC)");
  const values = (opt: string): string[] => argv.flatMap((a, i) => (a === opt && i + 1 < argv.length ? [argv[i + 1]!] : []));
  for (const opt of ["-nic", "-net"]) if (argv.includes(opt)) problems.push(`the plan has ${opt} (never used: a NIC is -netdev user plus one virtio-net device)`);
  const netdevs = values("-netdev");
  const nics = values("-device").filter((v) => NIC_DRIVERS.test(v.split(",")[0]!));
  const seccomp = values("-sandbox");
  const want = role === "firewall" ? nicArgs(destinations, nics.some((n) => /(^|,)iommu_platform=on(,|$)/.test(n)), api) : [];
  if (want.length === 0) {
    for (const n of netdevs) problems.push(`the ${role} plan has a network backend (-netdev ${n})`);
    for (const n of nics) problems.push(`the ${role} plan has a network device (-device ${n})`);
    if (seccomp.length !== 1 || seccomp[0] !== QEMU_SECCOMP) problems.push(`the ${role} plan's QEMU seccomp filter is ${JSON.stringify(seccomp.join(" "))}, expected ${QEMU_SECCOMP}`);
  } else {
    if (netdevs.length !== 1 || netdevs[0] !== want[0]![1]) problems.push(`the firewall plan's network backend is ${JSON.stringify(netdevs)}, expected exactly the restricted user netdev ${JSON.stringify(want[0]![1])}`);
    if (nics.length !== 1 || nics[0] !== want[1]![1]) problems.push(`the firewall plan's network devices are ${JSON.stringify(nics)}, expected exactly ${JSON.stringify(want[1]![1])}`);
    // Spawning is allowed only for guestfwd's forwarders; a NIC with only the API's hostfwd needs none.
    const filter = destinations && destinations.length > 0 ? QEMU_SECCOMP_NIC : QEMU_SECCOMP;
    if (seccomp.length !== 1 || seccomp[0] !== filter) problems.push(`the firewall plan's QEMU seccomp filter is ${JSON.stringify(seccomp.join(" "))}, expected ${filter}`);
  }
  return problems;
}

/** Throws LAUNCH naming every problem networkPlanProblems finds. */
export function checkNetworkPlan(role: string, argv: readonly string[], destinations?: readonly NicDestination[], api?: ApiForward): void {
  const problems = networkPlanProblems(role, argv, destinations, api);
  if (problems.length > 0) throw new AirlockError("LAUNCH", `the ${role} VM's QEMU plan is not what its network must be (refusing to start it):\n${problems.map((p) => `  - ${p}`).join("\n")}`);
}
