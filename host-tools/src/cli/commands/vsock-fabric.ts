// `airlock vsock-fabric`: the vhost-user-vsock backend on its own, with rust-vmm
// vhost-device-vsock's options. A thin wrapper over startFabric(); runs until SIGINT/SIGTERM.
import type { AirlockCommand } from "../command.ts";
import { printResult } from "../command.ts";
import { AirlockError } from "../../../../proto/src/errors.ts";
import { createRootLogger } from "../../../../proto/src/log.ts";
import { parseConfigFile, parseVmOption, startFabric, type VmSpec } from "../../fabric/index.ts";
import { checkCid } from "../../fabric/options.ts";

interface Args {
  vm?: string[];
  "guest-cid"?: string;
  socket?: string;
  "uds-path"?: string;
  groups?: string;
  "host-ports"?: string;
  config?: string;
  json?: boolean;
}

function specsFrom(args: Args): VmSpec[] {
  const specs: VmSpec[] = [];
  if (args.config) specs.push(...parseConfigFile(args.config));
  for (const v of args.vm ?? []) specs.push(parseVmOption(v));
  const single = args["guest-cid"] !== undefined || args.socket !== undefined || args["uds-path"] !== undefined;
  if (!single && (args.groups !== undefined || args["host-ports"] !== undefined)) {
    throw new AirlockError("USAGE", "--groups and --host-ports belong to the single-VM form (--guest-cid, --socket, --uds-path)", {
      hint: "with --vm, write them inside its value: --vm guest-cid=N,...,groups=a+b,host-ports=P+Q",
    });
  }
  if (single) {
    if (args["guest-cid"] === undefined || !args.socket || !args["uds-path"]) {
      throw new AirlockError("USAGE", "--guest-cid, --socket and --uds-path go together", { hint: "or use --vm guest-cid=N,socket=PATH,uds-path=PATH" });
    }
    const parts = [`guest-cid=${checkCid(args["guest-cid"], "--guest-cid")}`, `socket=${args.socket}`, `uds-path=${args["uds-path"]}`];
    if (args.groups) parts.push(`groups=${args.groups}`);
    if (args["host-ports"] !== undefined) parts.push(`host-ports=${args["host-ports"]}`);
    specs.push(parseVmOption(parts.join(",")));
  }
  if (specs.length === 0) throw new AirlockError("USAGE", "no VM given", { hint: "add --vm guest-cid=N,socket=PATH,uds-path=PATH[,groups=a+b][,host-ports=P+Q]" });
  return specs;
}

export const vsockFabricCommand: AirlockCommand = {
  builder: (y) =>
    y
      .option("vm", {
        type: "string",
        array: true,
        describe:
          "guest-cid=N,socket=PATH,uds-path=PATH[,groups=a+b][,host-ports=P+Q] (repeatable). Guest -> host is deny-by-default: the guest reaches <uds-path>_P only for the ports P in host-ports",
      })
      .option("guest-cid", { type: "string", describe: "single-VM form: guest CID" })
      .option("socket", { type: "string", describe: "single-VM form: vhost-user socket" })
      .option("uds-path", { type: "string", describe: "single-VM form: host-side socket" })
      .option("groups", { type: "string", describe: "single-VM form: groups joined by '+'" })
      .option("host-ports", { type: "string", describe: "single-VM form: host ports the guest may connect to, joined by '+' (default none)" })
      .option("config", { type: "string", describe: "YAML file with vms: [{guest_cid, socket, uds_path, groups, host_ports}] (host_ports: a list, or ports joined by '+')" })
      .option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const args = argv as Args;
    const specs = specsFrom(args);
    const logger = createRootLogger({ name: "airlock-vsock-fabric" });
    const fabric = startFabric({ vms: specs, logger });
    fabric.on("error", (err) => logger.error({ cid: err.cid, code: err.code }, err.message));
    await fabric.ready;
    printResult(args.json ?? false, { ready: true, vms: specs }, () =>
      specs
        .map((s) => `vsock fabric: cid ${s.cid} on ${s.socket} (host side ${s.udsPath}, groups ${s.groups.join("+")}, host ports ${s.hostPorts?.length ? s.hostPorts.join("+") : "none"})`)
        .join("\n"),
    );
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
    await fabric.stop();
  },
};
