// The verifier lives in proto/src/attestation/ because the guests need it too (each VM of the pair
// checks the other's report); host code may import it from here.
export { ReportVerifier, assertVerified } from "../../../proto/src/attestation/verify.ts";
export type { Evidence, Expectations, VerifyResult, VerifierOptions, CheckName } from "../../../proto/src/attestation/verify.ts";
export { AMD_ROOTS } from "../../../proto/src/attestation/amd-roots.ts";
