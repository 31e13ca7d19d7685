// The SNP launch digest as the PSP computes it during SNP_LAUNCH_UPDATE: for every page launched,
// digest = SHA-384(PAGE_INFO), where PAGE_INFO (SNP ABI, pub. 56860, "PAGE_INFO structure") chains
// the previous digest with the page's contents hash, type and GPA.
import { createHash } from "node:crypto";
import { AirlockError } from "../../../proto/src/errors.ts";
import { PAGE_SIZE } from "./ovmf.ts";

export const LD_SIZE = 48;
const PAGE_INFO_LEN = 0x70;
const ZEROS = Buffer.alloc(LD_SIZE);

export const PAGE_TYPES = {
  NORMAL: 0x1,
  VMSA: 0x2,
  ZERO: 0x3,
  UNMEASURED: 0x4,
  SECRETS: 0x5,
  CPUID: 0x6,
} as const;

export type PageType = (typeof PAGE_TYPES)[keyof typeof PAGE_TYPES];

/** VMSA pages are recorded at GPA (u64)-1, page-aligned with bits above 51 cleared. */
export const VMSA_GPA = 0xffff_ffff_f000;

export function sha384(data: Buffer): Buffer {
  return createHash("sha384").update(data).digest();
}

/** The 0x70-byte PAGE_INFO record. IMI and the VMPL1-3 permissions are always 0 for a launch. */
export function pageInfo(previous: Buffer, contents: Buffer, pageType: PageType, gpa: number): Buffer {
  if (previous.length !== LD_SIZE || contents.length !== LD_SIZE) throw new AirlockError("INTERNAL", "PAGE_INFO digests must be 48 bytes");
  if (!Number.isSafeInteger(gpa) || gpa < 0) throw new AirlockError("INTERNAL", `bad GPA ${gpa}`);
  const info = Buffer.alloc(PAGE_INFO_LEN);
  previous.copy(info, 0x00);
  contents.copy(info, 0x30);
  info.writeUInt16LE(PAGE_INFO_LEN, 0x60);
  info.writeUInt8(pageType, 0x62);
  // 0x63 IMI_PAGE, 0x64..0x66 VMPL3/2/1 permissions, 0x67 reserved: all zero.
  info.writeBigUInt64LE(BigInt(gpa), 0x68);
  return info;
}

/** Accumulates the launch digest page by page, in launch order. */
export class LaunchDigest {
  #ld: Buffer;
  #pages = 0;

  constructor(seed: Buffer = ZEROS) {
    if (seed.length !== LD_SIZE) throw new AirlockError("MEASURE", `a launch digest seed must be ${LD_SIZE} bytes, got ${seed.length}`);
    this.#ld = Buffer.from(seed);
  }

  /** The current digest (a copy). */
  get digest(): Buffer {
    return Buffer.from(this.#ld);
  }

  /** Number of PAGE_INFO records folded in so far. */
  get pages(): number {
    return this.#pages;
  }

  update(pageType: PageType, gpa: number, contents: Buffer): void {
    this.#ld = sha384(pageInfo(this.#ld, contents, pageType, gpa));
    this.#pages++;
  }

  normalPages(gpa: number, data: Buffer): void {
    if (data.length % PAGE_SIZE !== 0) throw new AirlockError("INTERNAL", `normal pages must be whole pages, got ${data.length} bytes`);
    for (let off = 0; off < data.length; off += PAGE_SIZE) this.update(PAGE_TYPES.NORMAL, gpa + off, sha384(data.subarray(off, off + PAGE_SIZE)));
  }

  zeroPages(gpa: number, length: number): void {
    if (length % PAGE_SIZE !== 0) throw new AirlockError("INTERNAL", `zero pages must be whole pages, got ${length} bytes`);
    for (let off = 0; off < length; off += PAGE_SIZE) this.update(PAGE_TYPES.ZERO, gpa + off, ZEROS);
  }

  unmeasuredPage(gpa: number): void {
    this.update(PAGE_TYPES.UNMEASURED, gpa, ZEROS);
  }

  secretsPage(gpa: number): void {
    this.update(PAGE_TYPES.SECRETS, gpa, ZEROS);
  }

  cpuidPage(gpa: number): void {
    this.update(PAGE_TYPES.CPUID, gpa, ZEROS);
  }

  /** A VMSA page given by its SHA-384 (callers hash each distinct VMSA once, not once per vCPU). */
  vmsaPageHash(pageHash: Buffer): void {
    this.update(PAGE_TYPES.VMSA, VMSA_GPA, pageHash);
  }
}
