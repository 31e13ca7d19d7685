// The SEV-SNP attestation report (AMD SEV-SNP Firmware ABI, "ATTESTATION_REPORT"): 1184 bytes,
// little-endian. One codec for the host (verifier, emulated PSP) and the guests (providers).
// Parsing is strict: a report is hostile input until its signature verifies, and even then a
// non-zero reserved field means firmware we have not reviewed, so we refuse it with the offset.
import { AirlockError } from "../errors.ts";

export const REPORT_SIZE = 0x4a0;
/** The signature covers bytes [0, SIGNED_SIZE). */
export const SIGNED_SIZE = 0x2a0;
export const SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1;
export const MIN_REPORT_VERSION = 2;
export const MAX_REPORT_VERSION = 5;

export type Product = "milan" | "genoa" | "turin";
export const PRODUCTS: readonly Product[] = ["milan", "genoa", "turin"];

export type SigningKey = "vcek" | "vlek" | "none";

export interface KeyInfo {
  authorKeyEn: boolean;
  maskChipKey: boolean;
  signingKey: SigningKey;
}

export interface FirmwareVersion {
  major: number;
  minor: number;
  build: number;
}

export interface AttestationReport {
  version: number;
  guestSvn: number;
  policy: bigint;
  familyId: Buffer; // 16
  imageId: Buffer; // 16
  vmpl: number;
  signatureAlgo: number;
  currentTcb: bigint;
  platformInfo: bigint;
  keyInfo: KeyInfo;
  reportData: Buffer; // 64
  measurement: Buffer; // 48
  hostData: Buffer; // 32
  idKeyDigest: Buffer; // 48
  authorKeyDigest: Buffer; // 48
  reportId: Buffer; // 32
  reportIdMa: Buffer; // 32
  reportedTcb: bigint;
  /** CPUID family/model/stepping of the chip (report version 3 and later). */
  cpuid?: { family: number; model: number; stepping: number };
  chipId: Buffer; // 64
  committedTcb: bigint;
  currentVersion: FirmwareVersion;
  committedVersion: FirmwareVersion;
  launchTcb: bigint;
  /** Verified mitigation vectors (Turin firmware, report version 4 and later). */
  launchMitVector?: bigint;
  currentMitVector?: bigint;
  /** r and s as stored: 72 bytes each, little-endian; only the low 48 bytes may be non-zero. */
  signature: { r: Buffer; s: Buffer };
}

// Field offsets (ABI table "ATTESTATION_REPORT Structure").
const OFF = {
  version: 0x000,
  guestSvn: 0x004,
  policy: 0x008,
  familyId: 0x010,
  imageId: 0x020,
  vmpl: 0x030,
  signatureAlgo: 0x034,
  currentTcb: 0x038,
  platformInfo: 0x040,
  keyInfo: 0x048,
  reportData: 0x050,
  measurement: 0x090,
  hostData: 0x0c0,
  idKeyDigest: 0x0e0,
  authorKeyDigest: 0x110,
  reportId: 0x140,
  reportIdMa: 0x160,
  reportedTcb: 0x180,
  cpuid: 0x188,
  chipId: 0x1a0,
  committedTcb: 0x1e0,
  currentVersion: 0x1e8,
  committedVersion: 0x1ec,
  launchTcb: 0x1f0,
  launchMitVector: 0x1f8,
  currentMitVector: 0x200,
  signature: 0x2a0,
} as const;

const SIG_COMPONENT = 72;
const P384_BYTES = 48;

