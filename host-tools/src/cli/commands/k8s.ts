// `airlock k8s render ROOM`: the Kubernetes objects for one room (k8s/render.ts), as YAML on
// stdout or one file per object in --out. The images are built (or reused) to name their
// measurements and command lines, as `airlock up` would launch them.
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Argv } from "yargs";
import { stringify } from "yaml";
import { AirlockError } from "../../../../proto/src/errors.ts";
import { loadManifest } from "../../../../proto/src/manifest/index.ts";
import { roomIdentity } from "../../launch/room-digest.ts";
import { renderRoom, type RenderedObject } from "../../k8s/render.ts";
import type { AirlockCommand } from "../command.ts";

interface RenderArgs {
  manifest: string;
  out?: string;
  namespace: string;
  registry: string;
  "airlock-tag": string;
  "kbs-url": string;
}

export function toYaml(objects: RenderedObject[], source: string): string {
  const head = `# airlock k8s render ${source}: the design is docs/kubernetes.md\n`;
  return head + objects.map((o) => `---\n${stringify(o.json, { lineWidth: 0 })}`).join("");
}

const render: AirlockCommand = {
  command: "render <manifest>",
  describe: "emit the Kubernetes objects that run the room on KubeVirt with SEV-SNP nodes (nothing is applied)",
  builder: (y: Argv) =>
    y
      .positional("manifest", { type: "string", demandOption: true, describe: "room manifest (YAML)" })
      .option("out", { type: "string", describe: "write one YAML file per object into DIR instead of stdout" })
      .option("namespace", { type: "string", default: "airlock", describe: "namespace of the room's objects" })
      .option("registry", { type: "string", default: "registry.example/airlock", describe: "registry of airlock's image and the rooms' kernel images" })
      .option("airlock-tag", { type: "string", default: "latest", describe: "tag of airlock's own image (fabric, host link)" })
      .option("kbs-url", { type: "string", default: "https://airlock-kbs.airlock-system.svc:8443", describe: "the key broker as the room's host link reaches it" }),
  handler: async (argv) => {
    const args = argv as unknown as RenderArgs;
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(args.namespace)) throw new AirlockError("USAGE", `--namespace ${JSON.stringify(args.namespace)} is not a Kubernetes namespace name`, { hint: "lower-case letters, digits and '-', at most 63 characters" });
    const manifest = loadManifest(args.manifest);
    process.stderr.write("airlock: building or reusing the images (their measurements and command lines go into the objects)\n");
    const id = await roomIdentity(manifest);
    const objects = renderRoom(
      {
        manifest,
        digest: id.digest.toString("hex"),
        canonical: id.canonical,
        pins: { firewall: id.pins.firewall, sandbox: id.pins.sandbox },
        cmdlines: { firewall: id.images.firewall.info.cmdline, sandbox: id.images.sandbox.info.cmdline },
      },
      { namespace: args.namespace, registry: args.registry, airlockTag: args["airlock-tag"], kbsUrl: args["kbs-url"] },
    );
    if (!args.out) {
      process.stdout.write(toYaml(objects, args.manifest));
      return;
    }
    mkdirSync(args.out, { recursive: true });
    for (const [i, o] of objects.entries()) {
      const file = path.join(args.out, `${String(i).padStart(2, "0")}-${o.kind.toLowerCase()}-${o.name}.yaml`);
      writeFileSync(file, toYaml([o], args.manifest));
      process.stderr.write(`airlock: wrote ${file}\n`);
    }
  },
};

export const k8sCommand: AirlockCommand = {
  builder: (y: Argv) => y.command([render]).demandCommand(1),
  handler: () => {},
};
