// The vsock fabric's public surface (vhost-user-vsock backend for airlock's VMs).
export { startFabric, type Fabric, type FabricOptions, type VmDisconnected } from "./fabric.ts";
export { parseVmOption, parseConfigFile, checkVmSpecs, type VmSpec } from "./options.ts";
