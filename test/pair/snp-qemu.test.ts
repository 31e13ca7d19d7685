// Every --tee snp plan the tooling makes, started by a real QEMU that knows sev-snp-guest (setup.sh
// unpacks Debian's QEMU 10.0 beside the system's 7.2) with exactly the plan's arguments. QEMU reads
// every option, creates the sev-snp-guest object with all its properties and applies the machine's,
// then initialises KVM; on a host without SEV-SNP it must stop there, on the hardware, never on an
// option or property. What QEMU only reads after KVM (the devices, the CPU model, the memory
// backend) is checked against the same QEMU's own QMP introspection. Each QEMU is bounded in time
// and killed. Skipped only where no SNP-capable QEMU is installed and CI is unset (CI runs setup.sh).
import { spawn } from "node:child_process";
import { createPrivateKey } from "node:crypto";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AirlockError } from "../../proto/src/errors.ts";
import { loadManifest } from "../../proto/src/manifest/index.ts";
import { OVMF_AMDSEV_SUFFIX } from "../fixtures/index.ts";
import { PairDir } from "../../host-tools/src/launch/pair-state.ts";
import { loadSnpFirmware } from "../../host-tools/src/launch/snp-firmware.ts";
import { checkQemuSupports, parseQemuVersion, snpLaunchPlan, type2LaunchPlan, type3LaunchPlan, type IgvmVmSpec, type QemuPlan, type SnpVmSpec } from "../../host-tools/src/launch/snp-plan.ts";
import { findSnpQemu, type SnpQemu } from "../../host-tools/src/launch/snp-qemu.ts";
import { snpRoom } from "../../host-tools/src/launch/tee-plans.ts";
import { nicArgs, nicDestinations } from "../../host-tools/src/launch/nic.ts";
import { repoRoot, testStateDir } from "../helpers.ts";

const QEMU_BOUND_MS = 15_000;
const found: SnpQemu | AirlockError = await findSnpQemu().catch((err: unknown) => AirlockError.from(err));
const qemu = found instanceof AirlockError ? undefined : found;
const skipReason = qemu === undefined && !process.env.CI ? `no SNP-capable QEMU here (${(found as AirlockError).message}); host-tools/scripts/setup.sh installs one` : undefined;
if (skipReason) console.warn(`snp-qemu.test.ts skipped: ${skipReason}`);

/**
 * What QEMU 10.0 says when the host, not the command line, stops an SEV-SNP launch: KVM without
 * the SEV-SNP VM type (a host with /dev/kvm but no SNP, like the development host), no KVM at all
 * (a runner without /dev/kvm: "Could not access KVM kernel module: No such file or directory",
 * then "failed to initialize kvm: …"), or SNP-capable KVM without the SEV firmware device.
 */
const HARDWARE = [/^qemu-system-x86_64: vm-type SEV-SNP not supported by KVM$/, /^qemu-system-x86_64: Could not access KVM kernel module: /, /^qemu-system-x86_64: failed to initialize kvm: /, /^qemu-system-x86_64: sev_common_kvm_init: Failed to open \/dev\/sev /];
/** What it says about a command line it does not accept: none of this may ever appear. */
const COMMAND_LINE = /invalid option|Invalid parameter|Parameter '.*' (is missing|expects)|[Pp]roperty '.*' not found|unknown (option|object type)|is not a valid|invalid object type|not a valid device model|CPU model '.*' not found|Could not open option rom/;

interface Outcome {
  code: number | null;
  stderr: string;
  /** Still running at the bound: the host accepted the launch (an SEV-SNP host). */
  running: boolean;
}

function runPlan(binary: string, plan: QemuPlan): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, plan.argv, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    let running = false;
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      running = true;
      child.kill("SIGKILL");
    }, QEMU_BOUND_MS);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, running });
    });
  });
}

