// `airlock measure`: the SNP launch digest, with sev-snp-measure's options and output (`--mode snp`),
// plus --image DIR for an airlock image, --explain for the measured components and --json.
import { readFile, stat } from "node:fs/promises";
import { AirlockError } from "../../../../proto/src/errors.ts";
import { checkImageRecords, cpuSig, hashKernelInputs, readImageDir, snpLaunchDigest, snpOvmfHash, type ExplainEntry, type KernelHashes, type VmmType } from "../../measure/index.ts";
import type { InferredOptionTypes } from "yargs";
import { commandExitStatus, printResult, type AirlockCommand } from "../command.ts";
import { parsePlainOptions, type PlainOption } from "../plain-options.ts";

/**
 * measure's options, declared once: yargs builds the command from them (measureCommand, and so
 * `airlock measure --help`), and main.ts reads plain command lines with them without yargs
 * (measureWithPlainOptions).
 */
export const MEASURE_OPTIONS = {
  mode: { type: "string", default: "snp", choices: ["snp", "snp:ovmf-hash"], describe: "snp: the launch digest; snp:ovmf-hash: the digest of the firmware pages alone" },
  ovmf: { type: "string", describe: "OVMF firmware image (or image.json's ovmf with --image)" },
  vcpus: { type: "number", describe: "number of guest vCPUs" },
  "vcpu-type": { type: "string", describe: "QEMU CPU model, e.g. EPYC-v4, EPYC-Milan, EPYC-Genoa, EPYC-Turin" },
  "vcpu-sig": { type: "string", describe: "CPUID signature, e.g. 0xa00f11" },
  "vcpu-family": { type: "number" },
  "vcpu-model": { type: "number" },
  "vcpu-stepping": { type: "number" },
  kernel: { type: "string", describe: "kernel measured through OVMF's kernel-hashes table (QEMU kernel-hashes=on)" },
  initrd: { type: "string", describe: "initrd (with --kernel)" },
  append: { type: "string", describe: "kernel command line (with --kernel)" },
  "guest-features": { type: "string", describe: "SEV_FEATURES the guest kernel enables (default 0x1, SNPActive)" },
  "vmm-type": { type: "string", default: "qemu", describe: "qemu or ec2" },
  "output-format": { choices: ["hex", "base64"], default: "hex" },
  "snp-ovmf-hash": { type: "string", describe: "precomputed digest of the firmware pages (hex), as from --mode snp:ovmf-hash" },
  image: { type: "string", describe: "an airlock image directory (vmlinuz, initrd.img, cmdline, image.json)" },
  explain: { type: "boolean", default: false, describe: "list every measured component with its own hash" },
  json: { type: "boolean", default: false },
} as const satisfies Record<string, PlainOption>;

type MeasureArgs = InferredOptionTypes<typeof MEASURE_OPTIONS>;

// OVMF images are a few MiB; anything this large is not a firmware image.
const MAX_FIRMWARE_BYTES = 256 << 20;

/** Integers as sev-snp-measure takes them (Python's int(s, 0)): decimal, 0x hex, 0o octal, 0b binary. */
function parseInteger(text: string, option: string, max: bigint): bigint {
  const t = text.trim();
  if (!/^(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|[0-9]+)$/.test(t)) throw new AirlockError("USAGE", `--${option} ${JSON.stringify(text)} is not an integer`, { hint: "write it in decimal or with a 0x prefix" });
  const v = BigInt(t);
  if (v > max) throw new AirlockError("USAGE", `--${option} 0x${v.toString(16)} is larger than 0x${max.toString(16)}`);
  return v;
}

