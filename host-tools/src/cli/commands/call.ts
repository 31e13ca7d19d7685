// `airlock call ROOM SERVICE METHOD`: one call to a service room's API, after checking its evidence
// (host-tools/src/service/client.ts). ROOM is a pair on this host (its endpoint and expected digest
// come from its state) or, with --endpoint and --digest, a room anywhere.
import { readFileSync, writeFileSync } from "node:fs";
import type { Argv } from "yargs";
import { AirlockError, isErrnoException } from "../../../../proto/src/errors.ts";
import { DATA_SCOPES, type DataScope } from "../../../../proto/src/manifest/schema.ts";
import { parseIdentityFile, type X25519Identity } from "../../../../proto/src/age/index.ts";
import { checkPairName, observedState, PairDir } from "../../launch/pair-state.ts";
import { embeddedBrokerDirs } from "../../kbs/grant.ts";
import { RoomClient } from "../../service/client.ts";
import { printResult, type AirlockCommand } from "../command.ts";
import path from "node:path";

interface CallArgs {
  room: string;
  service?: string;
  method?: string;
  data?: string;
  text?: string;
  scope: DataScope;
  identity?: string;
  endpoint?: string;
  digest?: string;
  "trust-root"?: string[];
  "emulated-psp"?: boolean;
  health: boolean;
  "cert-out"?: string;
  json: boolean;
}

function readInput(args: CallArgs): Buffer {
  if (args.text !== undefined && args.data !== undefined) throw new AirlockError("USAGE", "give the input with --data FILE or --text STRING, not both");
  if (args.text !== undefined) return Buffer.from(args.text);
  if (args.data === undefined) return Buffer.alloc(0);
  try {
    return readFileSync(args.data === "-" ? 0 : args.data);
  } catch (err) {
    throw new AirlockError("FILE_UNREADABLE", `--data ${args.data}: ${isErrnoException(err, "ENOENT") ? "no such file" : (err as Error).message}`);
  }
}

function readIdentity(file: string): X25519Identity {
  const ids = parseIdentityFile(readFileSync(file, "utf8"), file);
  if (ids.length !== 1) throw new AirlockError("KEY_INVALID", `--identity ${file}: expected exactly one age identity`);
  return ids[0]!;
}

export const callCommand: AirlockCommand = {
  builder: (y: Argv) =>
    y
      .positional("room", { type: "string", demandOption: true, describe: "a pair on this host (its endpoint and digest from `airlock status`), or any name with --endpoint and --digest" })
      .positional("service", { type: "string", describe: "the gRPC service name (e.g. demo.Echo)" })
      .positional("method", { type: "string", describe: "the method name" })
      .option("data", { type: "string", describe: "the input: a file, or - for stdin" })
      .option("text", { type: "string", describe: "the input as a string" })
      .option("scope", { choices: DATA_SCOPES, default: "PUBLIC" as DataScope, describe: "the input's scope: PUBLIC goes in clear, any other is sealed to the room" })
      .option("identity", { type: "string", describe: "your age identity file: its recipient owns USER_PRIVATE input and receives answers sealed to you" })
      .option("endpoint", { type: "string", describe: "HOST:PORT of the API (default: the pair's)" })
      .option("digest", { type: "string", describe: "the room digest you expect (default: the pair's manifest digest)" })
      .option("trust-root", { type: "string", array: true, describe: "an ARK (PEM) to trust besides AMD's" })
      .option("emulated-psp", { type: "boolean", default: false, describe: "trust this host's emulated PSP (rooms run with --tee emulated)" })
      .option("health", { type: "boolean", default: false, describe: "ask GetHealthReport instead of calling a method" })
      .option("cert-out", { type: "string", describe: "write the API's TLS certificate (PEM) here once the evidence has checked out, for any gRPC client (e.g. one built from Encrypted Zone's SDK) to trust; with no SERVICE METHOD, nothing is called" })
      .option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const args = argv as unknown as CallArgs;
    let endpoint = args.endpoint;
    let digest = args.digest;
    let plaintext = false;
    if (!endpoint || !digest) {
      const s = observedState(new PairDir(checkPairName(args.room)));
      if (!s) throw new AirlockError("PAIR_NOT_FOUND", `no pair named ${args.room} on this host`, { hint: "give --endpoint HOST:PORT and --digest HEX for a room elsewhere" });
      if (!s.service) throw new AirlockError("USAGE", `pair ${args.room} is not a service room`);
      endpoint ??= s.service.endpoint;
      digest ??= s.manifestDigest;
      plaintext = !s.service.tls;
    }
    const trustRoots = (args["trust-root"] ?? []).map((f) => readFileSync(f, "latin1"));
    if (args["emulated-psp"]) trustRoots.push(readFileSync(path.join(embeddedBrokerDirs().psp, "ark.pem"), "latin1"));
    const client = await RoomClient.connect({ endpoint, digest, trustRoots, plaintext });
    try {
      if (args["cert-out"]) {
        if (!client.certificatePem) throw new AirlockError("USAGE", `--cert-out: ${args.room}'s API is plaintext (api.tls: false): it has no certificate`);
        writeFileSync(args["cert-out"], client.certificatePem, { mode: 0o644 });
        process.stderr.write(`airlock: evidence checked; the API's certificate (key sha256 ${client.room.apiTlsSpkiSha256}) is in ${args["cert-out"]}: trust it as the CA, server name localhost\n`);
        if (!args.health && !args.service) return;
      }
      if (args.health) {
        const h = await client.health();
        return printResult(args.json, h, () => JSON.stringify(h, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v), 2));
      }
      if (!args.service || !args.method) throw new AirlockError("USAGE", "name the SERVICE and METHOD to call (or --health)");
      const identity = args.identity ? readIdentity(args.identity) : undefined;
      const r = await client.call(args.service, args.method, readInput(args), { scope: args.scope, ...(identity ? { identity } : {}) });
      if (args.json) return printResult(true, { released: r.released, output: r.output?.toString("base64"), sealed: r.sealed?.toString("base64") }, () => "");
      process.stderr.write(`airlock: evidence checked (room ${client.room.digest.slice(0, 16)}…, firewall ${client.room.measurement.slice(0, 16)}…, ${client.room.tee}); answer released: ${r.released}\n`);
      if (r.output) process.stdout.write(r.output);
      else process.stderr.write("airlock: the answer is sealed to the room's own key (its data's scope is above what you may read)\n");
    } finally {
      client.close();
    }
  },
};
