// Attestation pieces every airlock program shares: the SEV-SNP report codec and its verifier (each
// VM checks the other's report; the host checks both), the guest's report providers (configfs-tsm,
// emulated PSP) and the key broker's client.
export { parseReport, serializeReport, signedPart, decodePolicy, encodePolicy, decodeTcb, encodeTcb, productFromCpuid, reportToJson, REPORT_SIZE, SIGNED_SIZE, PRODUCTS } from "./report.ts";
export type { AttestationReport, GuestPolicy, TcbVersion, Product, KeyInfo } from "./report.ts";
export { ConfigfsTsmProvider, EmulatedPspProvider, parseCertTable, encodeCertTable, teeOf } from "./provider.ts";
export type { ReportProvider, ReportEvidence, ConfigfsTsmOptions, EmulatedProviderOptions, Tee } from "./provider.ts";
export { PSP_VSOCK_PORT } from "./psp-wire.ts";
export { ReportVerifier, assertVerified } from "./verify.ts";
export type { Evidence, Expectations, VerifyResult, VerifierOptions, CheckName } from "./verify.ts";
export { AMD_ROOTS } from "./amd-roots.ts";
export { requestKey } from "./kbs-client.ts";
export type { ReleasedKey, RequestKeyOptions } from "./kbs-client.ts";
export { reportDataFor, newX25519, wrapKey, unwrapKey } from "./kbs-wire.ts";