function invalid(reason: string): AirlockError {
  return new AirlockError("REPORT_INVALID", `attestation report: ${reason}`, {
    hint: "the report is not a well-formed SEV-SNP ATTESTATION_REPORT (1184 bytes, versions 2 to 5)",
  });
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(3, "0")}`;
}

function mustBeZero(buf: Buffer, start: number, end: number, what: string): void {
  for (let i = start; i < end; i++) {
    if (buf[i] !== 0) throw invalid(`reserved byte at ${hex(i)} (${what}, ${hex(start)}..${hex(end - 1)}) is 0x${buf[i]!.toString(16)}, must be zero`);
  }
}

const SIGNING_KEYS: Record<number, SigningKey> = { 0: "vcek", 1: "vlek", 7: "none" };

/** Parses and strictly checks a raw report. Throws REPORT_INVALID naming the offending field. */
export function parseReport(raw: Uint8Array): AttestationReport {
  if (raw.length !== REPORT_SIZE) throw invalid(`size is ${raw.length} bytes, must be ${REPORT_SIZE}`);
  const b = Buffer.from(raw.buffer, raw.byteOffset, raw.length);
  const copy = (off: number, len: number): Buffer => Buffer.from(b.subarray(off, off + len));

  const version = b.readUInt32LE(OFF.version);
  if (version < MIN_REPORT_VERSION || version > MAX_REPORT_VERSION) {
    throw invalid(`version ${version} at 0x000 is not supported (supported: ${MIN_REPORT_VERSION} to ${MAX_REPORT_VERSION})`);
  }
  const policy = b.readBigUInt64LE(OFF.policy);
  checkPolicy(policy);
  const vmpl = b.readUInt32LE(OFF.vmpl);
  if (vmpl > 3) throw invalid(`vmpl ${vmpl} at 0x030 is out of range 0..3`);
  const signatureAlgo = b.readUInt32LE(OFF.signatureAlgo);
  if (signatureAlgo !== SIGNATURE_ALGO_ECDSA_P384_SHA384) {
    throw invalid(`signature_algo ${signatureAlgo} at 0x034 is unknown (1 = ECDSA P-384 with SHA-384)`);
  }
  const keyInfoRaw = b.readUInt32LE(OFF.keyInfo);
  if (keyInfoRaw & ~0x1f) throw invalid(`key_info 0x${keyInfoRaw.toString(16)} at 0x048 has reserved bits 31:5 set`);
  const signingKey = SIGNING_KEYS[(keyInfoRaw >> 2) & 7];
  if (signingKey === undefined) throw invalid(`key_info signing key ${(keyInfoRaw >> 2) & 7} at 0x048 is reserved (0 VCEK, 1 VLEK, 7 none)`);
  mustBeZero(b, 0x04c, 0x050, "after key_info");

  let cpuid: AttestationReport["cpuid"];
  if (version >= 3) {
    cpuid = { family: b[OFF.cpuid]!, model: b[OFF.cpuid + 1]!, stepping: b[OFF.cpuid + 2]! };
    mustBeZero(b, 0x18b, 0x1a0, "after cpuid");
  } else {
    mustBeZero(b, 0x188, 0x1a0, "after reported_tcb");
  }
  mustBeZero(b, 0x1eb, 0x1ec, "after current version");
  mustBeZero(b, 0x1ef, 0x1f0, "after committed version");
  let launchMitVector: bigint | undefined;
  let currentMitVector: bigint | undefined;
  if (version >= 4) {
    // Version 5 defines the mitigation vectors; Turin firmware is seen filling them in version 4
    // reports too, so both versions read them rather than refuse a genuine report.
    launchMitVector = b.readBigUInt64LE(OFF.launchMitVector);
    currentMitVector = b.readBigUInt64LE(OFF.currentMitVector);
    mustBeZero(b, 0x208, SIGNED_SIZE, "after current_mit_vector");
  } else {
    mustBeZero(b, 0x1f8, SIGNED_SIZE, "after launch_tcb");
  }
  const r = copy(OFF.signature, SIG_COMPONENT);
  const s = copy(OFF.signature + SIG_COMPONENT, SIG_COMPONENT);
  mustBeZero(r, P384_BYTES, SIG_COMPONENT, "signature r high bytes");
  mustBeZero(s, P384_BYTES, SIG_COMPONENT, "signature s high bytes");
  mustBeZero(b, OFF.signature + 2 * SIG_COMPONENT, REPORT_SIZE, "after signature");

  const fw = (off: number): FirmwareVersion => ({ build: b[off]!, minor: b[off + 1]!, major: b[off + 2]! });
  const report: AttestationReport = {
    version,
    guestSvn: b.readUInt32LE(OFF.guestSvn),
    policy,
    familyId: copy(OFF.familyId, 16),
    imageId: copy(OFF.imageId, 16),
    vmpl,
    signatureAlgo,
    currentTcb: b.readBigUInt64LE(OFF.currentTcb),
    platformInfo: b.readBigUInt64LE(OFF.platformInfo),
    keyInfo: { authorKeyEn: (keyInfoRaw & 1) !== 0, maskChipKey: (keyInfoRaw & 2) !== 0, signingKey },
    reportData: copy(OFF.reportData, 64),
    measurement: copy(OFF.measurement, 48),
    hostData: copy(OFF.hostData, 32),
    idKeyDigest: copy(OFF.idKeyDigest, 48),
    authorKeyDigest: copy(OFF.authorKeyDigest, 48),
    reportId: copy(OFF.reportId, 32),
    reportIdMa: copy(OFF.reportIdMa, 32),
    reportedTcb: b.readBigUInt64LE(OFF.reportedTcb),
    chipId: copy(OFF.chipId, 64),
    committedTcb: b.readBigUInt64LE(OFF.committedTcb),
    currentVersion: fw(OFF.currentVersion),
    committedVersion: fw(OFF.committedVersion),
    launchTcb: b.readBigUInt64LE(OFF.launchTcb),
    signature: { r, s },
  };
  if (cpuid) report.cpuid = cpuid;
  if (launchMitVector !== undefined) report.launchMitVector = launchMitVector;
  if (currentMitVector !== undefined) report.currentMitVector = currentMitVector;
  return report;
}

function put(out: Buffer, off: number, value: Buffer, len: number, name: string): void {
  if (value.length !== len) throw new AirlockError("INTERNAL", `report field ${name} must be ${len} bytes, got ${value.length}`);
  value.copy(out, off);
}

/** Serializes a report; reserved areas are written as zeros. parseReport(serializeReport(r)) equals r. */
export function serializeReport(r: AttestationReport): Buffer {
  const out = Buffer.alloc(REPORT_SIZE);
  out.writeUInt32LE(r.version, OFF.version);
  out.writeUInt32LE(r.guestSvn, OFF.guestSvn);
  out.writeBigUInt64LE(r.policy, OFF.policy);
  put(out, OFF.familyId, r.familyId, 16, "family_id");
  put(out, OFF.imageId, r.imageId, 16, "image_id");
  out.writeUInt32LE(r.vmpl, OFF.vmpl);
  out.writeUInt32LE(r.signatureAlgo, OFF.signatureAlgo);
  out.writeBigUInt64LE(r.currentTcb, OFF.currentTcb);
  out.writeBigUInt64LE(r.platformInfo, OFF.platformInfo);
  const keyCode = Number(Object.entries(SIGNING_KEYS).find(([, v]) => v === r.keyInfo.signingKey)![0]);
  out.writeUInt32LE((r.keyInfo.authorKeyEn ? 1 : 0) | (r.keyInfo.maskChipKey ? 2 : 0) | (keyCode << 2), OFF.keyInfo);
  put(out, OFF.reportData, r.reportData, 64, "report_data");
  put(out, OFF.measurement, r.measurement, 48, "measurement");
  put(out, OFF.hostData, r.hostData, 32, "host_data");
  put(out, OFF.idKeyDigest, r.idKeyDigest, 48, "id_key_digest");
  put(out, OFF.authorKeyDigest, r.authorKeyDigest, 48, "author_key_digest");
  put(out, OFF.reportId, r.reportId, 32, "report_id");
  put(out, OFF.reportIdMa, r.reportIdMa, 32, "report_id_ma");
  out.writeBigUInt64LE(r.reportedTcb, OFF.reportedTcb);
  if (r.version >= 3 && r.cpuid) {
    out[OFF.cpuid] = r.cpuid.family;
    out[OFF.cpuid + 1] = r.cpuid.model;
    out[OFF.cpuid + 2] = r.cpuid.stepping;
  }
  put(out, OFF.chipId, r.chipId, 64, "chip_id");
  out.writeBigUInt64LE(r.committedTcb, OFF.committedTcb);
  for (const [off, v] of [[OFF.currentVersion, r.currentVersion], [OFF.committedVersion, r.committedVersion]] as const) {
    out[off] = v.build;
    out[off + 1] = v.minor;
    out[off + 2] = v.major;
  }
  out.writeBigUInt64LE(r.launchTcb, OFF.launchTcb);
  if (r.version >= 4) {
    out.writeBigUInt64LE(r.launchMitVector ?? 0n, OFF.launchMitVector);
    out.writeBigUInt64LE(r.currentMitVector ?? 0n, OFF.currentMitVector);
  }
  put(out, OFF.signature, r.signature.r, SIG_COMPONENT, "signature r");
  put(out, OFF.signature + SIG_COMPONENT, r.signature.s, SIG_COMPONENT, "signature s");
  return out;
}

/** The bytes the signature covers. */
export function signedPart(raw: Uint8Array): Buffer {
  return Buffer.from(raw.buffer, raw.byteOffset, SIGNED_SIZE);
}

// ---- Guest policy (offset 0x008) ----

export const POLICY_BITS = {
  smt: 16n,
  reserved1: 17n, // must be one
  migrateMa: 18n,
  debug: 19n,
  singleSocket: 20n,
  cxlAllow: 21n,
  memAes256Xts: 22n,
  raplDis: 23n,
  ciphertextHiding: 24n,
  pageSwapDisable: 25n,
} as const;
const POLICY_KNOWN_MASK = (1n << 26n) - 1n;

export interface GuestPolicy {
  abiMinor: number;
  abiMajor: number;
  smt: boolean;
  migrateMa: boolean;
  debug: boolean;
  singleSocket: boolean;
  cxlAllow: boolean;
  memAes256Xts: boolean;
  raplDis: boolean;
  ciphertextHiding: boolean;
  pageSwapDisable: boolean;
}

function checkPolicy(policy: bigint): void {
  if (!(policy & (1n << POLICY_BITS.reserved1))) throw invalid(`policy 0x${policy.toString(16)} at 0x008: bit 17 must be one`);
  if (policy & ~POLICY_KNOWN_MASK) throw invalid(`policy 0x${policy.toString(16)} at 0x008 has reserved bits 63:26 set`);
}

export function decodePolicy(policy: bigint): GuestPolicy {
  const bit = (n: bigint): boolean => (policy & (1n << n)) !== 0n;
  return {
    abiMinor: Number(policy & 0xffn),
    abiMajor: Number((policy >> 8n) & 0xffn),
    smt: bit(POLICY_BITS.smt),
    migrateMa: bit(POLICY_BITS.migrateMa),
    debug: bit(POLICY_BITS.debug),
    singleSocket: bit(POLICY_BITS.singleSocket),
    cxlAllow: bit(POLICY_BITS.cxlAllow),
    memAes256Xts: bit(POLICY_BITS.memAes256Xts),
    raplDis: bit(POLICY_BITS.raplDis),
    ciphertextHiding: bit(POLICY_BITS.ciphertextHiding),
    pageSwapDisable: bit(POLICY_BITS.pageSwapDisable),
  };
}

/** Builds a policy value: bit 17 is always set. */
export function encodePolicy(p: Partial<GuestPolicy>): bigint {
  let v = (1n << POLICY_BITS.reserved1) | BigInt(p.abiMinor ?? 0) | (BigInt(p.abiMajor ?? 0) << 8n);
  for (const name of Object.keys(POLICY_BITS) as (keyof typeof POLICY_BITS)[]) {
    if (name !== "reserved1" && p[name]) v |= 1n << POLICY_BITS[name];
  }
  return v;
}

// ---- TCB_VERSION (8 bytes; layout depends on the product) ----

export interface TcbVersion {
  /** Turin only. */
  fmc?: number;
  bootloader: number;
  tee: number;
  snp: number;
  microcode: number;
}

/** Milan/Genoa: [bootloader, tee, 0,0,0,0, snp, microcode]; Turin: [fmc, bootloader, tee, snp, 0,0,0, microcode]. */
export function decodeTcb(raw: bigint, product: Product): TcbVersion {
  const byte = (i: number): number => Number((raw >> BigInt(8 * i)) & 0xffn);
  if (product === "turin") return { fmc: byte(0), bootloader: byte(1), tee: byte(2), snp: byte(3), microcode: byte(7) };
  return { bootloader: byte(0), tee: byte(1), snp: byte(6), microcode: byte(7) };
}

export function encodeTcb(t: TcbVersion, product: Product): bigint {
  const bytes = new Array<number>(8).fill(0);
  if (product === "turin") {
    [bytes[0], bytes[1], bytes[2], bytes[3], bytes[7]] = [t.fmc ?? 0, t.bootloader, t.tee, t.snp, t.microcode];
  } else {
    [bytes[0], bytes[1], bytes[6], bytes[7]] = [t.bootloader, t.tee, t.snp, t.microcode];
  }
  return bytes.reduce((acc, v, i) => acc | (BigInt(v & 0xff) << BigInt(8 * i)), 0n);
}

/** Non-zero reserved TCB bytes for this product, if any (a VCEK never certifies those). */
export function tcbReservedBytesSet(raw: bigint, product: Product): boolean {
  const mask = product === "turin" ? 0x00ffffff00000000n : 0x0000ffffffff0000n;
  return (raw & mask) !== 0n;
}

/** The product a v3+ report's CPUID says it came from, if known. */
export function productFromCpuid(cpuid: AttestationReport["cpuid"]): Product | undefined {
  if (!cpuid) return undefined;
  if (cpuid.family === 0x19) {
    if (cpuid.model <= 0x0f) return "milan";
    if ((cpuid.model >= 0x10 && cpuid.model <= 0x1f) || (cpuid.model >= 0xa0 && cpuid.model <= 0xaf)) return "genoa";
  }
  if (cpuid.family === 0x1a && cpuid.model <= 0x1f) return "turin";
  return undefined;
}

/** A report as plain JSON (hex strings, TCBs decoded for the given product). */
export function reportToJson(r: AttestationReport, product?: Product): Record<string, unknown> {
  const tcb = (v: bigint): unknown => (product ? { raw: `0x${v.toString(16).padStart(16, "0")}`, ...decodeTcb(v, product) } : `0x${v.toString(16).padStart(16, "0")}`);
  return {
    version: r.version,
    guestSvn: r.guestSvn,
    policy: { raw: `0x${r.policy.toString(16)}`, ...decodePolicy(r.policy) },
    familyId: r.familyId.toString("hex"),
    imageId: r.imageId.toString("hex"),
    vmpl: r.vmpl,
    signatureAlgo: r.signatureAlgo,
    currentTcb: tcb(r.currentTcb),
    platformInfo: `0x${r.platformInfo.toString(16)}`,
    keyInfo: r.keyInfo,
    reportData: r.reportData.toString("hex"),
    measurement: r.measurement.toString("hex"),
    hostData: r.hostData.toString("hex"),
    idKeyDigest: r.idKeyDigest.toString("hex"),
    authorKeyDigest: r.authorKeyDigest.toString("hex"),
    reportId: r.reportId.toString("hex"),
    reportIdMa: r.reportIdMa.toString("hex"),
    reportedTcb: tcb(r.reportedTcb),
    cpuid: r.cpuid,
    chipId: r.chipId.toString("hex"),
    committedTcb: tcb(r.committedTcb),
    currentVersion: r.currentVersion,
    committedVersion: r.committedVersion,
    launchTcb: tcb(r.launchTcb),
    launchMitVector: r.launchMitVector === undefined ? undefined : `0x${r.launchMitVector.toString(16)}`,
    currentMitVector: r.currentMitVector === undefined ? undefined : `0x${r.currentMitVector.toString(16)}`,
  };
}
