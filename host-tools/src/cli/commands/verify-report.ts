// `airlock verify-report`: exit 0 only when the report is genuine (chain to a trusted root, VCEK
// matches the report's TCB and chip, signature holds) and meets every expectation given.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import type { Argv } from "yargs";
import { AirlockError, isErrnoException } from "../../../../proto/src/errors.ts";
import { PRODUCTS, REPORT_SIZE, reportToJson } from "../../../../proto/src/attestation/report.ts";
import type { Product } from "../../../../proto/src/attestation/report.ts";
import { assertVerified, ReportVerifier } from "../../attestation/verify.ts";
import { parseMinTcb } from "../min-tcb.ts";
import type { Expectations } from "../../attestation/verify.ts";
import { printResult } from "../command.ts";
import type { AirlockCommand } from "../command.ts";

interface Args {
  report: string;
  vcek?: string;
  chain?: string;
  certs?: string;
  product?: Product;
  measurement?: string;
  "report-data"?: string;
  "host-data"?: string;
  vmpl?: number;
  "min-tcb"?: string;
  "allow-debug": boolean;
  "forbid-smt": boolean;
  "forbid-migrate-ma": boolean;
  "require-single-socket": boolean;
  "trust-root"?: string[];
  at?: string;
  json: boolean;
}

function readInput(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new AirlockError("USAGE", `${what} ${file}: ${isErrnoException(err, "ENOENT") ? "no such file" : (err as Error).message}`, { cause: err });
  }
}

/** A report file: 1184 raw bytes, or the same as hex text (as virtee's tools print it). */
export function readReportFile(file: string): Buffer {
  const raw = readInput(file, "report");
  if (raw.length === REPORT_SIZE) return raw;
  const text = raw.toString("latin1").replace(/\s+/g, "");
  if (text.length === REPORT_SIZE * 2 && /^[0-9a-f]+$/i.test(text)) return Buffer.from(text, "hex");
  throw new AirlockError("REPORT_INVALID", `report ${file}: ${raw.length} bytes, expected ${REPORT_SIZE} raw bytes or ${REPORT_SIZE * 2} hex digits`);
}

/** snpguest/virtee layout: vcek.der or vcek.pem, and ask/ark as PEM or DER, or cert_chain.pem. */
function certsFromDir(dir: string): { vcek?: string; chain?: string[] } {
  const has = (name: string): string | undefined => (existsSync(path.join(dir, name)) ? path.join(dir, name) : undefined);
  const vcek = has("vcek.der") ?? has("vcek.pem") ?? has("VCEK.der") ?? has("VCEK.pem");
  const chain = has("cert_chain.pem") ? [has("cert_chain.pem")!] : [has("ask.pem") ?? has("ask.der"), has("ark.pem") ?? has("ark.der")].filter((f): f is string => f !== undefined);
  if (!vcek && chain.length === 0) throw new AirlockError("USAGE", `--certs ${dir}: no vcek.der, vcek.pem, ask.pem, ark.pem or cert_chain.pem there`);
  return { ...(vcek ? { vcek } : {}), chain };
}

/** PEM text of a certificate file given as PEM or DER. */
function pemOf(data: Buffer): string {
  if (data.subarray(0, 64).includes("-----BEGIN")) return data.toString("latin1");
  return `-----BEGIN CERTIFICATE-----\n${data.toString("base64")}\n-----END CERTIFICATE-----\n`;
}

export function parseHexOption(name: string, value: string | undefined, bytes: number): Buffer | undefined {
  if (value === undefined) return undefined;
  const text = value.replace(/^0x/i, "");
  if (!/^[0-9a-f]*$/i.test(text) || text.length !== bytes * 2) throw new AirlockError("USAGE", `--${name}: expected ${bytes * 2} hex digits (${bytes} bytes), got "${value}"`);
  return Buffer.from(text, "hex");
}

