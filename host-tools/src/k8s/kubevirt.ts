// The part of KubeVirt's v1 API (kubevirt.io/v1) that `airlock k8s render` writes, typed from
// KubeVirt's API reference. KubeVirt publishes no typed model package with its schema (there is
// no @kubernetes-models/kubevirt), so only the fields airlock uses are declared here; the core
// Kubernetes types inside a VirtualMachine (metadata, affinity, resources) are kubernetes-models'
// own and are checked against the published Kubernetes schema (render.ts validate()).
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IAffinity } from "kubernetes-models/v1/Affinity";
import type { IResourceRequirements } from "kubernetes-models/v1/ResourceRequirements";

type IObjectMeta = NonNullable<IConfigMap["metadata"]>;

export interface KubevirtVirtualMachine {
  apiVersion: "kubevirt.io/v1";
  kind: "VirtualMachine";
  metadata: IObjectMeta;
  spec: {
    /** Once: the room runs to its end and is not restarted (a restarted guest would be a new launch). */
    runStrategy: "Once" | "Always" | "Manual" | "Halted";
    template: {
      metadata: IObjectMeta;
      spec: VirtualMachineInstanceSpec;
    };
  };
}

export interface VirtualMachineInstanceSpec {
  affinity: IAffinity;
  domain: {
    cpu: { cores: number; sockets: 1; threads: 1 };
    memory: { guest: string };
    /** Requests include the fabric's extended resource (the device plugin mounts the sockets). */
    resources: IResourceRequirements;
    /** SEV-SNP launch (KubeVirt's launchSecurity); HOST_DATA and kernel hashes are set by the hook. */
    launchSecurity: { snp: Record<string, never> };
    firmware: {
      bootloader: { efi: { secureBoot: false } };
      kernelBoot: {
        kernelArgs: string;
        container: { image: string; kernelPath: string; initrdPath: string; imagePullPolicy: "IfNotPresent" };
      };
    };
    devices: {
      autoattachGraphicsDevice: false;
      autoattachMemBalloon: false;
      autoattachVSOCK: false;
      autoattachSerialConsole: boolean;
      autoattachPodInterface: boolean;
      disks: [];
      interfaces: { name: string; masquerade: Record<string, never> }[];
    };
  };
  networks: { name: string; pod: Record<string, never> }[];
  volumes: [];
  terminationGracePeriodSeconds: number;
}
