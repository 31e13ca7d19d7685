// One coded error type for every airlock program. A user sees `message` (what was wrong, where)
// and `hint` (what to do); internal faults keep their `cause`. Codes are stable: scripts match them.
//
// Each code is declared once, with the exit status the CLI returns for it (README § Using it: 2 bad
// input or a refusal, 1 a failed check, 3 an internal fault) and its one-line summary. README.md
// lists them in a table that proto/src/errors.test.ts keeps in step with this one. The codes as
// they cross the wire are proto/airlock/v1/errors.proto's ErrorCode: the `satisfies` below makes
// the compiler refuse a code missing from either list, and WIRE_NUMBERS one numbered otherwise.
// The generated enum is imported for its type alone: its module boots @bufbuild/protobuf's
// descriptors when evaluated, which every command (and `airlock --help`) would otherwise pay for.
import type { ErrorCode as WireErrorCode } from "../gen/airlock/v1/errors_pb.ts";

export const ERROR_CODES = {
  USAGE: { exit: 2, summary: "bad command-line usage" },
  MANIFEST_INVALID: { exit: 2, summary: "the room manifest is malformed or fails validation" },
  MANIFEST_SIGNATURE: { exit: 1, summary: "a required manifest signature is missing or does not verify" },
  KEY_INVALID: { exit: 2, summary: "a key, identity or recipient is missing, malformed, exposed or of a kind that cannot be used here" },
  KEY_POLICY: { exit: 2, summary: "a key broker entry or grant (key id, key, release policy, scope, input) is malformed or refused; a key is never re-bound" },
  FILE_UNREADABLE: { exit: 2, summary: "a file named to airlock is missing, cannot be read, or changed while it was read" },
  CONFLICT: { exit: 2, summary: "something already on this host is in the way (an existing file, or state of another kind)" },
  IMAGE_BUILD: { exit: 2, summary: "a boot image could not be built" },
  IMAGE_MISSING: { exit: 2, summary: "a boot image or one of its inputs is missing" },
  QMP_PROTOCOL: { exit: 2, summary: "QEMU's QMP link misbehaved" },
  QMP_COMMAND: { exit: 2, summary: "QEMU refused a QMP command" },
  QMP_CLOSED: { exit: 2, summary: "the QMP link closed" },
  TIMEOUT: { exit: 2, summary: "an operation did not finish within its bound" },
  LAUNCH: { exit: 2, summary: "a VM could not be launched or failed its pre-launch checks" },
  PAIR_NOT_FOUND: { exit: 2, summary: "no VM pair with that name" },
  PAIR_EXISTS: { exit: 2, summary: "a VM pair with that name is already running" },
  PAIR_FAILED: { exit: 1, summary: "the VM pair stopped because one of its parts failed" },
  PAIR_NAME: { exit: 2, summary: "a VM pair name is not valid" },
  ACCEL_UNAVAILABLE: { exit: 2, summary: "the requested accelerator does not work on this host" },
  TEE_UNSUPPORTED: { exit: 2, summary: "the requested TEE cannot be launched with the local QEMU or host" },
  FABRIC: { exit: 2, summary: "the vsock fabric failed" },
  FABRIC_CONFIG: { exit: 2, summary: "the vsock fabric's VM list is malformed or inconsistent" },
  GUEST_PROTOCOL: { exit: 2, summary: "a guest sent malformed or hostile data" },
  MEASURE: { exit: 2, summary: "the launch measurement could not be computed from these inputs" },
  REPORT_INVALID: { exit: 2, summary: "an attestation report is malformed" },
  REPORT_REJECTED: { exit: 1, summary: "an attestation report does not meet an expectation" },
  CERT_INVALID: { exit: 2, summary: "a certificate is malformed or does not chain to the trusted root" },
  KEY_RELEASE: { exit: 2, summary: "the key broker refused to release a key" },
  LISTEN: { exit: 2, summary: "cannot listen on the address given (in use, not permitted, or not an address of this host)" },
  HOST_KEY: { exit: 1, summary: "a remote host's SSH key is unknown, changed or revoked (it is never trusted on first use)" },
  REMOTE: { exit: 2, summary: "a remote host is misnamed or misconfigured (--host, hosts.yaml), unreachable, refused the login, or runs another airlock (or none)" },
  CRYPTO: { exit: 2, summary: "data failed to decrypt or authenticate (truncated, tampered or the wrong key)" },
  POLICY: { exit: 2, summary: "the room's policy forbids this" },
  AUDIT_INVALID: { exit: 1, summary: "the audit trail does not verify" },
  CONSENT: { exit: 2, summary: "governance did not consent" },
  INTERNAL: { exit: 3, summary: "an internal fault in airlock" },
  CAPACITY: { exit: 2, summary: "the host has not enough free memory or vCPUs (or host ports) for this pair" },
} as const satisfies Record<Exclude<keyof typeof WireErrorCode, "UNSPECIFIED">, { exit: 1 | 2 | 3; summary: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Each code's number on the wire, as errors.proto declares it (the compiler checks every one). */
const WIRE_NUMBERS = {
  USAGE: 1, MANIFEST_INVALID: 2, MANIFEST_SIGNATURE: 3, KEY_INVALID: 4, KEY_POLICY: 5, FILE_UNREADABLE: 6, CONFLICT: 7, IMAGE_BUILD: 8,
  IMAGE_MISSING: 9, QMP_PROTOCOL: 10, QMP_COMMAND: 11, QMP_CLOSED: 12, TIMEOUT: 13, LAUNCH: 14, PAIR_NOT_FOUND: 15, PAIR_EXISTS: 16,
  PAIR_FAILED: 17, PAIR_NAME: 18, ACCEL_UNAVAILABLE: 19, TEE_UNSUPPORTED: 20, FABRIC: 21, FABRIC_CONFIG: 22, GUEST_PROTOCOL: 23,
  MEASURE: 24, REPORT_INVALID: 25, REPORT_REJECTED: 26, CERT_INVALID: 27, KEY_RELEASE: 28, LISTEN: 29, CRYPTO: 30, POLICY: 31,
  AUDIT_INVALID: 32, CONSENT: 33, INTERNAL: 34, CAPACITY: 35, HOST_KEY: 40, REMOTE: 41,
} as const satisfies { readonly [K in ErrorCode]: (typeof WireErrorCode)[K] };

const CODE_OF_WIRE = new Map<number, ErrorCode>(Object.entries(WIRE_NUMBERS).map(([code, n]) => [n, code as ErrorCode]));

/** A code as it crosses the wire. */
export const errorCodeToWire = (code: ErrorCode): WireErrorCode => WIRE_NUMBERS[code];

/** A code from the wire (decoding refused values the enum does not declare). */
export function errorCodeFromWire(wire: WireErrorCode): ErrorCode {
  return CODE_OF_WIRE.get(wire) ?? "INTERNAL";
}

/** True for a code declared above (own keys only: "constructor" or "toString" are not codes). */
export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CODES, code);
}

/** The CLI's exit status for an error code; anything not declared counts as an internal fault. */
export function exitStatusOf(code: string): number {
  return isErrorCode(code) ? ERROR_CODES[code].exit : ERROR_CODES.INTERNAL.exit;
}

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

/** When `airlock run` exits with each RUN_EXIT status, in one line (README's table, `airlock --help`). */
export const RUN_EXIT_SUMMARY: Record<keyof typeof RUN_EXIT, string> = {
  workloadFailed: "the workload failed and the sandbox read data above DOMAIN_OWNED (its exact status is sealed in the console output, if the room declares one)",
  incomplete: "the run did not complete (refused, past its deadline, or a part of the pair failed): nothing was released",
};

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
