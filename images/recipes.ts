// What goes into each airlock boot image. The builder (host-tools/src/images/) turns a recipe
// plus its host inputs (Debian's kernel package, busybox-static, node, the bundled programs, the
// workload bundle) into kernel + initrd + command line, bit for bit the same on every build.

export type ImageName = "firewall" | "sandbox" | "minimal";

export interface ImageRecipe {
  name: ImageName;
  /** Kernel command line; measured (SNP kernel hashes), so it never depends on the host. */
  cmdline: string;
  /** Kernel modules to load, relative to lib/modules/<version>/kernel (dependencies are added). */
  modules: string[];
  /** Include node, its shared libraries and our program bundle (dist/<program>). */
  program?: "firewall-vm.mjs" | "sandbox-vm.mjs";
  /** Include the node-vsock addon for AF_VSOCK from node. */
  vsockAddon: boolean;
  /** Bake the room's workload bundle in at /workload. */
  workload: boolean;
  /** Unprivileged account the workload runs as. */
  users?: { name: string; uid: number }[];
}

// Leaf modules only: the builder adds their dependencies (from each module's modinfo) in load order.
const VIRTIO = ["drivers/virtio/virtio_pci.ko"];
const VSOCK = ["net/vmw_vsock/vmw_vsock_virtio_transport.ko"];
const NET = ["drivers/net/virtio_net.ko"];

// quiet: serial output is slow under emulation; panic=-1 with QEMU's -no-reboot ends the VM;
// no_timer_check: the kernel's IO-APIC timer probe counts ticks against a deadline and panics
// ("IO-APIC + timer doesn't work!") when a loaded host runs the vCPU too slowly — seen with
// eight pairs at once under TCG (test/fleet/eight-pairs.test.ts); QEMU's timer is known good.
const CMDLINE = "console=ttyS0 quiet panic=-1 no_timer_check rdinit=/init";

export const RECIPES: Record<ImageName, ImageRecipe> = {
  firewall: { name: "firewall", cmdline: CMDLINE, modules: [...VIRTIO, ...VSOCK, ...NET], program: "firewall-vm.mjs", vsockAddon: true, workload: false },
  sandbox: {
    name: "sandbox",
    cmdline: CMDLINE,
    // No network driver at all: the sandbox has no NIC, and no module to drive one if it had.
    modules: [...VIRTIO, ...VSOCK],
    program: "sandbox-vm.mjs",
    vsockAddon: true,
    workload: true,
    users: [{ name: "workload", uid: 1000 }],
  },
  minimal: { name: "minimal", cmdline: CMDLINE, modules: [], vsockAddon: false, workload: false },
};
