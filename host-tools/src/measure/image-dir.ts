// An airlock image directory as `airlock measure --image DIR` reads it (the images builder's
// `airlock-image/v1`): `vmlinuz`, `initrd.img`, `cmdline` (passed to -append byte for byte, so
// measured byte for byte) and `image.json`, which records each file's SHA-256 and may name the
// firmware (`ovmf`, relative to DIR) and launch defaults (`vcpus`, `vcpuType`, `guestFeatures`).
// The directory may come from elsewhere: fields are type-checked, and the files must match the
// digests image.json records, so a swapped initrd is reported rather than silently measured.
import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { AirlockError, isErrnoException } from "../../../proto/src/errors.ts";
import type { KernelHashes } from "./kernel-hashes.ts";

export const IMAGE_FORMAT = "airlock-image/v1";

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
  /** SHA-256 (hex) image.json records for each file, when it records one. */
  recorded: { kernel?: string; initrd?: string; cmdline?: string };
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
  const meta = (await exists(at("image.json"))) ? parseImageJson(await readFile(at("image.json"), "utf8"), at("image.json")) : { recorded: {} };
  const fileCmdline = (await exists(at("cmdline"))) ? await readFile(at("cmdline"), "utf8") : undefined;
  if (fileCmdline !== undefined && meta.cmdline !== undefined && fileCmdline !== meta.cmdline) {
    throw new AirlockError("MEASURE", `${dir}: the cmdline file and image.json's cmdline differ (${JSON.stringify(fileCmdline)} vs ${JSON.stringify(meta.cmdline)})`, { hint: "rebuild the image; one of them was edited" });
  }
  return {
    dir,
    kernelPath: at("vmlinuz"),
    initrdPath: (await exists(at("initrd.img"))) ? at("initrd.img") : undefined,
    append: fileCmdline ?? meta.cmdline ?? "",
    ovmfPath: meta.ovmf === undefined ? undefined : path.resolve(dir, meta.ovmf),
    vcpus: meta.vcpus,
    vcpuType: meta.vcpuType,
    guestFeatures: meta.guestFeatures,
    recorded: meta.recorded,
  };
}

/** Refuses an image whose kernel, initrd or command line differ from what image.json records. */
export function checkImageRecords(image: ImageDir, hashes: KernelHashes): void {
  const actual = { kernel: hashes.kernel.toString("hex"), initrd: hashes.initrd.toString("hex"), cmdline: createHash("sha256").update(image.append, "utf8").digest("hex") };
  for (const part of ["kernel", "initrd", "cmdline"] as const) {
    const want = image.recorded[part];
    if (want !== undefined && want !== actual[part]) {
      throw new AirlockError("MEASURE", `${image.dir}: the ${part} does not match image.json (SHA-256 ${actual[part]}, recorded ${want})`, { hint: "the image was modified after it was built; rebuild it or find out who changed it" });
    }
  }
}

interface ImageJson {
  cmdline?: string;
  ovmf?: string;
  vcpus?: number;
  vcpuType?: string;
  guestFeatures?: bigint;
  recorded: ImageDir["recorded"];
}

function parseImageJson(text: string, file: string): ImageJson {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new AirlockError("MEASURE", `${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new AirlockError("MEASURE", `${file} must hold a JSON object`);
  const o = raw as Record<string, unknown>;
  const field = (name: string, ok: boolean, expected: string): void => {
    if (o[name] !== undefined && !ok) throw new AirlockError("MEASURE", `${file}: field ${name} must be ${expected}, got ${JSON.stringify(o[name])}`);
  };
  field("format", o.format === IMAGE_FORMAT, JSON.stringify(IMAGE_FORMAT));
  field("cmdline", typeof o.cmdline === "string", "a string");
  field("ovmf", typeof o.ovmf === "string" && o.ovmf !== "", "a non-empty path");
  field("vcpus", Number.isInteger(o.vcpus) && (o.vcpus as number) >= 1, "a positive integer");
  field("vcpuType", typeof o.vcpuType === "string", "a string such as EPYC-Milan");
  field("guestFeatures", (typeof o.guestFeatures === "string" && /^(0x[0-9a-f]+|\d+)$/i.test(o.guestFeatures)) || (Number.isInteger(o.guestFeatures) && (o.guestFeatures as number) >= 0), "an integer or a hex string");
  field("files", typeof o.files === "object" && o.files !== null && !Array.isArray(o.files), "an object");

  const recorded: ImageDir["recorded"] = {};
  const files = (o.files ?? {}) as Record<string, unknown>;
  for (const part of ["kernel", "initrd", "cmdline"] as const) {
    const entry = files[part];
    if (entry === undefined) continue;
    const sha = typeof entry === "object" && entry !== null ? (entry as Record<string, unknown>).sha256 : undefined;
    if (typeof sha !== "string" || !/^[0-9a-f]{64}$/.test(sha)) throw new AirlockError("MEASURE", `${file}: files.${part}.sha256 must be 64 lower-case hex digits`);
    recorded[part] = sha;
  }
  return {
    ...(o.cmdline !== undefined && { cmdline: o.cmdline as string }),
    ...(o.ovmf !== undefined && { ovmf: o.ovmf as string }),
    ...(o.vcpus !== undefined && { vcpus: o.vcpus as number }),
    ...(o.vcpuType !== undefined && { vcpuType: o.vcpuType as string }),
    ...(o.guestFeatures !== undefined && { guestFeatures: BigInt(o.guestFeatures as string | number) }),
    recorded,
  };
}
