// An airlock image directory as `airlock measure --image DIR` reads it: `vmlinuz`, `initrd.img`,
// `cmdline` (the kernel command line; trailing newlines are not part of it) and `image.json`, whose
// optional fields name the firmware (`ovmf`, relative to DIR) and launch defaults (`vcpus`,
// `vcpuType`, `guestFeatures`). The directory is input from elsewhere: each field is type-checked.
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { AirlockError, isErrnoException } from "../../../proto/src/errors.ts";

export interface ImageDir {
  dir: string;
  kernelPath: string;
  /** Absent when the image has no initrd.img. */
  initrdPath: string | undefined;
  append: string;
  ovmfPath: string | undefined;
  vcpus: number | undefined;
  vcpuType: string | undefined;
  guestFeatures: bigint | undefined;
}

async function exists(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch (err) {
    if (isErrnoException(err, "ENOENT")) return false;
    throw err;
  }
}

export async function readImageDir(dir: string): Promise<ImageDir> {
  const at = (name: string): string => path.join(dir, name);
  if (!(await exists(at("vmlinuz")))) {
    throw new AirlockError("IMAGE_MISSING", `${dir} is not an airlock image: it has no vmlinuz`, { hint: "build one with `airlock images build`, or pass --ovmf/--kernel/--initrd/--append yourself" });
  }
  const append = (await exists(at("cmdline"))) ? (await readFile(at("cmdline"), "utf8")).replace(/[\r\n]+$/, "") : "";
  const meta = (await exists(at("image.json"))) ? parseImageJson(await readFile(at("image.json"), "utf8"), at("image.json")) : {};
  return {
    dir,
    kernelPath: at("vmlinuz"),
    initrdPath: (await exists(at("initrd.img"))) ? at("initrd.img") : undefined,
    append,
    ovmfPath: meta.ovmf === undefined ? undefined : path.resolve(dir, meta.ovmf),
    vcpus: meta.vcpus,
    vcpuType: meta.vcpuType,
    guestFeatures: meta.guestFeatures,
  };
}

function parseImageJson(text: string, file: string): { ovmf?: string; vcpus?: number; vcpuType?: string; guestFeatures?: bigint } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new AirlockError("IMAGE_MISSING", `${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new AirlockError("IMAGE_MISSING", `${file} must hold a JSON object`);
  const o = raw as Record<string, unknown>;
  const field = (name: string, ok: boolean, expected: string): void => {
    if (o[name] !== undefined && !ok) throw new AirlockError("IMAGE_MISSING", `${file}: field ${name} must be ${expected}, got ${JSON.stringify(o[name])}`);
  };
  field("ovmf", typeof o.ovmf === "string" && o.ovmf !== "", "a non-empty path");
  field("vcpus", Number.isInteger(o.vcpus) && (o.vcpus as number) >= 1, "a positive integer");
  field("vcpuType", typeof o.vcpuType === "string", "a string such as EPYC-Milan");
  field("guestFeatures", (typeof o.guestFeatures === "string" && /^(0x[0-9a-f]+|\d+)$/i.test(o.guestFeatures)) || (Number.isInteger(o.guestFeatures) && (o.guestFeatures as number) >= 0), "an integer or a hex string");
  return {
    ...(o.ovmf !== undefined && { ovmf: o.ovmf as string }),
    ...(o.vcpus !== undefined && { vcpus: o.vcpus as number }),
    ...(o.vcpuType !== undefined && { vcpuType: o.vcpuType as string }),
    ...(o.guestFeatures !== undefined && { guestFeatures: BigInt(o.guestFeatures as string | number) }),
  };
}
