import path from "node:path";
import type { Argv } from "yargs";
import { loadManifest } from "../../../../proto/src/manifest/index.ts";
import { buildPairImages, exportImage } from "../../images/build.ts";
import { printResult, type AirlockCommand } from "../command.ts";
import { progressPrinter } from "../progress.ts";

interface BuildArgs {
  out?: string;
  manifest?: string;
  "kernel-deb"?: string;
  compression: "none" | "gzip";
  json: boolean;
}


const build: AirlockCommand = {
  command: "build",
  describe: "build the firewall and sandbox boot images (reproducible; cached when inputs are unchanged)",
  builder: (y: Argv) =>
    y
      .option("out", { type: "string", describe: "also copy the images into DIR/firewall and DIR/sandbox" })
      .option("manifest", { type: "string", describe: "room manifest whose workload bundle is baked into the sandbox image" })
      .option("kernel-deb", { type: "string", describe: "Debian linux-image-*-amd64 package (default: newest in /var/cache/airlock/debs)" })
      .option("compression", { choices: ["none", "gzip"] as const, default: "none" as const, describe: "initrd compression" })
      .option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const args = argv as unknown as BuildArgs;
    const print = progressPrinter("image ");
    const images = await buildPairImages({
      ...(args.manifest ? { workloadDir: loadManifest(args.manifest).workload.bundle } : {}),
      ...(args["kernel-deb"] ? { kernelDeb: args["kernel-deb"] } : {}),
      compression: args.compression,
      onProgress: (p) => print(p.image, p.step, p.fraction),
    });
    const result = Object.values(images).map((img) => ({
      name: img.info.name,
      dir: args.out ? path.resolve(exportImage(img, args.out)) : img.dir,
      cached: img.cached,
      kernel: img.info.files.kernel.sha256,
      initrd: img.info.files.initrd.sha256,
      cmdline: img.info.files.cmdline.sha256,
      key: img.info.key,
    }));
    printResult(args.json, result, () =>
      result
        .map((r) => `${r.name}  ${r.dir}${r.cached ? "  (cached)" : ""}\n  kernel  sha256:${r.kernel}\n  initrd  sha256:${r.initrd}\n  cmdline sha256:${r.cmdline}`)
        .join("\n"),
    );
  },
};

export const imagesCommand: AirlockCommand = {
  builder: (y: Argv) => y.command([build]).demandCommand(1),
  handler: () => {},
};
