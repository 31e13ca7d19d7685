// `airlock kbs serve|add-key|list`: the key broker on its own (`airlock run` embeds it through
// startKbs). The master key comes from AIRLOCK_KBS_MASTER_KEY or --master-key FILE (mode 0600);
// by default <state>/master.key, created on first use.
//
// add-key binds a key to one room: --host-data (the manifest digest the launch puts in host_data)
// is required, and a key any room may receive needs --any-room. A scope below USER_PRIVATE needs
// the same flag as `airlock manifest grant` (kbs/grant.ts).
import { readFileSync } from "node:fs";
import path from "node:path";
import type { Argv } from "yargs";
import { AirlockError, isErrnoException } from "../../../../proto/src/errors.ts";
import { createRootLogger } from "../../../../proto/src/log.ts";
import { PRODUCTS } from "../../../../proto/src/attestation/report.ts";
import type { Product } from "../../../../proto/src/attestation/report.ts";
import { parseMinTcb } from "../min-tcb.ts";
import { startKbs } from "../../kbs/server.ts";
import type { KbsListen } from "../../kbs/server.ts";
import { checkPolicy, KeyStore, loadMasterKey } from "../../kbs/store.ts";
import type { KeyPolicy } from "../../kbs/store.ts";
import { ALLOW_LOW_SCOPE_FLAG, checkGrantScope } from "../../kbs/grant.ts";
import { DATA_SCOPES, type DataScope } from "../../../../proto/src/manifest/schema.ts";
import { randomBytes } from "node:crypto";
import { printResult } from "../command.ts";
import type { AirlockCommand } from "../command.ts";

function masterKeyOf(args: { state: string; "master-key"?: string }, create: boolean): Buffer {
  return loadMasterKey(args["master-key"] ?? path.join(args.state, "master.key"), { create });
}

export function parseListen(text: string): KbsListen {
  if (text.startsWith("unix:")) {
    if (text.length <= 5) throw new AirlockError("USAGE", "--listen unix:PATH needs a path");
    return { path: text.slice(5) };
  }
  const m = /^(\[[0-9a-f:]+\]|[^:]+):(\d{1,5})$/i.exec(text);
  if (!m || Number(m[2]) > 65535) throw new AirlockError("USAGE", `--listen "${text}": expected HOST:PORT or unix:PATH`);
  return { host: m[1]!.replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}

function read(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new AirlockError("USAGE", `${what} ${file}: ${isErrnoException(err, "ENOENT") ? "no such file" : (err as Error).message}`);
  }
}

interface ServeArgs {
  state: string;
  listen: string;
  "master-key"?: string;
  "nonce-ttl": number;
  json: boolean;
}

const serve: AirlockCommand = {
  command: "serve",
  describe: "run the key broker (HTTP) until interrupted",
  builder: (y: Argv) =>
    y
      .option("state", { type: "string", demandOption: true, describe: "broker state dir (keys, audit logs)" })
      .option("listen", { type: "string", default: "127.0.0.1:0", describe: "HOST:PORT or unix:PATH" })
      .option("master-key", { type: "string", describe: "master key file, mode 0600 (default STATE/master.key; or AIRLOCK_KBS_MASTER_KEY)" })
      .option("nonce-ttl", { type: "number", default: 60, describe: "seconds a broker nonce stays valid" })
      .option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const args = argv as unknown as ServeArgs;
    if (!(args["nonce-ttl"] > 0 && args["nonce-ttl"] <= 3600)) throw new AirlockError("USAGE", "--nonce-ttl must be 1 to 3600 seconds");
    const log = createRootLogger({ name: "airlock-kbs" });
    const kbs = await startKbs({ stateDir: args.state, masterKey: masterKeyOf(args, true), listen: parseListen(args.listen), log, nonceTtlMs: args["nonce-ttl"] * 1000 });
    printResult(args.json, { endpoint: kbs.endpoint, publicKey: kbs.publicKey, audit: kbs.auditPath, keys: kbs.store.list() }, () => `key broker listening on ${kbs.endpoint}\n  identity (put in the room manifest): ${kbs.publicKey}\n  audit log: ${kbs.auditPath}`);
    await new Promise<void>((resolve) => {
      const stop = (): void => {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        resolve();
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });
    await kbs.close();
  },
};

interface AddArgs {
  state: string;
  id: string;
  "key-file"?: string;
  generate: boolean;
  policy?: string;
  measurement?: string[];
  "host-data"?: string;
  "any-room": boolean;
  scope?: DataScope;
  "allow-scope-below-user-private": boolean;
  product?: Product;
  vmpl?: number;
  "min-tcb"?: string;
  "allow-debug": boolean;
  "forbid-smt": boolean;
  "trust-root"?: string[];
  "master-key"?: string;
  json: boolean;
}

