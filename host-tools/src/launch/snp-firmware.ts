// The firmware of an `--tee snp` launch, chosen by the user (`--firmware PATH`, or AIRLOCK_SNP_OVMF)
// and never guessed: it must be an OVMF build carrying SEV metadata with an SNP_KERNEL_HASHES
// section (edk2's OvmfPkg/AmdSev build), since the plans boot -kernel with kernel-hashes=on. It is
// read once; the same bytes are checked, measured (the expected launch measurement) and hashed for
// the plan's printout, so what is measured is that very file.
import { createHash } from "node:crypto";
import { openSync, closeSync, fstatSync, readSync } from "node:fs";
import path from "node:path";
import { AirlockError, isErrnoException } from "../../../proto/src/errors.ts";
import { ovmfInfo, type OvmfInfo } from "../measure/index.ts";

export const SNP_FIRMWARE_ENV = "AIRLOCK_SNP_OVMF";
/** Far above any OVMF image (4 MiB today); a bound before the file is read whole. */
export const MAX_FIRMWARE_BYTES = 64 << 20;

export interface SnpFirmware {
  /** Absolute path, as QEMU's -bios gets it. */
  path: string;
  bytes: Buffer;
  sha256: string;
  info: OvmfInfo;
}

const hint = "choose an OVMF built from edk2's OvmfPkg/AmdSev/AmdSevX64.dsc (it carries SEV metadata with an SNP_KERNEL_HASHES section, for measured direct boot)";

/** The firmware the user chose: --firmware, else AIRLOCK_SNP_OVMF; undefined when neither is set. */
export function chosenSnpFirmware(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (option !== undefined && option !== "") return option;
  const fromEnv = env[SNP_FIRMWARE_ENV];
  return fromEnv === undefined || fromEnv === "" ? undefined : fromEnv;
}

/** Reads and checks an SNP firmware: FILE_UNREADABLE when it cannot be read, MEASURE when it is not SNP firmware (the launch cannot be measured from it). */
export function loadSnpFirmware(file: string): SnpFirmware {
  const abs = path.resolve(file);
  // QEMU splits option values on commas; -bios takes the path whole, but keep the rule of the plans.
  if (abs.includes(",")) throw new AirlockError("LAUNCH", `the firmware path ${JSON.stringify(abs)} contains a comma, which QEMU option syntax cannot carry`, { hint: "copy or link the firmware to a path without commas" });
  let bytes: Buffer;
  let fd: number | undefined;
  try {
    fd = openSync(abs, "r");
    const st = fstatSync(fd);
    if (!st.isFile()) throw new AirlockError("FILE_UNREADABLE", `the firmware ${abs} is not a regular file`, { hint });
    if (st.size > MAX_FIRMWARE_BYTES) throw new AirlockError("MEASURE", `the firmware ${abs} is ${st.size} bytes, too large to be an OVMF image (at most ${MAX_FIRMWARE_BYTES})`, { hint });
    bytes = Buffer.alloc(st.size);
    let off = 0;
    while (off < bytes.length) {
      const n = readSync(fd, bytes, off, bytes.length - off, off);
      if (n === 0) throw new AirlockError("FILE_UNREADABLE", `the firmware ${abs} shrank while it was read`);
      off += n;
    }
  } catch (err) {
    if (err instanceof AirlockError) throw err;
    const why = isErrnoException(err, "ENOENT") ? "does not exist" : `cannot be read (${(err as Error).message})`;
    throw new AirlockError("FILE_UNREADABLE", `the SNP firmware ${abs} ${why}`, { hint: "pass --firmware PATH (or set AIRLOCK_SNP_OVMF) to an AmdSev OVMF build", cause: err });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  // A malformed footer table or metadata is a MEASURE error naming what is wrong (ovmf.ts).
  const info: OvmfInfo = ovmfInfo(bytes, abs);
  if (!info.hasSevMetadata) {
    throw new AirlockError("MEASURE", `${abs}: the firmware carries no SEV metadata (no OVMF footer table entry dc886566-984a-4798-a75e-5585a7bf67cc), so it cannot launch an SEV-SNP guest`, { hint });
  }
  if (!info.hasKernelHashesSection || info.kernelHashesTableGpa === undefined) {
    throw new AirlockError("MEASURE", `${abs}: the firmware's SEV metadata has no SNP_KERNEL_HASHES section (or no SEV hash table entry), so QEMU cannot measure the guest's kernel, initrd and command line (kernel-hashes=on)`, { hint });
  }
  return { path: abs, bytes, sha256: createHash("sha256").update(bytes).digest("hex"), info };
}
