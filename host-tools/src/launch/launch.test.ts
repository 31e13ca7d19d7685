import { describe, expect, it } from "vitest";
import { inspectInventory, type GuestInventory } from "./prelaunch-checks.ts";
import { qemuArgs, type VmSpec } from "./qemu-args.ts";
import { parseRoom } from "../../../proto/src/room.ts";
import { checkRelativePath } from "../../../proto/src/control.ts";

const sandbox: VmSpec = {
  pair: "p",
  role: "sandbox",
  imageDir: "/img",
  cmdline: "console=ttyS0",
  memoryMiB: 512,
  vcpus: 1,
  accel: "tcg",
  qmpSocket: "/s/sandbox.qmp",
  console: "none",
  vsockSocket: "/s/vsock/sandbox.vhost",
};

const pci = (vendor: number, device: number, cls: number, desc = "") => ({ bus: 0, slot: 1, function: 0, class_info: { class: cls, desc }, id: { vendor, device } });
const base: GuestInventory = {
  status: "prelaunch",
  pci: [pci(0x8086, 0x29c0, 0x0600), pci(0x8086, 0x2918, 0x0601), pci(0x8086, 0x2922, 0x0106), pci(0x8086, 0x2930, 0x0c05), pci(0x1af4, 0x1053, 0x0780)],
  block: [],
  chardevs: [
    { label: "compat_monitor0", filename: "unix:/s/sandbox.qmp" },
    { label: "vsock0", filename: "unix:/s/vsock/sandbox.vhost" },
  ],
  memdevs: [{ id: "ram0", size: 512 * 1024 * 1024, share: true }],
  cpus: [{}],
  network: "",
};

describe("QEMU command line", () => {
  it("gives the sandbox no defaults, no console, no disk, shared RAM, a vsock device, and starts it paused", () => {
    const argv = qemuArgs(sandbox);
    expect(argv.join(" ")).toBe(
      [
        "-name airlock-p-sandbox,debug-threads=on -nodefaults -no-user-config -display none",
        "-machine q35,accel=tcg,memory-backend=ram0 -cpu max -smp 1 -m 512M",
        "-object memory-backend-memfd,id=ram0,size=512M,share=on",
        "-kernel /img/vmlinuz -initrd /img/initrd.img -append console=ttyS0 -no-reboot -S",
        "-qmp unix:/s/sandbox.qmp,server=on,wait=off",
        "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-serial none -chardev socket,id=vsock0,path=/s/vsock/sandbox.vhost -device vhost-user-vsock-pci,chardev=vsock0,id=vsock0",
      ].join(" "),
    );
    expect(argv).not.toContain("-netdev");
    expect(argv.some((a) => /virtfs|9p|usb|-drive|-hda/.test(a))).toBe(false);
  });

  it("uses KVM's host CPU model only under KVM", () => {
    expect(qemuArgs({ ...sandbox, accel: "kvm" })).toEqual(expect.arrayContaining(["q35,accel=kvm,memory-backend=ram0", "host"]));
  });
});

describe("pre-launch checks", () => {
  it("accept exactly what the sandbox should get", () => {
    expect(inspectInventory(sandbox, base)).toEqual([]);
  });

  it("refuse a NIC, a USB controller, a shared folder, a disk, an extra chardev, private RAM, a running guest", () => {
    const bad: GuestInventory = {
      ...base,
      status: "running",
      pci: [...base.pci, pci(0x1af4, 0x1041, 0x0200, "Ethernet controller"), pci(0x8086, 0x24cd, 0x0c03, "USB controller"), pci(0x1af4, 0x1049, 0x0002), pci(0x1234, 0x1111, 0x0300)],
      block: [{ device: "hd0" }],
      chardevs: [...base.chardevs, { label: "fs0", filename: "unix:/x" }],
      memdevs: [{ id: "ram0", size: 512 * 1024 * 1024, share: false }],
      cpus: [{}, {}],
      network: "net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56\r\n \\ net0: index=0,type=user,net=10.0.2.0\r\n",
    };
    const problems = inspectInventory(sandbox, bad).join("\n");
    expect(problems).toContain("expected a paused guest");
    expect(problems).toContain("a network device");
    expect(problems).toContain("a network backend QEMU reports: net0: index=0,type=user");
    expect(problems).toContain("a USB controller");
    expect(problems).toContain("a shared folder");
    expect(problems).toContain("not on the sandbox VM's device allowlist");
    expect(problems).toContain("block device");
    expect(problems).toContain("unexpected character device fs0");
    expect(problems).toContain("guest RAM is not shared");
    expect(problems).toContain("2 vCPUs");
  });

  it("notices a missing vsock device and an attached console", () => {
    const inv = { ...base, pci: base.pci.slice(0, 4), chardevs: [...base.chardevs, { label: "serial0", filename: "stdio" }] };
    const problems = inspectInventory(sandbox, inv).join("\n");
    expect(problems).toContain("the vsock device is missing");
    expect(problems).toContain("unexpected character device serial0");
  });
});

