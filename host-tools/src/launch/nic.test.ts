import { describe, expect, it } from "vitest";
import { consentEndpoint, nicDestinations, type NicDestination } from "../../../proto/src/firewall-nic.ts";
import type { Manifest } from "../../../proto/src/manifest/index.ts";
import type { PairImages } from "../images/build.ts";
import { checkNetworkPlan, guestfwdRule, hostNicDestinations, networkPlanProblems, nicArgs, QEMU_SECCOMP, QEMU_SECCOMP_NIC } from "./nic.ts";
import { PairDir } from "./pair-state.ts";
import { inspectInventory, networkProblems, type GuestInventory } from "./prelaunch-checks.ts";
import { qemuArgs, type VmSpec } from "./qemu-args.ts";
import { snpLaunchPlan } from "./snp-plan.ts";
import { emulatedPairArgv, snpPairPlans } from "./tee-plans.ts";

const room = { egress: [{ url: "https://api.example.test/v1/" }, { url: "http://10.1.2.3:8080/" }], governance: { consent: "https://gov.example.test:8443/consent" } };

const firewall: VmSpec = {
  pair: "p",
  role: "firewall",
  imageDir: "/img",
  cmdline: "console=ttyS0",
  memoryMiB: 512,
  vcpus: 1,
  accel: "tcg",
  qmpSocket: "/s/firewall.qmp",
  console: "stdio",
  vsockSocket: "/s/vsock/firewall.vhost",
  nic: nicDestinations(room),
};

const values = (argv: string[], opt: string): string[] => argv.flatMap((a, i) => (a === opt ? [argv[i + 1]!] : []));

describe("the firewall's NIC destinations", () => {
  it("puts egress[i] at 10.0.2.(100+i) and the governance endpoint at the next address, each on its URL's port", () => {
    expect(nicDestinations(room)).toEqual([
      { what: "egress[0]", address: "10.0.2.100", port: 443, host: "api.example.test" },
      { what: "egress[1]", address: "10.0.2.101", port: 8080, host: "10.1.2.3" },
      { what: "governance.consent", address: "10.0.2.102", port: 8443, host: "gov.example.test" },
    ]);
    expect(consentEndpoint(room)).toEqual({ address: "10.0.2.102", port: 8443 });
    expect(consentEndpoint({ egress: [], governance: { consent: "http://gov.example.test/c" } })).toEqual({ address: "10.0.2.100", port: 80 });
    expect(nicDestinations({ egress: [], governance: {} })).toEqual([]);
  });

  it("forwards every governance endpoint the room names, consent then audit then telemetry", () => {
    const m = { egress: [{ url: "https://api.example.test/" }], governance: { audit: "http://gov.example.test:8080/audit", telemetry: "https://tel.example.test/t", consent: "https://gov.example.test/c" } };
    expect(nicDestinations(m).map((d) => [d.what, d.address, d.host, d.port])).toEqual([
      ["egress[0]", "10.0.2.100", "api.example.test", 443],
      ["governance.consent", "10.0.2.101", "gov.example.test", 443],
      ["governance.audit", "10.0.2.102", "gov.example.test", 8080],
      ["governance.telemetry", "10.0.2.103", "tel.example.test", 443],
    ]);
  });

  it("lets the host resolve a name itself (AIRLOCK_EGRESS_RESOLVE), for the host side of the forwarding only", () => {
    const env = { AIRLOCK_EGRESS_RESOLVE: "API.example.test=127.0.0.1,gov.example.test=10.9.8.7" };
    expect(hostNicDestinations(room, env).map((d) => [d.address, d.host])).toEqual([
      ["10.0.2.100", "127.0.0.1"],
      ["10.0.2.101", "10.1.2.3"],
      ["10.0.2.102", "10.9.8.7"],
    ]);
    for (const bad of ["api.example.test", "api.example.test=::1", "api.example.test=1.2.3.4=5", "a b=1.2.3.4", "x=1.2.3.4;rm"]) {
      expect(() => hostNicDestinations(room, { AIRLOCK_EGRESS_RESOLVE: bad }), bad).toThrow(/AIRLOCK_EGRESS_RESOLVE: expected NAME=IPV4/);
    }
  });

  it("refuses hosts that are not a DNS name or an IPv4 address, and user names", () => {
    for (const consent of ["http://[::1]/c", "http://user:pw@gov.example.test/c", "http://gov_example.test/c", "ftp://gov.example.test/", "not a url"]) {
      expect(() => nicDestinations({ egress: [], governance: { consent } }), consent).toThrow(/governance\.consent/);
    }
    for (const url of ["http://[::1]/", "http://a b/", "http://evil.test,hostfwd=tcp::22-:22/", "http://user@x.test/", "http://x.test:0/", "http://x.test:65536/"]) {
      expect(() => nicDestinations({ egress: [{ url }], governance: {} }), url).toThrow();
    }
  });

  it("never builds a forwarding command from a hostile host or port", () => {
    const ok: NicDestination = { what: "egress[0]", address: "10.0.2.100", port: 443, host: "api.example.test" };
    expect(guestfwdRule(ok)).toBe("tcp:10.0.2.100:443-cmd:/usr/bin/socat -lf /dev/null - TCP:api.example.test:443,,connect-timeout=10");
    const hostile: Partial<NicDestination>[] = [
      { host: "x.test; rm -rf /" },
      { host: "x.test,hostfwd=tcp::22-:22" },
      { host: "$(id).test" },
      { host: "'x'" },
      { host: "x.test\nguestfwd" },
      { host: "-lf/etc/passwd" },
      { host: "x.test:22" },
      { host: "EXEC:sh" },
      { host: "::1" },
      { host: "" },
      { port: 0 },
      { port: 65536 },
      { port: 1.5 },
      { address: "10.0.2.2" },
      { address: "10.0.2.200" },
      { address: "10.0.2.100 -" },
    ];
    for (const h of hostile) expect(() => guestfwdRule({ ...ok, ...h }), JSON.stringify(h)).toThrow(/cannot forward/);
    // What QEMU hands g_shell_parse_argv holds nothing it would treat specially (no quote, backslash, #, $ or newline).
    for (const d of nicDestinations(room)) expect(guestfwdRule(d).split("-cmd:")[1]).toMatch(/^[A-Za-z0-9/ .:,=-]+$/);
  });
});

