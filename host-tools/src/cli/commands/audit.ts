// `airlock audit verify LOG`: exit 0 when the audit trail verifies (chain, hashes, checkpoint
// signatures, a signed end), 1 naming the first bad record otherwise.
import { createHash, createPublicKey } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Argv } from "yargs";
import { AirlockError, isErrnoException } from "../../../../proto/src/errors.ts";
import { verifyAuditLog } from "../../../../proto/src/audit/index.ts";
import type { AuditVerification } from "../../../../proto/src/audit/index.ts";
import { printResult, setExitCode } from "../command.ts";
import type { AirlockCommand } from "../command.ts";

interface VerifyArgs {
  log: string;
  key?: string;
  "allow-unsigned-tail": boolean;
  "require-closed": boolean;
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

function fingerprint(spkiB64: string): string {
  return `SHA256:${createHash("sha256").update(Buffer.from(spkiB64, "base64")).digest("base64").replace(/=+$/, "")}`;
}

function describe(file: string, v: AuditVerification): string {
  const lines: string[] = [];
  if (v.valid) {
    const end =
      v.end === "closed" ? "closed by a signed record" : v.end === "checkpoint" ? "ends at a signed checkpoint (not closed)" : "ends with an UNSIGNED tail";
    lines.push(`${file}: verifies — ${v.records} records, ${end}; signed by ${v.alg} key ${fingerprint(v.publicKey!)}`);
  } else {
    lines.push(`${file}: DOES NOT VERIFY — ${v.firstBad!.reason}`);
  }
  for (const w of v.warnings) lines.push(`  warning: ${w}`);
  return lines.join("\n");
}

const verifyCommand: AirlockCommand = {
  command: "verify <log>",
  describe: "verify an audit trail: hash chain, checkpoint signatures and a signed end",
  builder: (y: Argv) =>
    y
      .positional("log", { type: "string", demandOption: true, describe: "the audit log (JSON lines)" })
      .option("key", { type: "string", describe: "PEM public key (or certificate) the checkpoints must be signed with" })
      .option("allow-unsigned-tail", { type: "boolean", default: false, describe: "accept records after the last signed checkpoint (a writer that crashed)" })
      .option("require-closed", { type: "boolean", default: false, describe: "accept only a log that ends with its closed record" })
      .option("json", { type: "boolean", default: false }),
  handler: (argv) => {
    const args = argv as unknown as VerifyArgs;
    const expectedKey = args.key ? readKey(args.key) : undefined;
    const v = verifyAuditLog(readText(args.log, "audit log"), {
      expectedKey,
      allowUnsignedTail: args["allow-unsigned-tail"],
      requireClosed: args["require-closed"],
    });
    if (!v.valid && !args.json) {
      throw new AirlockError("AUDIT_INVALID", `audit log ${args.log} does not verify: ${v.firstBad!.reason}`, {
        hint: v.end === "unsigned-tail" ? "if the writer crashed, --allow-unsigned-tail accepts the verified records with a warning" : undefined,
      });
    }
    printResult(args.json, { file: args.log, ...v }, () => describe(args.log, v));
    if (!v.valid) setExitCode(1);
  },
};

export const auditCommand: AirlockCommand = {
  command: "audit <command>",
  describe: "work with audit trails",
  builder: (y: Argv) => y.command([verifyCommand]).demandCommand(1),
  handler: () => {},
};
