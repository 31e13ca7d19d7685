// `airlock manifest digest|sign|verify|grant`: the room manifest's canonical digest (what the launch
// puts in host_data), collaborators' signatures over it (kept in MANIFEST.sig.json, sent with the
// room; the enforcer starts the workload only when every required one verifies), and the data
// owner's grant of an input's age identity to this room in the embedded key broker.
import { readFileSync } from "node:fs";
import type { Argv } from "yargs";
import { AirlockError, isErrnoException } from "../../../../proto/src/errors.ts";
import { loadManifest } from "../../../../proto/src/manifest/index.ts";
import { addSignature, checkSignatures, readSignatureFile, signatureFileOf, signManifestDigest } from "../../../../proto/src/manifest/sign.ts";
import { parseIdentityFile } from "../../../../proto/src/age/index.ts";
import { roomIdentity } from "../../launch/room-digest.ts";
import { ALLOW_LOW_SCOPE_FLAG, checkGrantScope, grantInput } from "../../kbs/grant.ts";
import { DATA_SCOPES, type DataScope } from "../../../../proto/src/manifest/schema.ts";
import { printResult, setExitCode, type AirlockCommand } from "../command.ts";
import { createHash } from "node:crypto";

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new AirlockError("USAGE", `${what} ${file}: ${isErrnoException(err, "ENOENT") ? "no such file" : (err as Error).message}`);
  }
}

const digest: AirlockCommand = {
  command: "digest <manifest>",
  describe: "print the manifest's canonical digest (SHA-256, hex): what collaborators sign and host_data holds; it pins the images' measurements and the key broker (--json shows them)",
  builder: (y: Argv) => y.positional("manifest", { type: "string", demandOption: true }).option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const m = loadManifest(argv.manifest as string);
    const room = await roomIdentity(m);
    const d = room.digest.toString("hex");
    printResult(argv.json as boolean, { manifest: m.file, digest: d, attestation: room.pins }, () => d);
  },
};

const sign: AirlockCommand = {
  command: "sign <manifest>",
  describe: "sign the manifest's digest as one collaborator (Ed25519 or P-384 private key, PEM); adds to MANIFEST.sig.json",
  builder: (y: Argv) =>
    y
      .positional("manifest", { type: "string", demandOption: true })
      .option("key", { type: "string", demandOption: true, describe: "private key (PEM, Ed25519 or ECDSA P-384)" })
      .option("name", { type: "string", demandOption: true, describe: "your name as the manifest's collaborators list it" })
      .option("out", { type: "string", describe: "signature file (default MANIFEST.sig.json)" })
      .option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const m = loadManifest(argv.manifest as string);
    const name = argv.name as string;
    const who = m.collaborators.find((c) => c.name === name);
    if (!who) throw new AirlockError("USAGE", `${m.file}: no collaborator named "${name}" (collaborators: ${m.collaborators.map((c) => c.name).join(", ") || "none"})`);
    const d = (await roomIdentity(m)).digest;
    const s = signManifestDigest(d, name, readText(argv.key as string, "key"), argv.key as string);
    if (createHash("sha256").update(s.publicKeyPem).digest("hex") !== createHash("sha256").update(who.publicKeyPem).digest("hex")) {
      // Same key, different PEM text would still fail in the enforcer: it compares the PEM's hash.
      const same = s.publicKeyPem.trim() === who.publicKeyPem.trim();
      if (!same) throw new AirlockError("USAGE", `${argv.key}: this is not the key the manifest names for ${name}`);
      s.publicKeyPem = who.publicKeyPem;
    }
    const file = (argv.out as string | undefined) ?? signatureFileOf(m.file);
    addSignature(file, s);
    printResult(argv.json as boolean, { file, name, alg: s.alg, digest: s.digest }, () => `${name} signed ${s.digest} (${s.alg}) → ${file}`);
  },
};