describe("the firewall's QEMU plan", () => {
  it("has one restricted user netdev with exactly one guestfwd per destination, no hostfwd, and one virtio-net device", () => {
    const argv = qemuArgs(firewall);
    const netdevs = values(argv, "-netdev");
    expect(netdevs).toEqual([
      "user,id=net0,restrict=on,ipv6=off,net=10.0.2.0/24," +
        "guestfwd=tcp:10.0.2.100:443-cmd:/usr/bin/socat -lf /dev/null - TCP:api.example.test:443,,connect-timeout=10," +
        "guestfwd=tcp:10.0.2.101:8080-cmd:/usr/bin/socat -lf /dev/null - TCP:10.1.2.3:8080,,connect-timeout=10," +
        "guestfwd=tcp:10.0.2.102:8443-cmd:/usr/bin/socat -lf /dev/null - TCP:gov.example.test:8443,,connect-timeout=10",
    ]);
    expect(netdevs[0]!.match(/guestfwd=/g)).toHaveLength(3);
    expect(netdevs[0]).not.toMatch(/hostfwd|smb|tftp|bootfile/);
    expect(values(argv, "-device").filter((d) => d.startsWith("virtio-net"))).toEqual(["virtio-net-pci,netdev=net0,id=net0,disable-legacy=on,romfile="]);
    expect(values(argv, "-sandbox")).toEqual([QEMU_SECCOMP_NIC]);
    expect(networkPlanProblems("firewall", argv, firewall.nic)).toEqual([]);
  });

  it("has no NIC when the room declares neither egress nor consent, and keeps spawning denied", () => {
    const argv = qemuArgs({ ...firewall, nic: nicDestinations({ egress: [], governance: {} }) });
    expect(argv).not.toContain("-netdev");
    expect(argv.join(" ")).not.toMatch(/virtio-net|guestfwd/);
    expect(values(argv, "-sandbox")).toEqual([QEMU_SECCOMP]);
    expect(networkPlanProblems("firewall", argv, [])).toEqual([]);
  });

  it("gives a service room's firewall exactly one hostfwd, to its API port, and keeps spawning denied without guestfwd", () => {
    const api = { hostAddress: "127.0.0.1", hostPort: 40123 };
    const argv = qemuArgs({ ...firewall, nic: [], apiForward: api });
    expect(values(argv, "-netdev")).toEqual(["user,id=net0,restrict=on,ipv6=off,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:40123-10.0.2.15:8443"]);
    expect(values(argv, "-sandbox")).toEqual([QEMU_SECCOMP]);
    expect(networkPlanProblems("firewall", argv, [], api)).toEqual([]);
    // The plan check derives the forward itself: another port, or none expected, is refused.
    expect(networkPlanProblems("firewall", argv, [], { ...api, hostPort: 40124 }).join("\n")).toMatch(/network backend/);
    expect(networkPlanProblems("firewall", argv, []).join("\n")).toMatch(/has a network backend/);
    expect(() => qemuArgs({ ...firewall, nic: [], apiForward: { hostAddress: "localhost;x", hostPort: 1 } })).toThrow(/dotted IPv4 address/);
    expect(() => qemuArgs({ ...firewall, role: "sandbox", nic: [], apiForward: api })).toThrow(/only the firewall VM gets a NIC/);
  });

  it("never gives the sandbox a NIC, and the plan check refuses one however it got there", () => {
    expect(() => qemuArgs({ ...firewall, role: "sandbox" })).toThrow(/only the firewall VM gets a NIC/);
    const sandbox = qemuArgs({ ...firewall, role: "sandbox", nic: [] });
    expect(networkPlanProblems("sandbox", sandbox)).toEqual([]);
    const withNic = [...sandbox, ...nicArgs(firewall.nic).flat()];
    expect(networkPlanProblems("sandbox", withNic).join("\n")).toMatch(/network backend[\s\S]*network device/);
    expect(networkPlanProblems("sandbox", [...sandbox, "-nic", "user"]).join("\n")).toMatch(/-nic/);
    expect(networkPlanProblems("sandbox", [...sandbox, "-device", "e1000,netdev=x"]).join("\n")).toMatch(/network device/);
    expect(networkPlanProblems("sandbox", sandbox.filter((a) => a !== "-nodefaults")).join("\n")).toMatch(/-nodefaults/);
    expect(() => checkNetworkPlan("sandbox", withNic)).toThrow(/refusing to start it/);
  });

  it("refuses a firewall plan whose netdev is not exactly the restricted one", () => {
    const argv = qemuArgs(firewall);
    const i = argv.indexOf("-netdev") + 1;
    for (const swap of [(s: string) => s.replace("restrict=on", "restrict=off"), (s: string) => `${s},hostfwd=tcp::2222-:22`, (s: string) => s.replace(/,guestfwd=[^,]*,,connect-timeout=10$/, "")]) {
      const bad = [...argv];
      bad[i] = swap(bad[i]!);
      expect(networkPlanProblems("firewall", bad, firewall.nic).join("\n")).toMatch(/network backend/);
    }
    expect(networkPlanProblems("firewall", [...argv, "-netdev", "user,id=net1"], firewall.nic).join("\n")).toMatch(/network backend/);
    expect(networkPlanProblems("firewall", argv.map((a) => (a === QEMU_SECCOMP_NIC ? "on" : a)), firewall.nic).join("\n")).toMatch(/seccomp/);
  });

  it("carries the same NIC into the SNP plan, with iommu_platform=on, and the emulated and SNP pair plans give it to the firewall only", () => {
    const snp = snpLaunchPlan({
      name: "p-firewall",
      memoryMiB: 512,
      vcpus: 1,
      vcpuType: "EPYC-v4",
      ovmfPath: "/fw/OVMF.fd",
      kernelPath: "/img/vmlinuz",
      append: "console=ttyS0",
      qmpSocket: "/s/firewall.qmp",
      extraDevices: nicArgs(firewall.nic, true),
      spawnsForwarders: true,
    });
    expect(values(snp.argv, "-device")).toEqual(["virtio-net-pci,netdev=net0,id=net0,disable-legacy=on,romfile=,iommu_platform=on"]);
    expect(values(snp.argv, "-netdev")).toEqual(values(qemuArgs(firewall), "-netdev"));
    expect(networkPlanProblems("firewall", snp.argv, firewall.nic)).toEqual([]);

    const manifest = { name: "r", egress: room.egress, governance: room.governance, resources: { firewall: { memoryMiB: 512, vcpus: 1 }, sandbox: { memoryMiB: 512, vcpus: 1 } } } as unknown as Manifest;
    const image = (role: string) => ({ dir: `/img/${role}`, info: { cmdline: "console=ttyS0" }, cached: true });
    const images = { firewall: image("firewall"), sandbox: image("sandbox") } as unknown as PairImages;
    const dir = new PairDir("r");
    const plans = snpPairPlans(manifest, images, dir, Buffer.alloc(32), { path: "/fw/OVMF.fd" } as never);
    const emulated = emulatedPairArgv(manifest, images, dir, "tcg");
    for (const argv of [plans.firewall.argv, emulated.firewall]) expect(values(argv, "-netdev")).toHaveLength(1);
    for (const argv of [plans.sandbox.argv, emulated.sandbox]) {
      expect(argv.join(" ")).not.toMatch(/-netdev|virtio-net|guestfwd/);
      expect(values(argv, "-sandbox")).toEqual([QEMU_SECCOMP]);
    }
  });
});

