// `airlock k8s render ROOM`: the Kubernetes objects that run one room on a KubeVirt cluster with
// SEV-SNP nodes (docs/kubernetes.md is the design). Core objects are kubernetes-models' typed
// models, validated against the published Kubernetes OpenAPI schema they embed; the two KubeVirt
// VirtualMachines are typed by kubevirt.ts and their core parts (metadata, affinity, resources)
// validated the same way. Nothing here talks to a cluster.
import { readFileSync } from "node:fs";
import path from "node:path";
import { DaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import { ConfigMap, type IConfigMap } from "kubernetes-models/v1/ConfigMap";
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { Affinity } from "kubernetes-models/v1/Affinity";
import { ResourceRequirements } from "kubernetes-models/v1/ResourceRequirements";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { AirlockError } from "../../../proto/src/errors.ts";
import { HOST_CONTROL_PORT, HOST_SANDBOX_PSP_PORT, KBS_VSOCK_PORT } from "../../../proto/src/control.ts";
import { PSP_VSOCK_PORT } from "../../../proto/src/attestation/psp-wire.ts";
import { nicDestinations } from "../../../proto/src/firewall-nic.ts";
import type { Manifest } from "../../../proto/src/manifest/index.ts";
import { projectRoot } from "../paths.ts";
import { CID } from "../launch/pair.ts";
import type { KubevirtVirtualMachine } from "./kubevirt.ts";

type ObjectMeta = NonNullable<IConfigMap["metadata"]>;
type Role = "firewall" | "sandbox";

/** Where the node's fabric puts each room's vhost-user sockets (a hostPath the VMs' QEMU reaches through the device plugin). */
export const SOCKET_DIR = "/var/run/airlock/rooms";
/** The extended resource the airlock device plugin advertises on SEV-SNP nodes; its Allocate mounts SOCKET_DIR. */
export const FABRIC_RESOURCE = "airlock.dev/vsock-fabric";
/** Nodes that can run rooms: SEV-SNP hosts with airlock's node components. */
export const SNP_NODE_LABEL = "airlock.dev/sev-snp";
/** The label an operator puts on the one node chosen for a room: both VMs and its fabric go there. */
export const roomNodeLabel = (room: string): string => `room.airlock.dev/${room}`;

export interface RenderOptions {
  namespace: string;
  /** Registry holding airlock's container image and the rooms' kernel images. */
  registry: string;
  /** Tag of airlock's own container image (fabric, host link). */
  airlockTag: string;
  /** The key broker as the host link reaches it. */
  kbsUrl: string;
}

export interface RoomForRender {
  manifest: Manifest;
  /** Hex manifest digest (SNP HOST_DATA). */
  digest: string;
  /** Canonical manifest with pins, as the firewall receives it. */
  canonical: unknown;
  pins: { firewall: string; sandbox: string };
  cmdlines: Record<Role, string>;
}

export interface RenderedObject {
  kind: string;
  name: string;
  /** The object as plain JSON, ready for YAML. */
  json: Record<string, unknown>;
}

const validated = <T extends { validate(): void; toJSON(): unknown }>(m: T): Record<string, unknown> => {
  try {
    m.validate();
  } catch (err) {
    throw new AirlockError("INTERNAL", `a rendered object fails the Kubernetes schema: ${(err as Error).message}`);
  }
  return m.toJSON() as Record<string, unknown>;
};

export function renderRoom(room: RoomForRender, opts: RenderOptions): RenderedObject[] {
  const m = room.manifest;
  const name = m.name;
  if (!/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(name)) throw new AirlockError("MANIFEST_INVALID", `room name ${JSON.stringify(name)} cannot name Kubernetes objects`);
  const ns = opts.namespace;
  const labels = (role?: Role | "fabric"): Record<string, string> => ({ "app.kubernetes.io/part-of": "airlock", "airlock.dev/room": name, ...(role && { "airlock.dev/role": role }) });
  const meta = (objName: string, role?: Role | "fabric"): ObjectMeta => ({ name: objName, namespace: ns, labels: labels(role), annotations: { "airlock.dev/host-data": room.digest } });
  const roomDir = `${SOCKET_DIR}/${name}`;
  const destinations = nicDestinations(m);
  const out: RenderedObject[] = [];
  const add = (kind: string, objName: string, json: Record<string, unknown>): void => void out.push({ kind, name: objName, json });

  add("ConfigMap", `${name}-room`, validated(new ConfigMap({ metadata: meta(`${name}-room`), data: { "room.json": `${JSON.stringify(room.canonical)}\n`, "host-data": room.digest } })));
  const hook = readFileSync(path.join(projectRoot(), "host-tools/src/k8s/on-define-domain.py"), "utf8");
  add("ConfigMap", `${name}-vsock-hook`, validated(new ConfigMap({ metadata: meta(`${name}-vsock-hook`), data: { onDefineDomain: hook } })));
  add(
    "PersistentVolumeClaim",
    `${name}-outputs`,
    validated(new PersistentVolumeClaim({ metadata: meta(`${name}-outputs`), spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } } })),
  );

  // The room's fabric and host link, on the room's node only: the fabric serves both VMs'
  // vhost-user sockets with this pair's own CIDs (3 and 4) and the same deny-by-default port rules
  // as `airlock up`; the host link answers the firewall's control, PSP-relay and key-broker ports.
  const vsockOf = (role: Role): string => `guest-cid=${CID[role]},socket=${roomDir}/${role}.vhost,uds-path=${roomDir}/${role}.vsock,groups=pair-${name}`;
  const hostPorts = [HOST_CONTROL_PORT, PSP_VSOCK_PORT, KBS_VSOCK_PORT, HOST_SANDBOX_PSP_PORT].join("+");
  const image = `${opts.registry}/airlock:${opts.airlockTag}`;
  const hardened = {
    runAsNonRoot: true,
    runAsUser: 107, // virt-launcher's qemu user, which must be able to connect to the sockets
    runAsGroup: 107,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ["ALL"] },
    seccompProfile: { type: "RuntimeDefault" as const },
  };
  const socketMount = { name: "sockets", mountPath: roomDir };
  add(
    "DaemonSet",
    `${name}-fabric`,
    validated(
      new DaemonSet({
        metadata: { ...meta(`${name}-fabric`, "fabric"), annotations: { "airlock.dev/host-data": room.digest, "airlock.dev/not-built": "the host-link container's command (airlock k8s host-link) does not exist yet: docs/kubernetes.md § What is built" } },
        spec: {
          selector: { matchLabels: labels("fabric") },
          template: {
            metadata: { labels: labels("fabric") },
            spec: {
              nodeSelector: { [roomNodeLabel(name)]: "true", [SNP_NODE_LABEL]: "true" },
              automountServiceAccountToken: false,
              enableServiceLinks: false,
              containers: [
                { name: "fabric", image, command: ["airlock", "vsock-fabric", "--vm", `${vsockOf("firewall")},host-ports=${hostPorts}`, "--vm", vsockOf("sandbox")], securityContext: hardened, volumeMounts: [socketMount] },
                {
                  name: "host-link",
                  image,
                  command: ["airlock", "k8s", "host-link", "--room", "/etc/airlock/room/room.json", "--sockets", roomDir, "--outputs", "/var/lib/airlock/outputs", "--kbs", opts.kbsUrl],
                  securityContext: hardened,
                  volumeMounts: [socketMount, { name: "room", mountPath: "/etc/airlock/room", readOnly: true }, { name: "outputs", mountPath: "/var/lib/airlock/outputs" }],
                },
              ],
              volumes: [
                { name: "sockets", hostPath: { path: roomDir, type: "DirectoryOrCreate" } },
                { name: "room", configMap: { name: `${name}-room` } },
                { name: "outputs", persistentVolumeClaim: { claimName: `${name}-outputs` } },
              ],
            },
          },
        },
      }),
    ),
  );

  for (const role of ["firewall", "sandbox"] as const) {
    const res = m.resources[role];
    const nic = role === "firewall" && destinations.length > 0;
    const affinity = new Affinity({
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [{ matchExpressions: [{ key: SNP_NODE_LABEL, operator: "In", values: ["true"] }, { key: roomNodeLabel(name), operator: "In", values: ["true"] }] }],
        },
      },
      // Both VMs on one node: their only link is the node-local fabric.
      ...(role === "sandbox" && {
        podAffinity: { requiredDuringSchedulingIgnoredDuringExecution: [{ labelSelector: { matchLabels: labels("firewall") }, topologyKey: "kubernetes.io/hostname" }] },
      }),
    });
    const resources = new ResourceRequirements({
      requests: { memory: `${res.memoryMiB}Mi`, [FABRIC_RESOURCE]: "1" },
      limits: { memory: `${res.memoryMiB}Mi`, [FABRIC_RESOURCE]: "1" },
    });
    const vmName = `${name}-${role}`;
    const templateMeta: ObjectMeta = {
      labels: labels(role),
      annotations: {
        "airlock.dev/room": name,
        "airlock.dev/role": role,
        "airlock.dev/host-data": room.digest,
        "airlock.dev/measurement": room.pins[role],
        "hooks.kubevirt.io/hookSidecars": JSON.stringify([{ args: ["--version", "v1alpha3"], configMap: { name: `${name}-vsock-hook`, key: "onDefineDomain", hookPath: "/usr/bin/onDefineDomain" } }]),
      },
    };
    // The core parts, against the Kubernetes schema.
    validated(affinity);
    validated(resources);
    validated(new ConfigMap({ metadata: { ...meta(vmName, role) } }));
    validated(new ConfigMap({ metadata: { ...templateMeta, name: vmName } }));
    const vm: KubevirtVirtualMachine = {
      apiVersion: "kubevirt.io/v1",
      kind: "VirtualMachine",
      metadata: meta(vmName, role),
      spec: {
        runStrategy: "Once",
        template: {
          metadata: templateMeta,
          spec: {
            affinity: affinity.toJSON() as KubevirtVirtualMachine["spec"]["template"]["spec"]["affinity"],
            domain: {
              cpu: { cores: res.vcpus, sockets: 1, threads: 1 },
              memory: { guest: `${res.memoryMiB}Mi` },
              resources: resources.toJSON() as KubevirtVirtualMachine["spec"]["template"]["spec"]["domain"]["resources"],
              launchSecurity: { snp: {} },
              firmware: {
                bootloader: { efi: { secureBoot: false } },
                kernelBoot: {
                  kernelArgs: room.cmdlines[role],
                  // The tag is a name, not a trust anchor: the SNP measurement of what boots is checked in attestation.
                  container: { image: `${opts.registry}/airlock-${role}:${room.pins[role].slice(0, 32)}`, kernelPath: "/boot/vmlinuz", initrdPath: "/boot/initrd.img", imagePullPolicy: "IfNotPresent" },
                },
              },
              devices: {
                autoattachGraphicsDevice: false,
                autoattachMemBalloon: false,
                autoattachVSOCK: false,
                autoattachSerialConsole: role === "firewall",
                autoattachPodInterface: nic,
                disks: [],
                interfaces: nic ? [{ name: "egress", masquerade: {} }] : [],
              },
            },
            networks: nic ? [{ name: "egress", pod: {} }] : [],
            volumes: [],
            terminationGracePeriodSeconds: 0,
          },
        },
      },
    };
    add("VirtualMachine", vmName, vm as unknown as Record<string, unknown>);
  }

  // The sandbox's pod reaches nothing and is reached by nothing; the firewall's pod reaches only
  // its destinations' ports (IP-level defence in depth: the firewall's enforcer checks each request).
  add(
    "NetworkPolicy",
    `${name}-sandbox`,
    validated(new NetworkPolicy({ metadata: meta(`${name}-sandbox`, "sandbox"), spec: { podSelector: { matchLabels: labels("sandbox") }, policyTypes: ["Ingress", "Egress"], ingress: [], egress: [] } })),
  );
  add(
    "NetworkPolicy",
    `${name}-firewall`,
    validated(
      new NetworkPolicy({
        metadata: meta(`${name}-firewall`, "firewall"),
        spec: {
          podSelector: { matchLabels: labels("firewall") },
          policyTypes: ["Ingress", "Egress"],
          ingress: [],
          egress: destinations.map((d) => ({
            to: [{ ipBlock: { cidr: /^\d{1,3}(\.\d{1,3}){3}$/.test(d.host) ? `${d.host}/32` : "0.0.0.0/0" } }],
            ports: [{ protocol: "TCP", port: d.port }],
          })),
        },
      }),
    ),
  );
  return out;
}