const addKey: AirlockCommand = {
  command: "add-key",
  describe: "register a dataset key with the policy a VM must prove to receive it",
  builder: (y: Argv) =>
    y
      .option("state", { type: "string", demandOption: true })
      .option("id", { type: "string", demandOption: true, describe: "key id; the firewall asks for an input's as ROOM.INPUT.DIGEST24 (the manifest digest's first 24 hex digits)" })
      .option("key-file", { type: "string", describe: "the key bytes (e.g. an age identity file)" })
      .option("generate", { type: "boolean", default: false, describe: "generate 32 random bytes instead of --key-file" })
      .option("policy", { type: "string", describe: "policy JSON file (fields: measurements, hostData, scope, product, vmpl, minTcb, allowDebug, forbidSmt, forbidMigrateMa, requireSingleSocket, trustRoots)" })
      .option("measurement", { type: "string", array: true, describe: "accepted launch measurement (96 hex digits); repeatable" })
      .option("host-data", { type: "string", describe: "the room's manifest digest the VM's host_data must hold (64 hex digits; airlock manifest digest); required unless --any-room" })
      .option("any-room", { type: "boolean", default: false, describe: "no host_data: release to any room whose firewall has an accepted measurement (dangerous)" })
      .option("scope", { choices: DATA_SCOPES, describe: "the data owner's scope, signed into each release (default USER_PRIVATE)" })
      .option(ALLOW_LOW_SCOPE_FLAG, { type: "boolean", default: false, describe: "allow a scope below USER_PRIVATE (PUBLIC, DOMAIN_OWNED): open outputs may carry the data in clear" })
      .option("product", { choices: PRODUCTS })
      .option("vmpl", { type: "number" })
      .option("min-tcb", { type: "string", describe: "bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]" })
      .option("allow-debug", { type: "boolean", default: false })
      .option("forbid-smt", { type: "boolean", default: false })
      .option("trust-root", { type: "string", array: true, describe: "trust this ARK (PEM) instead of AMD's roots (emulated PSP)" })
      .option("master-key", { type: "string" })
      .option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const args = argv as unknown as AddArgs;
    if (!!args["key-file"] === args.generate) throw new AirlockError("USAGE", "give exactly one of --key-file and --generate");
    let policy: Record<string, unknown> = {};
    if (args.policy) {
      try {
        policy = JSON.parse(read(args.policy, "policy").toString("utf8"));
      } catch (err) {
        throw AirlockError.from(err instanceof AirlockError ? err : new AirlockError("USAGE", `policy ${args.policy}: not JSON (${(err as Error).message})`));
      }
    }
    if (args.measurement) policy.measurements = [...((policy.measurements as string[]) ?? []), ...args.measurement.map((m) => m.replace(/^0x/i, "").toLowerCase())];
    if (args["host-data"]) policy.hostData = args["host-data"].replace(/^0x/i, "").toLowerCase();
    if (args.scope) policy.scope = args.scope;
    if (args.product) policy.product = args.product;
    if (args.vmpl !== undefined) policy.vmpl = args.vmpl;
    if (args["min-tcb"]) policy.minTcb = parseMinTcb(args["min-tcb"], args.product);
    if (args["allow-debug"]) policy.allowDebug = true;
    if (args["forbid-smt"]) policy.forbidSmt = true;
    if (args["trust-root"]) policy.trustRoots = args["trust-root"].map((f) => read(f, "trust root").toString("latin1"));
    const checked: KeyPolicy = checkPolicy(policy, args.policy ?? "key policy");
    if (checked.hostData === undefined && !args["any-room"]) {
      throw new AirlockError("USAGE", `key "${args.id}": no host data, so any room whose firewall matches a measurement would receive it; give --host-data DIGEST (the room's manifest digest: airlock manifest digest room.yaml) or hostData in --policy, or --any-room if the key truly serves every room`);
    }
    if (checked.hostData !== undefined && args["any-room"]) {
      throw new AirlockError("USAGE", `key "${args.id}": --any-room contradicts the host data ${checked.hostData}; give one or the other`);
    }
    checkGrantScope(checked.scope ?? "USER_PRIVATE", args[ALLOW_LOW_SCOPE_FLAG], `key "${args.id}"`);
    if (args["any-room"]) {
      process.stderr.write(
        `WARNING: key "${args.id}" is registered for ANY ROOM: the broker releases it to every firewall with an accepted measurement, whatever manifest it runs, ` +
          `including a look-alike that reuses your room's and input's names and declares the data PUBLIC. Bind it to one manifest digest with --host-data unless that is what you mean.\n`,
      );
    }
    const store = new KeyStore(args.state, masterKeyOf(args, true));
    const key = args.generate ? randomBytes(32) : read(args["key-file"]!, "key file");
    try {
      store.put(args.id, key, checked);
    } finally {
      key.fill(0);
    }
    printResult(args.json, { id: args.id, policy: { ...checked, trustRoots: checked.trustRoots?.length } }, () => `registered key "${args.id}" (${checked.measurements.length} accepted measurement(s), ${checked.hostData ? `room digest ${checked.hostData.slice(0, 16)}…` : "ANY ROOM"}, scope ${checked.scope ?? "USER_PRIVATE"}${checked.trustRoots ? ", TEST ROOT trusted" : ""})`);
  },
};

const list: AirlockCommand = {
  command: "list",
  describe: "list registered key ids",
  builder: (y: Argv) => y.option("state", { type: "string", demandOption: true }).option("master-key", { type: "string" }).option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const args = argv as unknown as { state: string; "master-key"?: string; json: boolean };
    const store = new KeyStore(args.state, masterKeyOf(args, false));
    const ids = store.list();
    printResult(args.json, ids.map((id) => ({ id, measurements: store.policy(id)?.measurements })), () => ids.join("\n"));
  },
};

export const kbsCommand: AirlockCommand = {
  builder: (y: Argv) => y.command([serve, addKey, list]).demandCommand(1),
  handler: () => {},
};