describe("the firewall's NIC as QEMU reports it (QMP)", () => {
  const pci = (vendor: number, device: number, cls: number) => ({ bus: 0, slot: 1, function: 0, class_info: { class: cls }, id: { vendor, device } });
  const base = (network: string, extra: ReturnType<typeof pci>[] = []): GuestInventory => ({
    status: "prelaunch",
    pci: [pci(0x8086, 0x29c0, 0x0600), pci(0x8086, 0x2918, 0x0601), pci(0x8086, 0x2922, 0x0106), pci(0x8086, 0x2930, 0x0c05), pci(0x1af4, 0x1053, 0x0780), ...extra],
    block: [],
    chardevs: [
      { label: "compat_monitor0", filename: "unix:/s/firewall.qmp" },
      { label: "serial0", filename: "stdio" },
      { label: "vsock0", filename: "unix:/s/vsock/firewall.vhost" },
    ],
    memdevs: [{ id: "ram0", size: 512 * 1024 * 1024, share: true }],
    cpus: [{}],
    network,
  });
  // What QEMU 7.2 answers to `info network` for the plan above.
  const INFO = "net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n \\ net0: index=0,type=user,net=10.0.2.0,restrict=on\r\n";
  const NET = pci(0x1af4, 0x1041, 0x0200);

  it("accepts exactly one virtio-net NIC on one restricted user netdev", () => {
    expect(inspectInventory(firewall, base(INFO, [NET]))).toEqual([]);
  });

  it("refuses a second NIC, a missing one, an unrestricted backend, and any NIC without destinations", () => {
    expect(inspectInventory(firewall, base(INFO, [NET, NET])).join("\n")).toMatch(/a network device besides/);
    expect(inspectInventory(firewall, base(INFO)).join("\n")).toMatch(/NIC \(virtio-net\) is missing/);
    expect(networkProblems("firewall", true, INFO.replace("restrict=on", "restrict=off")).join("\n")).toMatch(/not one virtio-net NIC on one restricted user netdev/);
    expect(networkProblems("firewall", true, `${INFO}hub0port1: index=0,type=user,net=10.0.2.0,restrict=off\r\n`)).toHaveLength(1);
    const noNic = { ...firewall, nic: [] };
    expect(inspectInventory(noNic, base(INFO, [NET])).join("\n")).toMatch(/a network device[\s\S]*network device QEMU reports[\s\S]*network backend QEMU reports/);
    expect(inspectInventory(noNic, base(""))).toEqual([]);
  });
});