async function readFirmware(file: string): Promise<Buffer> {
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new AirlockError("USAGE", `--ovmf ${file} is not a regular file`);
    if (st.size > MAX_FIRMWARE_BYTES) throw new AirlockError("MEASURE", `--ovmf ${file} is ${st.size} bytes, too large to be an OVMF image`);
    return await readFile(file);
  } catch (err) {
    if (err instanceof AirlockError) throw err;
    throw new AirlockError("USAGE", `cannot read the firmware ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err, hint: "check the --ovmf path" });
  }
}

function formatExplain(components: ExplainEntry[]): string {
  return components
    .map((c, i) => {
      const where = c.gpa === undefined ? "" : ` at ${c.gpa}`;
      const pages = c.pages === 0 ? "" : ` (${c.pages} page${c.pages === 1 ? "" : "s"}${where})`;
      return [`${String(i + 1).padStart(2)}. ${c.component}${pages}`, `    ${c.detail}`, ...(c.hash ? [`    hash   ${c.hash}`] : []), `    digest ${c.digestAfter}`].join("\n");
    })
    .join("\n");
}

export const measureCommand: AirlockCommand = {
  builder: (y) => y.options(MEASURE_OPTIONS),
  // yargs types argv loosely; the options above give it this shape.
  handler: (argv) => runMeasure(argv as unknown as MeasureArgs),
};

/**
 * `airlock measure ARGS` when ARGS are plain options (cli/plain-options.ts), parsed without
 * loading yargs: its exit status; undefined for any other command line, which yargs then parses.
 */
export async function measureWithPlainOptions(args: readonly string[]): Promise<number | undefined> {
  const argv = parsePlainOptions(MEASURE_OPTIONS, args);
  return argv === undefined ? undefined : commandExitStatus(() => runMeasure(argv));
}

async function runMeasure(argv: MeasureArgs): Promise<void> {
  const image = argv.image === undefined ? undefined : await readImageDir(argv.image);
  if (image !== undefined && (argv.kernel !== undefined || argv.initrd !== undefined || argv.append !== undefined)) {
    throw new AirlockError("USAGE", "--image already names the kernel, initrd and command line", { hint: "drop --kernel/--initrd/--append, or drop --image" });
  }
  const ovmfPath = argv.ovmf ?? image?.ovmfPath;
  if (ovmfPath === undefined) throw new AirlockError("USAGE", "no firmware given", { hint: image ? `pass --ovmf (${image.dir}/image.json has no ovmf field)` : "pass --ovmf PATH" });
  const ovmf = await readFirmware(ovmfPath);

  if (argv.mode === "snp:ovmf-hash") {
    const digest = snpOvmfHash(ovmf, ovmfPath);
    printResult(argv.json, { mode: argv.mode, ovmf: ovmfPath, digest: digest.toString("hex") }, () => digest.toString("hex"));
    return;
  }

  // As sev-snp-measure: an empty --kernel means none, and an empty --initrd/--append without a kernel is ignored.
  const kernel = argv.kernel || image?.kernelPath || undefined;
  if (kernel === undefined && (argv.initrd || argv.append)) {
    throw new AirlockError("USAGE", `--${argv.initrd ? "initrd" : "append"} needs --kernel`, { hint: "the initrd and command line are only measured together with a kernel" });
  }
  const initrd = kernel === undefined ? undefined : (argv.initrd ?? image?.initrdPath);
  const append = kernel === undefined ? undefined : (argv.append ?? image?.append);
  const vcpus = argv.vcpus ?? image?.vcpus;
  if (vcpus === undefined) throw new AirlockError("USAGE", "missing --vcpus N");
  const vmmType = argv["vmm-type"].toLowerCase();
  if (vmmType !== "qemu" && vmmType !== "ec2") throw new AirlockError("USAGE", `unknown --vmm-type ${JSON.stringify(argv["vmm-type"])}`, { hint: "use qemu or ec2" });

  const fms = [argv["vcpu-family"], argv["vcpu-model"], argv["vcpu-stepping"]];
  const given = [argv["vcpu-type"] !== undefined, argv["vcpu-sig"] !== undefined, fms.some((v) => v !== undefined)].filter(Boolean).length;
  if (given > 1) throw new AirlockError("USAGE", "give only one of --vcpu-type, --vcpu-sig and --vcpu-family/--vcpu-model/--vcpu-stepping");
  let vcpuSig: number | undefined;
  if (argv["vcpu-sig"] !== undefined) vcpuSig = Number(parseInteger(argv["vcpu-sig"], "vcpu-sig", 0xffff_ffffn));
  if (fms.some((v) => v !== undefined)) {
    if (fms.some((v) => v === undefined)) throw new AirlockError("USAGE", "--vcpu-family, --vcpu-model and --vcpu-stepping go together");
    vcpuSig = cpuSig(fms[0]!, fms[1]!, fms[2]!);
  }
  const vcpuType = vcpuSig === undefined ? (argv["vcpu-type"] ?? image?.vcpuType) : undefined;
  const guestFeatures = argv["guest-features"] !== undefined ? parseInteger(argv["guest-features"], "guest-features", 0xffff_ffff_ffff_ffffn) : image?.guestFeatures;
  let ovmfHash: Buffer | undefined;
  if (argv["snp-ovmf-hash"] !== undefined) {
    if (!/^[0-9a-fA-F]{96}$/.test(argv["snp-ovmf-hash"])) throw new AirlockError("USAGE", "--snp-ovmf-hash must be 96 hex digits (a SHA-384 launch digest)");
    ovmfHash = Buffer.from(argv["snp-ovmf-hash"], "hex");
  }

  // An image's files must be the ones its image.json records; they are hashed once for both uses.
  let kernelHashes: KernelHashes | undefined;
  if (image !== undefined) {
    kernelHashes = await hashKernelInputs({ kernel: image.kernelPath, initrd: image.initrdPath, append: image.append });
    checkImageRecords(image, kernelHashes);
  }

  const result = await snpLaunchDigest({
    ovmf,
    ovmfSource: ovmfPath,
    vcpus,
    ...(vcpuType !== undefined && { vcpuType }),
    ...(vcpuSig !== undefined && { vcpuSig }),
    ...(kernelHashes !== undefined ? { kernelHashes } : kernel !== undefined && { kernel }),
    ...(initrd !== undefined && { initrd }),
    ...(append !== undefined && { append }),
    ...(guestFeatures !== undefined && { guestFeatures }),
    ...(ovmfHash !== undefined && { ovmfHash }),
    vmmType: vmmType as VmmType,
  });
  const out = argv["output-format"] === "base64" ? result.digest.toString("base64") : result.digest.toString("hex");
  printResult(
    argv.json,
    {
      mode: "snp",
      digest: result.digest.toString("hex"),
      ...(argv["output-format"] === "base64" && { digestBase64: out }),
      inputs: { ovmf: ovmfPath, vcpus, vcpuType, vcpuSig, kernel, initrd, append, guestFeatures: guestFeatures === undefined ? undefined : `0x${guestFeatures.toString(16)}`, vmmType },
      ...(argv.explain && { components: result.components }),
    },
    () => (argv.explain ? `${formatExplain(result.components)}\n${out}` : out),
  );
}
