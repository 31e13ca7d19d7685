// `airlock audit verify LOG`: exit 0 when the audit trail verifies (chain, hashes, checkpoint
// signatures, the signed closed record) and its signing key is the one the firewall's attestation
// report binds (that report verifying up to AMD's roots, or a test root named on the command line);
// 1 naming the first failure otherwise; 2 for input that cannot be read.
import { createHash, createPublicKey } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import type { Argv } from "yargs";
import { AirlockError, isErrnoException } from "../../../../proto/src/errors.ts";
import { verifyAttestedAuditLog } from "../../../../proto/src/audit/index.ts";
import type { AttestedAuditVerification } from "../../../../proto/src/audit/index.ts";
import { embeddedBrokerDirs } from "../../launch/host-link.ts";
import { printResult, setExitCode } from "../command.ts";
import type { AirlockCommand } from "../command.ts";
import { parseHexOption } from "./verify-report.ts";

interface VerifyArgs {
  log: string;
  key?: string;
  "allow-open": boolean;
  attestation: boolean;
  "trust-root"?: string[];
  "emulated-psp"?: string;
  measurement?: string;
  "host-data"?: string;
  json: boolean;
}

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new AirlockError("USAGE", `${what} ${file}: ${isErrnoException(err, "ENOENT") ? "no such file" : (err as Error).message}`, { cause: err });
  }
}

function readKey(file: string): KeyObject {
  try {
    return createPublicKey(readText(file, "key"));
  } catch (err) {
    if (err instanceof AirlockError) throw err;
    throw new AirlockError("USAGE", `key ${file}: not a PEM public key, private key or certificate`, { cause: err });
  }
}

/** The emulated PSP's test ARK: <dir>/ark.pem, dir defaulting to the embedded broker's PSP state. */
function emulatedArk(dir: string): { file: string; pem: string } {
  const file = path.join(dir === "" ? embeddedBrokerDirs().psp : dir, "ark.pem");
  try {
    return { file, pem: readFileSync(file, "latin1") };
  } catch (err) {
    throw new AirlockError("USAGE", `--emulated-psp: ${file}: ${isErrnoException(err, "ENOENT") ? "no emulated PSP there (no ark.pem)" : (err as Error).message}`, {
      cause: err,
      hint: "name the state folder of the emulated PSP that attested the run (AIRLOCK_STATE/psp), or give its ARK with --trust-root",
    });
  }
}

function fingerprint(spkiB64: string): string {
  return `SHA256:${createHash("sha256").update(Buffer.from(spkiB64, "base64")).digest("base64").replace(/=+$/, "")}`;
}

function describe(file: string, v: AttestedAuditVerification): string {
  const lines: string[] = [];
  if (v.valid) {
    const end =
      v.end === "closed" ? "closed by a signed record" : v.end === "checkpoint" ? "ends at a signed checkpoint (not closed)" : "ends with an UNSIGNED tail";
    lines.push(`${file}: verifies — ${v.records} records, ${end}; signed by ${v.alg} key ${fingerprint(v.publicKey!)}`);
    const a = v.attestation;
    if (a) {
      const root = a.amdRoot ? "AMD's root" : "a TEST root, emulated attestation";
      lines.push(`  key bound by the attestation report in record seq ${a.seq} (${a.provider ?? "unknown provider"}, ${a.product ?? "?"}; verified up to ${root})`);
      lines.push(`  measurement ${a.measurement}`);
      lines.push(`  host_data   ${a.hostData}`);
    }
  } else {
    lines.push(`${file}: DOES NOT VERIFY — ${v.firstBad!.reason}`);
  }
  for (const w of v.warnings) lines.push(`  warning: ${w}`);
  return lines.join("\n");
}

const verifyCommand: AirlockCommand = {
  command: "verify <log>",
  describe: "verify an audit trail: hash chain, checkpoint signatures, its signed end, and that the attested firewall's key signed it",
  builder: (y: Argv) =>
    y
      .positional("log", { type: "string", demandOption: true, describe: "the audit log (JSON lines)" })
      .option("allow-open", {
        type: "boolean",
        default: false,
        alias: "allow-unsigned-tail",
        describe: "accept a log that is not closed: ending at a checkpoint, or with records after the last signature (a writer that crashed), with warnings",
      })
      .option("trust-root", { type: "string", array: true, describe: "trust this ARK (PEM) instead of AMD's roots, e.g. the emulated PSP's test ARK" })
      .option("emulated-psp", { type: "string", describe: "trust the test ARK of the emulated PSP in DIR (default: the local state's, AIRLOCK_STATE/psp); give it after LOG" })
      .option("measurement", { type: "string", describe: "expected launch measurement of the firewall in the attestation report, 96 hex digits" })
      .option("host-data", { type: "string", describe: "expected host_data (the room's manifest digest), 64 hex digits" })
      .option("attestation", { type: "boolean", default: true, describe: "check that the attestation report binds the signing key (--no-attestation skips it: then the log proves nothing about its writer)" })
      .option("key", { type: "string", describe: "PEM public key (or certificate) the checkpoints must be signed with" })
      .option("require-closed", { type: "boolean", hidden: true, describe: "the default now (kept for old scripts)" })
      .option("json", { type: "boolean", default: false }),
  handler: (argv) => {
    const args = argv as unknown as VerifyArgs;
    const expectedKey = args.key ? readKey(args.key) : undefined;
    const measurement = parseHexOption("measurement", args.measurement, 48);
    const hostData = parseHexOption("host-data", args["host-data"], 32);
    const trustRoots = (args["trust-root"] ?? []).map((f) => readText(f, "trusted root"));
    if (args["emulated-psp"] !== undefined) trustRoots.push(emulatedArk(args["emulated-psp"]).pem);
    if (!args.attestation && (trustRoots.length || measurement || hostData)) {
      throw new AirlockError("USAGE", "--no-attestation skips the attestation check, so --trust-root, --emulated-psp, --measurement and --host-data mean nothing with it");
    }
    const text = readText(args.log, "audit log");
    if (!args.attestation) process.stderr.write("airlock: WARNING: --no-attestation: not checking that the attested firewall signed this log; anyone can rewrite a log and re-sign it with a key of their own\n");
    const v = verifyAttestedAuditLog(text, {
      ...(expectedKey ? { expectedKey } : {}),
      allowOpen: args["allow-open"],
      skipAttestation: !args.attestation,
      ...(trustRoots.length ? { trustRoots } : {}),
      ...(measurement ? { measurement } : {}),
      ...(hostData ? { hostData } : {}),
    });
    if (!v.valid && !args.json) {
      const failed = v.attestation?.failed?.check;
      throw new AirlockError("AUDIT_INVALID", `audit log ${args.log} does not verify: ${v.firstBad!.reason}`, {
        hint:
          v.end === "unsigned-tail" || v.end === "checkpoint"
            ? "if the writer crashed, --allow-open accepts the verified records with a warning"
            : failed === "report" && v.attestation?.reportChecks.length === 0
              ? "an emulated run's report verifies only with --emulated-psp [DIR] or --trust-root naming the emulated PSP's ARK"
              : failed === "record" && v.attestation?.seq === null
                ? "a log that holds no attestation (e.g. the key broker's) verifies only with --no-attestation, and then proves nothing about its writer"
                : undefined,
      });
    }
    printResult(args.json, { file: args.log, ...v }, () => describe(args.log, v));
    if (!v.valid) setExitCode(1);
  },
};

export const auditCommand: AirlockCommand = {
  builder: (y: Argv) => y.command([verifyCommand]).demandCommand(1),
  handler: () => {},
};