describe("messages from guests", () => {
  it("refuse output paths that leave the output folder", () => {
    for (const p of ["../x", "/etc/passwd", "a/../../b", "", "a//b", "a\0b"]) expect(() => checkRelativePath(p)).toThrow(/not a plain relative path/);
    expect(() => checkRelativePath("SECRET/../x")).toThrow(/^an output file path/); // never quoted
    expect(checkRelativePath("dir/file.txt")).toBe("dir/file.txt");
  });

  it("check the room the host sends before the enforcer uses it", () => {
    const room = {
      apiVersion: "airlock/v1",
      name: "r",
      workload: { bundleTree: "00".repeat(32), command: ["/bin/true"], env: { A: "1" }, timeoutSeconds: 5 },
      inputs: [],
      outputs: [{ name: "o", mount: "/data/out/o", mode: "open", maxBytes: 10, format: "text" }],
      attestation: { firewall: "ab".repeat(48), sandbox: "cd".repeat(48), broker: "ef".repeat(32) },
    };
    expect(parseRoom(room).digest).toMatch(/^[0-9a-f]{64}$/);
    expect(parseRoom(room).attestation.sandbox).toBe("cd".repeat(48));
    expect(() => parseRoom({ ...room, attestation: undefined })).toThrow(/attestation/);
    expect(() => parseRoom({ ...room, attestation: { ...room.attestation, sandbox: "XY" } })).toThrow(/attestation.sandbox/);
    expect(() => parseRoom({ ...room, outputs: [{ ...room.outputs[0], name: "console" }] })).toThrow(/console/);
    expect(() => parseRoom({ ...room, console: { mode: "trusted", maxBytes: 10 } })).toThrow(/recipient/);
    expect(() => parseRoom({ ...room, outputs: [{ ...room.outputs[0], mount: "/etc" }] })).toThrow(/outputs\[0\].mount: expected a normalized absolute path under \/data\/out/);
    expect(() => parseRoom({ ...room, outputs: [{ ...room.outputs[0], mount: "/data/out/a/../../in" }] })).toThrow(/outputs\[0\].mount: expected a normalized/);
    // One rule for a guest path, here as in the agent's Run message (manifest/schema.ts isGuestPath).
    expect(() => parseRoom({ ...room, outputs: [{ ...room.outputs[0], mount: "/data/out/o/" }] })).toThrow(/outputs\[0\].mount: expected a normalized/);
    expect(() => parseRoom({ ...room, workload: { ...room.workload, env: { ["A".repeat(257)]: "1" } } })).toThrow(/at most 256 characters/);
    expect(() => parseRoom({ ...room, workload: { ...room.workload, env: { A: 1 } } })).toThrow(/workload.env.A/);
    expect(() => parseRoom({ ...room, apiVersion: "v0" })).toThrow(/apiVersion: expected "airlock\/v1"/);
    // The same rules as the user's file, but no file is read: a recipient must be inline, a key its hash.
    expect(() => parseRoom({ ...room, outputs: [{ ...room.outputs[0], mode: "trusted", recipient: "/etc/passwd" }] })).toThrow(/outputs\[0\].recipient: expected an age recipient/);
    expect(() => parseRoom({ ...room, collaborators: [{ name: "a", publicKey: "/etc/passwd" }] })).toThrow(/collaborators\[0\].publicKey: unknown field/);
    expect(() => parseRoom({ ...room, workload: { ...room.workload, bundle: "." } })).toThrow(/workload.bundle: unknown field/);
    expect(() => parseRoom(room)).not.toThrow();
  });
});
