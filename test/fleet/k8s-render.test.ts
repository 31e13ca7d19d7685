// Issue 13 point 3, what can be checked without a cluster: `airlock k8s render` emits the room's
// objects, each core object valid against the published Kubernetes schema kubernetes-models embeds
// (re-validated here from the YAML, as a cluster would read it), the two KubeVirt VirtualMachines
// with the affinity, resources and hook that keep the pair on one node with vsock as the sandbox's
// only path; and the hook itself, run on a libvirt domain as virt-launcher would run it.
import { execFileSync, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import { beforeAll, describe, expect, it } from "vitest";
import { DaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { Affinity } from "kubernetes-models/v1/Affinity";
import { ResourceRequirements } from "kubernetes-models/v1/ResourceRequirements";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { airlock, repoRoot, testStateDir } from "../helpers.ts";
import { scratchDir } from "../scratch.ts";

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const env = { AIRLOCK_STATE: testStateDir() };
const hookScript = path.join(repoRoot, "host-tools/src/k8s/on-define-domain.py");
let objects: Obj[] = [];
let egressObjects: Obj[] = [];

async function render(room: string, extra: string[] = []): Promise<Obj[]> {
  const r = await airlock(["k8s", "render", room, ...extra], env, 600_000);
  expect(r.code, r.stderr).toBe(0);
  return parseAllDocuments(r.stdout).map((d) => d.toJSON() as Obj).filter(Boolean);
}
const find = (objs: Obj[], kind: string, name: string): Obj => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o;
};

beforeAll(async () => {
  objects = await render(path.join(repoRoot, "examples/hello/room.yaml"));
  // A room with egress: the firewall gets its one NIC; the sandbox still none.
  const dir = scratchDir("airlock-k8s-");
  execFileSync("cp", ["-r", path.join(repoRoot, "examples/hello/workload"), dir]);
  const yaml = readFileSync(path.join(repoRoot, "examples/hello/room.yaml"), "utf8").replace("name: hello", "name: hello-egress") + "egress:\n  - {name: stats, url: 'http://stats.example.test:8080/in/', methods: [POST], mode: open, scope: PUBLIC}\n";
  execFileSync("sh", ["-c", `cat > ${dir}/room.yaml`], { input: yaml });
  egressObjects = await render(path.join(dir, "room.yaml"), ["--namespace", "rooms"]);
}, 600_000);

describe("airlock k8s render", () => {
  it("emits the room's objects, each core one valid against the published Kubernetes schema", () => {
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([
      "ConfigMap/hello-room",
      "ConfigMap/hello-vsock-hook",
      "PersistentVolumeClaim/hello-outputs",
      "DaemonSet/hello-fabric",
      "VirtualMachine/hello-firewall",
      "VirtualMachine/hello-sandbox",
      "NetworkPolicy/hello-sandbox",
      "NetworkPolicy/hello-firewall",
    ]);
    const models: Record<string, new (o: Obj) => { validate(): void }> = { ConfigMap, PersistentVolumeClaim, DaemonSet, NetworkPolicy };
    for (const o of objects.filter((x) => x.kind !== "VirtualMachine")) new models[o.kind]!(o).validate();
    // The check can fail: a DaemonSet without its selector is refused.
    const broken = structuredClone(find(objects, "DaemonSet", "hello-fabric"));
    delete broken.spec.selector;
    expect(() => new DaemonSet(broken).validate()).toThrow(/selector/);
  });

  it("pins both VMs to the room's SEV-SNP node, each with the fabric's resource and the vsock hook; the sandbox has no NIC", () => {
    const digest = find(objects, "ConfigMap", "hello-room").data["host-data"] as string;
    expect(digest).toMatch(/^[0-9a-f]{64}$/);
    for (const role of ["firewall", "sandbox"]) {
      const vm = find(objects, "VirtualMachine", `hello-${role}`);
      expect(vm.apiVersion).toBe("kubevirt.io/v1");
      expect(vm.spec.runStrategy).toBe("Once");
      const tpl = vm.spec.template;
      new Affinity(tpl.spec.affinity).validate();
      new ResourceRequirements(tpl.spec.domain.resources).validate();
      new ConfigMap({ metadata: { ...tpl.metadata, name: "x" } }).validate();
      const terms = tpl.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions;
      expect(terms).toEqual([
        { key: "airlock.dev/sev-snp", operator: "In", values: ["true"] },
        { key: "room.airlock.dev/hello", operator: "In", values: ["true"] },
      ]);
      expect(tpl.spec.domain.resources.requests["airlock.dev/vsock-fabric"]).toBe("1");
      expect(tpl.spec.domain.launchSecurity).toEqual({ snp: {} });
      expect(tpl.spec.domain.devices.autoattachVSOCK).toBe(false);
      expect(tpl.metadata.annotations).toMatchObject({ "airlock.dev/room": "hello", "airlock.dev/role": role, "airlock.dev/host-data": digest });
      expect(JSON.parse(tpl.metadata.annotations["hooks.kubevirt.io/hookSidecars"])).toEqual([{ args: ["--version", "v1alpha3"], configMap: { name: "hello-vsock-hook", key: "onDefineDomain", hookPath: "/usr/bin/onDefineDomain" } }]);
      // No NIC in a room without destinations, for either VM.
      expect(tpl.spec.domain.devices.autoattachPodInterface).toBe(false);
      expect(tpl.spec.networks).toEqual([]);
    }
    expect(find(objects, "VirtualMachine", "hello-sandbox").spec.template.spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey).toBe("kubernetes.io/hostname");
    const sandboxPolicy = find(objects, "NetworkPolicy", "hello-sandbox").spec;
    expect(sandboxPolicy).toMatchObject({ policyTypes: ["Ingress", "Egress"], ingress: [], egress: [] });

    const egSandbox = find(egressObjects, "VirtualMachine", "hello-egress-sandbox").spec.template.spec;
    const egFirewall = find(egressObjects, "VirtualMachine", "hello-egress-firewall").spec.template.spec;
    expect(egSandbox.domain.devices.autoattachPodInterface).toBe(false);
    expect(egSandbox.networks).toEqual([]);
    expect(egFirewall.networks).toEqual([{ name: "egress", pod: {} }]);
    expect(find(egressObjects, "NetworkPolicy", "hello-egress-firewall").spec.egress).toEqual([{ to: [{ ipBlock: { cidr: "0.0.0.0/0" } }], ports: [{ protocol: "TCP", port: 8080 }] }]);
    expect(egressObjects.every((o) => o.metadata.namespace === "rooms")).toBe(true);
  });

  it("runs the room's fabric on the room's node with this pair's CIDs and deny-by-default host ports", () => {
    const ds = find(objects, "DaemonSet", "hello-fabric").spec.template.spec;
    expect(ds.nodeSelector).toEqual({ "room.airlock.dev/hello": "true", "airlock.dev/sev-snp": "true" });
    const fabric = ds.containers.find((c: Obj) => c.name === "fabric");
    expect(fabric.command).toEqual([
      "airlock", "vsock-fabric",
      "--vm", "guest-cid=3,socket=/var/run/airlock/rooms/hello/firewall.vhost,uds-path=/var/run/airlock/rooms/hello/firewall.vsock,groups=pair-hello,host-ports=1024+1025+1026+1027",
      "--vm", "guest-cid=4,socket=/var/run/airlock/rooms/hello/sandbox.vhost,uds-path=/var/run/airlock/rooms/hello/sandbox.vsock,groups=pair-hello",
    ]);
    expect(fabric.securityContext).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    expect(find(objects, "DaemonSet", "hello-fabric").metadata.annotations["airlock.dev/not-built"]).toContain("host-link");
  });

  it("the hook adds the vhost-user vsock device, shared memory and HOST_DATA, and fails closed", () => {
    const vmi = (role: string, digest = "ab".repeat(32)): string => JSON.stringify({ metadata: { annotations: { "airlock.dev/room": "hello", "airlock.dev/role": role, "airlock.dev/host-data": digest } } });
    const domain = (extra = ""): string =>
      `<domain type="kvm"><name>x</name><memory unit="KiB">1048576</memory><devices><vsock model="virtio"><cid auto="no" address="7"/></vsock>${extra}</devices><launchSecurity type="sev-snp"><policy>0x30000</policy></launchSecurity></domain>`;
    const run = (v: string, d: string): { status: number | null; stdout: string; stderr: string } => {
      const r = spawnSync("python3", [hookScript, "--vmi", v, "--domain", d], { encoding: "utf8" });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    const ok = run(vmi("sandbox"), domain());
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('<qemu:arg value="socket,id=airlock-vsock,path=/var/run/airlock/rooms/hello/sandbox.vhost" />');
    expect(ok.stdout).toContain('<qemu:arg value="vhost-user-vsock-pci,chardev=airlock-vsock,id=airlock-vsock,iommu_platform=on" />');
    expect(ok.stdout).toContain('<memoryBacking><source type="memfd" /><access mode="shared" /></memoryBacking>');
    expect(ok.stdout).toContain(`<hostData>${Buffer.from("ab".repeat(32), "hex").toString("base64")}</hostData>`);
    expect(ok.stdout).toContain('kernelHashes="yes"');
    expect(ok.stdout).not.toContain("<vsock"); // the kernel's vhost-vsock device is removed
    // Fails closed: a sandbox with a NIC, a bad digest, no SNP.
    expect(run(vmi("sandbox"), domain('<interface type="ethernet"/>')).stderr).toContain("must have none");
    expect(run(vmi("firewall", "zz"), domain()).status).toBe(1);
    expect(run(vmi("firewall"), domain().replace(' type="sev-snp"', ' type="sev"')).stderr).toContain("no SEV-SNP");
    expect(run(vmi("firewall"), domain('<interface type="ethernet"/>')).status).toBe(0);
  });

  it("--out writes one file per object", async () => {
    const out = scratchDir("airlock-k8s-out-");
    const r = await airlock(["k8s", "render", path.join(repoRoot, "examples/hello/room.yaml"), "--out", out], env, 600_000);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(out).sort()).toEqual([
      "00-configmap-hello-room.yaml",
      "01-configmap-hello-vsock-hook.yaml",
      "02-persistentvolumeclaim-hello-outputs.yaml",
      "03-daemonset-hello-fabric.yaml",
      "04-virtualmachine-hello-firewall.yaml",
      "05-virtualmachine-hello-sandbox.yaml",
      "06-networkpolicy-hello-sandbox.yaml",
      "07-networkpolicy-hello-firewall.yaml",
    ]);
  });
});