/** QEMU's own answers about types and CPU models, from one `-machine none` instance over QMP (bounded, killed). */
async function introspect(binary: string, queries: { execute: string; arguments?: object }[]): Promise<unknown[]> {
  const child = spawn(binary, ["-machine", "none", "-nodefaults", "-no-user-config", "-display", "none", "-S", "-qmp", "stdio"], { stdio: ["pipe", "pipe", "pipe"] });
  try {
    return await new Promise<unknown[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`QMP introspection did not answer within ${QEMU_BOUND_MS} ms`)), QEMU_BOUND_MS);
      const answers: unknown[] = [];
      let buf = "";
      child.on("exit", (code) => reject(new Error(`QEMU exited (${code}) during QMP introspection`)));
      child.stdout.on("data", (d: Buffer) => {
        buf += d.toString();
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const msg = JSON.parse(buf.slice(0, nl)) as { QMP?: unknown; return?: unknown; error?: { desc: string } };
          buf = buf.slice(nl + 1);
          if (msg.QMP !== undefined) continue;
          if (msg.error) return reject(new Error(`QMP: ${msg.error.desc}`));
          if ("return" in msg) answers.push(msg.return);
          if (answers.length === queries.length + 1) {
            clearTimeout(timer);
            resolve(answers.slice(1));
          }
        }
      });
      for (const q of [{ execute: "qmp_capabilities" }, ...queries]) child.stdin.write(`${JSON.stringify(q)}\n`);
    });
  } finally {
    child.kill("SIGKILL");
  }
}

/** `-device` / `-object` values of a plan, as type and property names (QEMU's generic `id` aside). */
function groups(plan: QemuPlan, option: "-device" | "-object"): { type: string; props: string[] }[] {
  return plan.argv
    .flatMap((a, i) => (i > 0 && plan.argv[i - 1] === option ? [a] : []))
    .map((v) => {
      const [type, ...rest] = v.split(",");
      return { type: type!, props: rest.map((kv) => kv.split("=")[0]!).filter((k) => k !== "id") };
    });
}

function supports(plan: QemuPlan): boolean {
  try {
    checkQemuSupports(plan, qemu!.version);
    return true;
  } catch {
    return false;
  }
}

const testdata = path.join(repoRoot, "host-tools/src/launch/testdata");
const listeners: Server[] = [];
let stateDir = "";
let plans: { name: string; plan: QemuPlan }[] = [];

