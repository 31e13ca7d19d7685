// One coded error type for every airlock program. A user sees `message` (what was wrong, where)
// and `hint` (what to do); internal faults keep their `cause`. Codes are stable: scripts match them.

export const ERROR_CODES = {
  USAGE: "bad command-line usage",
  MANIFEST_INVALID: "the room manifest is malformed or fails validation",
  MANIFEST_SIGNATURE: "a required manifest signature is missing or does not verify",
  IMAGE_BUILD: "a boot image could not be built",
  IMAGE_MISSING: "a boot image or one of its inputs is missing",
  QMP_PROTOCOL: "QEMU's QMP link misbehaved",
  QMP_COMMAND: "QEMU refused a QMP command",
  QMP_CLOSED: "the QMP link closed",
  TIMEOUT: "an operation did not finish within its bound",
  LAUNCH: "a VM could not be launched or failed its pre-launch checks",
  PAIR_NOT_FOUND: "no VM pair with that name",
  PAIR_EXISTS: "a VM pair with that name is already running",
  PAIR_FAILED: "the VM pair stopped because one of its parts failed",
  ACCEL_UNAVAILABLE: "the requested accelerator does not work on this host",
  TEE_UNSUPPORTED: "the requested TEE cannot be launched with the local QEMU or host",
  FABRIC: "the vsock fabric failed",
  GUEST_PROTOCOL: "a guest sent malformed or hostile data",
  MEASURE: "the launch measurement could not be computed from these inputs",
  REPORT_INVALID: "an attestation report is malformed",
  REPORT_REJECTED: "an attestation report does not meet an expectation",
  CERT_INVALID: "a certificate is malformed or does not chain to the trusted root",
  KEY_RELEASE: "the key broker refused to release a key",
  CRYPTO: "data failed to decrypt or authenticate (truncated, tampered or the wrong key)",
  POLICY: "the room's policy forbids this",
  AUDIT_INVALID: "the audit trail does not verify",
  CONSENT: "governance did not consent",
  INTERNAL: "an internal fault in airlock",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * `airlock run`'s exit status: 0 when the run completed and the workload succeeded; the workload's
 * own status when it failed and the sandbox's scope lets the host see it (DOMAIN_OWNED or below);
 * otherwise one of these (README § How a run goes). summary.json says which case it was.
 */
export const RUN_EXIT = {
  /** The workload failed; its exact status is data above DOMAIN_OWNED (sealed in the console output). */
  workloadFailed: 64,
  /** The run did not complete: refused, past its deadline, or a part of the pair failed. */
  incomplete: 65,
} as const;

export interface AirlockErrorOptions {
  /** What the user should do about it. */
  hint?: string;
  cause?: unknown;
}

export class AirlockError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: AirlockErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "AirlockError";
    this.code = code;
    this.hint = options.hint;
  }

  /** Wraps anything thrown into an AirlockError, keeping AirlockErrors as they are. */
  static from(err: unknown, code: ErrorCode = "INTERNAL"): AirlockError {
    if (err instanceof AirlockError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new AirlockError(code, message, { cause: err });
  }

  /** The one-paragraph form a user sees on the terminal. */
  toUserString(): string {
    return `airlock: ${this.message} [${this.code}]${this.hint ? `\n  hint: ${this.hint}` : ""}`;
  }
}

export function isErrnoException(err: unknown, code?: string): err is NodeJS.ErrnoException {
  return err instanceof Error && "code" in err && (code === undefined || (err as NodeJS.ErrnoException).code === code);
}
