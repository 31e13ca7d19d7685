// The command list: every `airlock` sub-command's name and one-line description, in the order
// `airlock --help` lists them. Each command's options (its yargs builder) and handler live in its
// own module, imported only when that command is chosen, so `airlock --help` loads none of them
// and a command loads only its own code (the bundle splits them into chunks; see
// images/build-bundles.mjs).
import type { Argv } from "yargs";
import type { AirlockCommand } from "../command.ts";

/** A command's module: its options and handler (named and described here). */
type CommandBody = Pick<AirlockCommand, "builder" | "handler">;

/** A command whose module is imported the first time yargs needs its options or handler. */
function lazy(command: string, describe: string | false, load: () => Promise<CommandBody>): AirlockCommand {
  let body: Promise<CommandBody> | undefined;
  const loaded = (): Promise<CommandBody> => (body ??= load());
  return {
    command,
    describe,
    builder: async (y: Argv) => {
      const { builder } = await loaded();
      return typeof builder === "function" ? builder(y) : y.options(builder ?? {});
    },
    handler: async (argv) => (await loaded()).handler(argv),
  };
}

/** Every sub-command, in the order `airlock --help` lists them. */
export const commands: AirlockCommand[] = [
  lazy("measure", "compute the SEV-SNP launch digest of firmware, kernel, initrd and command line (as sev-snp-measure --mode snp)", async () => (await import("./measure.ts")).measureCommand),
  lazy("images <action>", "build measured boot images", async () => (await import("./images.ts")).imagesCommand),
  lazy(
    "run <manifest>",
    "the batch job: start the pair, run the workload to its end, write the released outputs to --out (new or empty), stop the pair; exit 0 on success, the workload's status at DOMAIN_OWNED or below, 64 for a failed workload above it, 65 for a run that did not complete",
    async () => (await import("./run.ts")).runCommand,
  ),
  lazy("up <manifest>", "start a VM pair for a room and return once both guests run (the workload runs to its end inside)", async () => (await import("./pair-commands.ts")).upCommand),
  lazy("status [name]", "show one VM pair, or all", async () => (await import("./pair-commands.ts")).statusCommand),
  lazy("logs <name>", "print a VM's console (the firewall's; the sandbox's only when started with --debug), or the supervisor's log", async () => (await import("./pair-commands.ts")).logsCommand),
  lazy("down <name>", "stop a VM pair and remove its state (idempotent)", async () => (await import("./pair-commands.ts")).downCommand),
  lazy("call <room> [service] [method]", "call a service room's API after checking its attestation evidence (Encrypted Zone's EzPublicApi)", async () => (await import("./call.ts")).callCommand),
  lazy("supervise <manifest>", false, async () => (await import("./pair-commands.ts")).superviseCommand),
  lazy("verify-report <report>", "verify an SEV-SNP attestation report against AMD's chain (or a named test root) and expectations", async () => (await import("./verify-report.ts")).verifyReportCommand),
  lazy("kbs <command>", "the key broker: releases dataset keys to attested firewall VMs", async () => (await import("./kbs.ts")).kbsCommand),
  lazy("dataset <command>", "encrypt and decrypt datasets in the age format", async () => (await import("./dataset.ts")).datasetCommand),
  lazy("audit <command>", "work with audit trails", async () => (await import("./audit.ts")).auditCommand),
  lazy("manifest", "room manifest digest, collaborators' signatures, input grants", async () => (await import("./manifest.ts")).manifestCommand),
  lazy("k8s <command>", "render the Kubernetes objects that run a room on KubeVirt (docs/kubernetes.md)", async () => (await import("./k8s.ts")).k8sCommand),
  lazy("version", "print airlock's version and build identity (what --host compares on a remote host)", async () => (await import("./remote-side.ts")).versionCommand),
  lazy("remote-side <op> [dir]", false, async () => (await import("./remote-side.ts")).remoteSideCommand),
  lazy("vsock-fabric", "serve the virtio-vsock devices of QEMU guests (vhost-user-vsock backend)", async () => (await import("./vsock-fabric.ts")).vsockFabricCommand),
];
