// The SNP launch measurement: what `airlock measure` prints, what the emulated PSP reports and what
// the launcher expects. This barrel is the public surface; the files behind it are private.
export { snpLaunchDigest, snpLaunchDigestOf, snpOvmfHash, DEFAULT_GUEST_FEATURES, MAX_VCPUS } from "./launch-digest.ts";
export type { SnpLaunchInputs, SnpLaunchDigest, ExplainEntry } from "./launch-digest.ts";
export { ovmfInfo, OVMF_GUIDS, SECTION_TYPES } from "./ovmf.ts";
export type { OvmfInfo, MetadataSection } from "./ovmf.ts";
export { hashKernelInputs, kernelHashesTable, cmdlineHash } from "./kernel-hashes.ts";
export type { KernelHashes, BlobSource } from "./kernel-hashes.ts";
export { VCPU_TYPES, vcpuSigByType, cpuSig } from "./vcpu-types.ts";
export type { VmmType } from "./vmsa.ts";
export { readImageDir, checkImageRecords, IMAGE_FORMAT } from "./image-dir.ts";
export type { ImageDir } from "./image-dir.ts";