export const verifyReportCommand: AirlockCommand = {
  builder: (y: Argv) =>
    y
      .positional("report", { type: "string", demandOption: true, describe: "the 1184-byte report (binary or hex)" })
      .option("vcek", { type: "string", describe: "the VCEK certificate that signed it (DER or PEM)" })
      .option("chain", { type: "string", describe: "ASK then ARK, PEM (default: AMD's chain for the product)" })
      .option("certs", { type: "string", describe: "a directory holding vcek.der|vcek.pem and optionally ask.pem, ark.pem or cert_chain.pem (snpguest's layout)" })
      .option("product", { choices: PRODUCTS, coerce: (p: string) => p.toLowerCase(), describe: "expected product (default: from the VCEK)" })
      .option("measurement", { type: "string", describe: "expected launch measurement, 96 hex digits" })
      .option("report-data", { type: "string", describe: "expected report_data, 128 hex digits" })
      .option("host-data", { type: "string", describe: "expected host_data, 64 hex digits" })
      .option("vmpl", { type: "number", describe: "expected VMPL (0-3)" })
      .option("min-tcb", { type: "string", describe: "minimum TCB: bootloader=N,tee=N,snp=N,microcode=N[,fmc=N] or a hex TCB_VERSION" })
      .option("allow-debug", { type: "boolean", default: false, describe: "accept guests whose policy allows debugging" })
      .option("forbid-smt", { type: "boolean", default: false, describe: "refuse guests whose policy allows SMT" })
      .option("forbid-migrate-ma", { type: "boolean", default: false, describe: "refuse guests whose policy allows a migration agent" })
      .option("require-single-socket", { type: "boolean", default: false, describe: "require the SINGLE_SOCKET policy bit" })
      .option("trust-root", { type: "string", array: true, describe: "trust this ARK (PEM) instead of AMD's roots, e.g. the emulated PSP's test ARK" })
      .option("at", { type: "string", describe: "check certificate validity at this time (ISO 8601; default now)" })
      .option("json", { type: "boolean", default: false }),
  handler: async (argv) => {
    const args = argv as unknown as Args;
    const report = readReportFile(args.report);
    const fromDir = args.certs ? certsFromDir(args.certs) : {};
    const vcekFile = args.vcek ?? fromDir.vcek;
    if (!vcekFile) throw new AirlockError("USAGE", "--vcek (or --certs DIR holding vcek.der or vcek.pem) is required: this host cannot fetch the VCEK from AMD KDS", { hint: "fetch it from https://kdsintf.amd.com/vcek/v1/<product>/<hwid>?... or take it from the guest's auxblob" });
    const vcek = readInput(vcekFile, "VCEK");
    const chainFiles = args.chain ? [args.chain] : (fromDir.chain ?? []);
    const chain = chainFiles.length ? chainFiles.map((f) => pemOf(readInput(f, "chain"))).join("") : undefined;
    if (args.vmpl !== undefined && !(Number.isInteger(args.vmpl) && args.vmpl >= 0 && args.vmpl <= 3)) throw new AirlockError("USAGE", `--vmpl ${args.vmpl}: expected 0 to 3`);
    let at: Date | undefined;
    if (args.at !== undefined) {
      at = new Date(args.at);
      if (Number.isNaN(at.getTime())) throw new AirlockError("USAGE", `--at "${args.at}": not a date (use ISO 8601, e.g. 2026-01-31T12:00:00Z)`);
    }
    const expect: Expectations = {
      allowDebug: args["allow-debug"],
      forbidSmt: args["forbid-smt"],
      forbidMigrateMa: args["forbid-migrate-ma"],
      requireSingleSocket: args["require-single-socket"],
    };
    if (args.product) expect.product = args.product;
    const m = parseHexOption("measurement", args.measurement, 48);
    if (m) expect.measurement = m;
    const rd = parseHexOption("report-data", args["report-data"], 64);
    if (rd) expect.reportData = rd;
    const hd = parseHexOption("host-data", args["host-data"], 32);
    if (hd) expect.hostData = hd;
    if (args.vmpl !== undefined) expect.vmpl = args.vmpl;
    if (args["min-tcb"]) expect.minTcb = parseMinTcb(args["min-tcb"], args.product);
    if (at) expect.at = at;
    const trustRoots = args["trust-root"]?.map((f) => readInput(f, "trust root").toString("latin1"));
    const verifier = new ReportVerifier(trustRoots ? { trustRoots } : {});
    const result = verifier.verify({ report, vcek, ...(chain !== undefined ? { chain } : {}) }, expect);
    if (args.json || result.ok) {
      printResult(
        args.json,
        { ok: result.ok, failed: result.failed, passed: result.passed, product: result.product, amdRoot: result.amdRoot, report: reportToJson(result.report, result.product) },
        () =>
          `report verified: ${result.product} chip, ${result.amdRoot ? "AMD root" : "TEST ROOT (not AMD)"}, measurement ${result.report.measurement.toString("hex")}\n` +
          `checks passed: ${result.passed.join(", ")}`,
      );
    }
    assertVerified(result);
  },
};
