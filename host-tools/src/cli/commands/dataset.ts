// `airlock dataset encrypt|decrypt|keygen|recipient`: age files (age-encryption.org/v1) made and
// opened with the same format as the `age` CLI, streamed so that datasets of any size fit.
import { writeFile } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import type { Argv } from "yargs";
import { AirlockError, isErrnoException } from "../../../../proto/src/errors.ts";
import {
  decrypt,
  encrypt,
  formatIdentityFile,
  openInput,
  pipeToFile,
  readIdentityFile,
  readRecipientsFile,
  X25519Identity,
  X25519Recipient,
} from "../../../../proto/src/age/index.ts";
import type { AgeIdentity, AgeRecipient } from "../../../../proto/src/age/index.ts";
import { printResult } from "../command.ts";
import type { AirlockCommand } from "../command.ts";

function input(file: string | undefined): AsyncIterable<Uint8Array> {
  return file === undefined || file === "-" ? process.stdin : openInput(file);
}

async function output(data: AsyncIterable<Buffer>, out: string | undefined, mode: number): Promise<void> {
  if (out === undefined || out === "-") {
    try {
      await pipeline(data, process.stdout);
    } catch (err) {
      if (!isErrnoException(err, "EPIPE")) throw err; // the reader went away (`| head`): not our fault
    }
    return;
  }
  await pipeToFile(data, out, mode);
}

/** Turns "no such file" on the input into a user error instead of a stack trace. */
async function withInputErrors<T>(file: string | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isErrnoException(err, "ENOENT") && file && (err as NodeJS.ErrnoException).path === file) {
      throw new AirlockError("USAGE", `input file not found: ${file}`);
    }
    if (isErrnoException(err, "EISDIR")) throw new AirlockError("USAGE", `input ${file ?? "-"} is a directory, not a file`, { cause: err });
    if (isErrnoException(err, "EACCES")) throw new AirlockError("USAGE", `cannot read ${file ?? "stdin"}: permission denied`, { cause: err });
    throw err;
  }
}

interface EncryptArgs {
  input?: string;
  recipient?: string[];
  "recipients-file"?: string[];
  armor: boolean;
  output?: string;
}

const encryptCommand: AirlockCommand = {
  command: "encrypt [input]",
  describe: "encrypt a file (or stdin) to age recipients",
  builder: (y: Argv) =>
    y
      .positional("input", { type: "string", describe: "file to encrypt (default: stdin)" })
      .option("recipient", { alias: "r", type: "string", array: true, nargs: 1, describe: "an age1… recipient (repeatable)" })
      .option("recipients-file", { alias: "R", type: "string", array: true, nargs: 1, describe: "file of age1… recipients, one a line (repeatable)" })
      .option("armor", { alias: "a", type: "boolean", default: false, describe: "ASCII-armored output" })
      .option("output", { alias: "o", type: "string", describe: "output file (default: stdout)" }),
  handler: async (argv) => {
    const args = argv as unknown as EncryptArgs;
    const recipients: AgeRecipient[] = (args.recipient ?? []).map((r, i) => X25519Recipient.parse(r, `--recipient #${i + 1}`));
    for (const f of args["recipients-file"] ?? []) recipients.push(...(await readRecipientsFile(f)));
    if (recipients.length === 0) throw new AirlockError("USAGE", "name at least one recipient", { hint: "--recipient age1… or --recipients-file FILE" });
    if (!args.armor && (args.output === undefined || args.output === "-") && process.stdout.isTTY) {
      throw new AirlockError("USAGE", "refusing to write binary ciphertext to a terminal", { hint: "use -o FILE, -a, or redirect stdout" });
    }
    await withInputErrors(args.input, () => output(encrypt(input(args.input), recipients, { armor: args.armor }), args.output, 0o644));
  },
};

interface DecryptArgs {
  input?: string;
  identity: string[];
  output?: string;
}

const decryptCommand: AirlockCommand = {
  command: "decrypt [input]",
  describe: "decrypt an age file (binary or armored); refuses truncated, reordered or tampered files",
  builder: (y: Argv) =>
    y
      .positional("input", { type: "string", describe: "file to decrypt (default: stdin)" })
      .option("identity", { alias: "i", type: "string", array: true, nargs: 1, demandOption: true, describe: "identity file (repeatable)" })
      .option("output", { alias: "o", type: "string", describe: "output file, created 0600 and removed if decryption fails (default: stdout)" }),
  handler: async (argv) => {
    const args = argv as unknown as DecryptArgs;
    const identities: AgeIdentity[] = [];
    for (const f of args.identity) identities.push(...(await readIdentityFile(f)));
    try {
      await withInputErrors(args.input, () => output(decrypt(input(args.input), identities), args.output, 0o600));
    } catch (err) {
      if (err instanceof AirlockError && err.code === "CRYPTO" && (args.output === undefined || args.output === "-")) {
        err.message += " — any output already written to stdout is incomplete and must be discarded";
      }
      throw err;
    }
  },
};

interface KeygenArgs {
  output: string;
  json: boolean;
}

const keygenCommand: AirlockCommand = {
  command: "keygen",
  describe: "make an X25519 identity (written 0600) and print its age1… recipient",
  builder: (y: Argv) =>
    y
      .option("output", { alias: "o", type: "string", demandOption: true, describe: "identity file to create (must not exist)" })
      .option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const args = argv as unknown as KeygenArgs;
    const id = X25519Identity.generate();
    try {
      await writeFile(args.output, formatIdentityFile(id), { mode: 0o600, flag: "wx" });
    } catch (err) {
      if (isErrnoException(err, "EEXIST")) throw new AirlockError("USAGE", `${args.output} already exists; not overwriting an identity`);
      throw AirlockError.from(err, "USAGE");
    }
    const recipient = id.recipient.toString();
    printResult(args.json, { recipient, identityFile: args.output }, () => recipient);
  },
};

interface RecipientArgs {
  identity: string;
  json: boolean;
}

const recipientCommand: AirlockCommand = {
  command: "recipient <identity>",
  describe: "print the age1… recipient(s) of an identity file (like age-keygen -y)",
  builder: (y: Argv) => y.positional("identity", { type: "string", demandOption: true }).option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const args = argv as unknown as RecipientArgs;
    const recipients = (await readIdentityFile(args.identity)).map((id) => id.recipient.toString());
    printResult(args.json, { recipients }, () => recipients.join("\n"));
  },
};

export const datasetCommand: AirlockCommand = {
  builder: (y: Argv) => y.command([encryptCommand, decryptCommand, keygenCommand, recipientCommand]).demandCommand(1),
  handler: () => {},
};