const verify: AirlockCommand = {
  command: "verify <manifest>",
  describe: "check that every collaborator the manifest names signed its current digest (exit 1 otherwise)",
  builder: (y: Argv) =>
    y
      .positional("manifest", { type: "string", demandOption: true })
      .option("signatures", { type: "string", describe: "signature file (default MANIFEST.sig.json)" })
      .option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const m = loadManifest(argv.manifest as string);
    const d = (await roomIdentity(m)).digest;
    const sigs = readSignatureFile((argv.signatures as string | undefined) ?? signatureFileOf(m.file));
    const required = m.collaborators.map((c) => ({ name: c.name, publicKeySha256: createHash("sha256").update(c.publicKeyPem).digest("hex") }));
    const checks = checkSignatures(d, required, sigs);
    const ok = checks.every((c) => c.ok);
    if (!ok) setExitCode(1);
    printResult(argv.json as boolean, { digest: d.toString("hex"), ok, checks }, () =>
      [`digest ${d.toString("hex")}`, ...checks.map((c) => `${c.ok ? "ok  " : "FAIL"} ${c.name}: ${c.reason}`), checks.length === 0 ? "no collaborators: nothing to sign" : ok ? "all required signatures verify" : "the room will not start"].join("\n"),
    );
  },
};

const grant: AirlockCommand = {
  command: "grant <manifest>",
  describe: "data owner: register an input's age identity with the embedded key broker (released only to this manifest digest's attested firewall, with your scope), or print the recipient of one the broker keeps",
  builder: (y: Argv) =>
    y
      .positional("manifest", { type: "string", demandOption: true })
      .option("input", { type: "string", demandOption: true, describe: "the input's name in the manifest" })
      .option("identity", { type: "string", describe: "age identity file (age-keygen's AGE-SECRET-KEY-1…); without it the broker keeps an identity of its own and prints its recipient" })
      .option("scope", { choices: DATA_SCOPES, default: "USER_PRIVATE", describe: "your scope for this data, signed into every key release; the firewall applies the stricter of it and the manifest's" })
      .option(ALLOW_LOW_SCOPE_FLAG, { type: "boolean", default: false, describe: "allow --scope PUBLIC or DOMAIN_OWNED: open outputs may then carry this data in clear" })
      .option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const m = loadManifest(argv.manifest as string);
    const input = argv.input as string;
    const declared = m.inputs.find((i) => i.name === input);
    if (!declared) throw new AirlockError("USAGE", `${m.file}: no input named "${input}"`);
    const scope = argv.scope as DataScope;
    const allowLowScope = argv[ALLOW_LOW_SCOPE_FLAG] as boolean;
    checkGrantScope(scope, allowLowScope, `--scope for input ${input}`); // before the image build
    const file = argv.identity as string | undefined;
    const text = file === undefined ? undefined : readText(file, "identity");
    if (text !== undefined) parseIdentityFile(text, file!); // refuse anything that is not an age identity now
    const room = await roomIdentity(m);
    const measurement = Buffer.from(room.pins.firewall, "hex");
    const g = await grantInput(m, input, text, { digest: room.digest, firewallMeasurement: measurement }, { scope, allowLowScope });
    const json = argv.json as boolean;
    // What the owner binds to, on stderr: stdout stays the recipient alone for `age -r "$(…)"`.
    const lines = json
      ? []
      : [
          `grant: input ${input} of room ${m.name}`,
          `  binds to manifest digest ${g.digest} (key "${g.keyId}"), firewall measurement ${measurement.toString("hex").slice(0, 16)}…`,
          `  scope: the manifest declares ${g.declaredScope}; you grant ${g.scope}`,
          `  open outputs (released in clear when their rules hold): ${g.openOutputs.length > 0 ? g.openOutputs.join(", ") : "none"}`,
        ];
    lines.push(...g.warnings.map((w) => `WARNING: ${w}`));
    if (lines.length > 0) process.stderr.write(`${lines.join("\n")}\n`);
    printResult(json, { keyId: g.keyId, recipient: g.recipient, measurement: measurement.toString("hex"), hostData: g.digest, scope: g.scope, declaredScope: g.declaredScope, openOutputs: g.openOutputs, warnings: g.warnings }, () =>
      file === undefined ? g.recipient : `input ${input}: identity registered as key "${g.keyId}" (scope ${g.scope}), for this manifest digest only`,
    );
  },
};

export const manifestCommand: AirlockCommand = {
  builder: (y: Argv) => y.command([digest, sign, verify, grant]).demandCommand(1),
  handler: () => {},
};
