// The vsock fabric's public surface: a vhost-user-vsock backend serving several QEMU guests.
//
//   const fabric = startFabric({ vms: [
//     // guest -> host is deny-by-default: the firewall may reach <udsPath>_1024 only.
//     { cid: 3, socket: "/run/x/fw.vhost", udsPath: "/run/x/fw.vsock", groups: ["pair", "ctl"], hostPorts: [1024] },
//     { cid: 4, socket: "/run/x/sb.vhost", udsPath: "/run/x/sb.vsock", groups: ["pair"] },
//   ], logger });
//   fabric.on("vm-disconnected", ({ cid, reason }) => ...);  // QEMU went away or was cut off
//   fabric.on("error", (err) => ...);                        // err.cid names the VM at fault
//   await fabric.ready;                                      // then start QEMU with
//     -object memory-backend-memfd,id=mem,size=…,share=on -machine …,memory-backend=mem
//     -chardev socket,id=vsock,path=<socket> -device vhost-user-vsock-pci,chardev=vsock
//   ...
//   await fabric.stop();
//
// The fabric runs in the caller's event loop; nothing a guest or QEMU does throws out of it.
export { startFabric, type Fabric, type FabricOptions, type VmDisconnected } from "./fabric.ts";
export { parseVmOption, parseConfigFile, checkVmSpecs, type VmSpec } from "./options.ts";