describe.skipIf(skipReason !== undefined)("--tee snp plans under a real SNP-capable QEMU", () => {
  beforeAll(async () => {
    if (qemu === undefined) throw found; // CI: setup.sh must have installed it
    stateDir = testStateDir();
    const saved = process.env.AIRLOCK_STATE;
    process.env.AIRLOCK_STATE = stateDir;
    try {
      // The pair's plans exactly as `airlock up --tee snp --firmware …` makes them.
      const dir = new PairDir("snpcheck");
      const firmware = loadSnpFirmware(OVMF_AMDSEV_SUFFIX);
      const pair = await snpRoom(loadManifest(path.join(repoRoot, "examples/hello/room.yaml")), dir, firmware);
      mkdirSync(path.dirname(dir.vhostSocket("firewall")), { recursive: true });
      // The vsock chardevs connect as QEMU starts: give them something to connect to.
      for (const role of ["firewall", "sandbox"] as const) {
        const server = createServer((s) => s.on("error", () => {}));
        await new Promise<void>((resolve) => server.listen(dir.vhostSocket(role), resolve));
        listeners.push(server);
      }
      const img = pair.room.images.firewall.dir;
      const base: SnpVmSpec = {
        name: "snpcheck-one",
        memoryMiB: 512,
        vcpus: 2,
        vcpuType: "EPYC-v4",
        ovmfPath: firmware.path,
        kernelPath: path.join(img, "vmlinuz"),
        initrdPath: path.join(img, "initrd.img"),
        append: "console=ttyS0 airlock.tee=snp",
        qmpSocket: path.join(stateDir, "one.qmp"),
        extraDevices: [],
      };
      const idKey = createPrivateKey(readFileSync(path.join(testdata, "id-key-test.pem")));
      const authorKey = createPrivateKey(readFileSync(path.join(testdata, "author-key-test.pem")));
      const { ovmfPath: _bios, ...rest } = base;
      const igvm = (over: Partial<IgvmVmSpec>): IgvmVmSpec => ({ ...rest, igvmPath: path.join(stateDir, "none.igvm"), ...over });
      plans = [
        { name: "pair firewall", plan: pair.plans.firewall },
        { name: "pair sandbox", plan: pair.plans.sandbox },
        { name: "plain SNP guest", plan: snpLaunchPlan({ ...base, console: "none" }) },
        // The firewall of a room with egress and governance: its restricted NIC, as tee-plans.ts adds it.
        { name: "firewall with a NIC", plan: snpLaunchPlan({ ...base, extraDevices: nicArgs(nicDestinations({ egress: [{ url: "https://api.example.test/v1/" }], governance: { consent: "https://gov.example.test/c" } }), true), spawnsForwarders: true }) },
        { name: "host data, ID block and author key", plan: snpLaunchPlan({ ...base, hostData: Buffer.alloc(32, 0xa1), idKey: { privateKey: idKey, authorKey, launchDigest: pair.measurements.firewall, familyId: Buffer.alloc(16, 1), imageId: Buffer.alloc(16, 2), guestSvn: 3 } }) },
        { name: "ID block without author key", plan: snpLaunchPlan({ ...base, idKey: { privateKey: idKey, launchDigest: pair.measurements.firewall } }) },
        ...type2LaunchPlan(igvm({ name: "snpcheck-t2" })).map((plan) => ({ name: "Type 2 (IGVM)", plan })),
        ...type3LaunchPlan(igvm({ name: "snpcheck-t3f" }), igvm({ name: "snpcheck-t3s", qmpSocket: path.join(stateDir, "t3s.qmp") })).map((plan) => ({ name: `Type 3 (IGVM) ${plan.role}`, plan })),
      ];
    } finally {
      if (saved === undefined) delete process.env.AIRLOCK_STATE;
      else process.env.AIRLOCK_STATE = saved;
    }
  });

  afterAll(async () => {
    await Promise.all(listeners.map((s) => new Promise((r) => s.close(r))));
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it("knows sev-snp-guest", () => {
    expect(parseQemuVersion(qemu!.version)[0]).toBeGreaterThanOrEqual(9);
  });

  it("stops every plan it can run at the hardware check, never on an option or property", async () => {
    const ran: string[] = [];
    for (const { name, plan } of plans) {
      let supported = true;
      try {
        checkQemuSupports(plan, qemu!.version);
      } catch (err) {
        // IGVM plans need QEMU ≥ 10.1; the launcher refuses them by version before QEMU runs.
        supported = false;
        expect((err as AirlockError).code, name).toBe("TEE_UNSUPPORTED");
      }
      if (!supported) continue;
      const out = await runPlan(qemu!.binary, plan);
      const lines = out.stderr.trim().split("\n").filter(Boolean);
      expect(out.stderr, `${name}: QEMU refused its command line`).not.toMatch(COMMAND_LINE);
      if (out.running) {
        // An SEV-SNP host: QEMU accepted the launch and sat paused (-S) until killed.
        expect(lines, name).toEqual([]);
      } else {
        expect(out.code, `${name}: ${out.stderr}`).toBe(1);
        expect(lines.length, `${name}: ${out.stderr}`).toBeGreaterThan(0);
        for (const line of lines) expect(HARDWARE.some((re) => re.test(line)), `${name}: not a hardware failure: ${line}`).toBe(true);
      }
      ran.push(name);
    }
    expect(ran).toEqual(expect.arrayContaining(["pair firewall", "pair sandbox", "plain SNP guest", "firewall with a NIC", "host data, ID block and author key", "ID block without author key"]));
  });

  it("knows every device, object property and CPU model the plans use after KVM starts", async () => {
    const runnable = plans.filter(({ plan }) => supports(plan));
    const devices = [...new Set(runnable.flatMap(({ plan }) => groups(plan, "-device").map((g) => g.type)))];
    const objects = [...new Set(runnable.flatMap(({ plan }) => groups(plan, "-object").map((g) => g.type)))];
    const answers = await introspect(qemu!.binary, [
      ...devices.map((typename) => ({ execute: "device-list-properties", arguments: { typename } })),
      ...objects.map((typename) => ({ execute: "qom-list-properties", arguments: { typename } })),
      { execute: "query-cpu-definitions" },
    ]);
    const names = (a: unknown): Set<string> => new Set((a as { name: string }[]).map((p) => p.name));
    const known = new Map<string, Set<string>>([...devices, ...objects].map((t, i) => [t, names(answers[i])]));
    const cpus = names(answers.at(-1));
    for (const { name, plan } of runnable) {
      for (const g of [...groups(plan, "-device"), ...groups(plan, "-object")]) {
        for (const p of g.props) expect(known.get(g.type)!.has(p), `${name}: ${g.type} has no property ${p}`).toBe(true);
      }
      expect(cpus.has(plan.argv[plan.argv.indexOf("-cpu") + 1]!), `${name}: CPU model`).toBe(true);
    }
    // The property the SNP guest's virtio needs (VIRTIO_F_ACCESS_PLATFORM) is there.
    expect(known.get("vhost-user-vsock-pci")!.has("iommu_platform")).toBe(true);
    expect(known.get("virtio-net-pci")!.has("iommu_platform")).toBe(true);
  });
});
