// Host-side attestation: the report verifier (AMD roots by default), AMD's shipped roots, and the
// emulated PSP used by `--tee emulated`.
export { ReportVerifier, assertVerified } from "./verify.ts";
export type { Evidence, Expectations, VerifyResult, VerifierOptions, CheckName } from "./verify.ts";
export { AMD_ROOTS } from "./verify.ts";
export { EmulatedPsp, servePspStream, listenPsp, emulatedLaunch, DEFAULT_TCB } from "./emulated-psp.ts";
export type { GuestLaunch, PspListener } from "./emulated-psp.ts";
