// The SNP report verifier: one code path for real reports (AMD roots) and emulated ones (a test root
// the caller must name explicitly). Checks run in a fixed order and stop at the first failure, which
// the result names: a reviewer sees exactly which expectation a report missed.
//
// Malformed input (a report or certificate that does not parse) throws REPORT_INVALID/CERT_INVALID;
// a well-formed report that fails a check is a result with ok=false (assertVerified turns it into
// REPORT_REJECTED).
import { createHash, verify as cryptoVerify } from "node:crypto";
import { AirlockError } from "../errors.ts";
import { decodePolicy, decodeTcb, parseReport, productFromCpuid, PRODUCTS, signedPart } from "./report.ts";
import type { AttestationReport, Product, TcbVersion } from "./report.ts";
import { AMD_ROOTS } from "./amd-roots.ts";
import { extHwId, extInteger, extString, KDS_OID, parseCert, pemToDers, verifyPssSignature } from "./certs.ts";
import type { ParsedCert } from "./certs.ts";

/** What the guest produced: the report, the VCEK that signed it and, optionally, ASK then ARK (PEM). */
export interface Evidence {
  report: Buffer;
  /** VCEK, DER or PEM. */
  vcek: Buffer | string;
  /** ASK then ARK, PEM (AMD KDS's cert_chain). Defaults to the trusted root's product chain. */
  chain?: string;
}

export interface Expectations {
  product?: Product;
  measurement?: Buffer;
  reportData?: Buffer;
  hostData?: Buffer;
  vmpl?: number;
  minTcb?: Partial<TcbVersion>;
  /** Debug guests are refused unless this is true. */
  allowDebug?: boolean;
  /** Refuse guests whose policy allows SMT. */
  forbidSmt?: boolean;
  /** Refuse guests whose policy allows a migration agent. */
  forbidMigrateMa?: boolean;
  /** Require the SINGLE_SOCKET policy bit. */
  requireSingleSocket?: boolean;
  /** Certificates must be valid at this time (default: now). */
  at?: Date;
}

export type CheckName =
  | "root"
  | "ark-signature"
  | "ask-signature"
  | "vcek-signature"
  | "cert-validity"
  | "product"
  | "vcek-key"
  | "vcek-tcb"
  | "chip-id"
  | "report-signature"
  | "measurement"
  | "report-data"
  | "host-data"
  | "vmpl"
  | "policy-debug"
  | "policy-smt"
  | "policy-migrate-ma"
  | "policy-single-socket"
  | "min-tcb";

export interface VerifyResult {
  ok: boolean;
  /** The first check that failed. */
  failed?: { check: CheckName; reason: string };
  /** Checks that passed, in order. */
  passed: CheckName[];
  product?: Product;
  report: AttestationReport;
  /** True when the chain ends in one of AMD's published roots. */
  amdRoot: boolean;
}

class CheckFailed extends Error {
  constructor(
    readonly check: CheckName,
    reason: string,
  ) {
    super(reason);
  }
}

export interface VerifierOptions {
  /**
   * ARK certificates (PEM or DER) to trust, replacing AMD's. Emulated (test) roots are trusted
   * only when listed here; by default AMD's Milan, Genoa and Turin ARKs alone are trusted.
   */
  trustRoots?: (string | Buffer)[];
}

interface TrustedRoot {
  ark: ParsedCert;
  product: Product;
  /** AMD's published ASK for that product (used when the evidence brings no chain). */
  ask?: ParsedCert;
  amd: boolean;
}

function productFromName(name: string): Product | undefined {
  const m = /^(?:ARK|ASK|SEV)-(?:VLEK-)?(Milan|Genoa|Turin)\b/i.exec(name) ?? /^(Milan|Genoa|Turin)\b/i.exec(name);
  return m ? (m[1]!.toLowerCase() as Product) : undefined;
}

function hex(b: Buffer): string {
  return b.toString("hex");
}

/**
 * A verifier with its trusted roots loaded once. Verified ASK and VCEK signatures are cached by
 * certificate digest (validity times are still checked on every call), so a verifier that lives
 * long checks repeated evidence from the same chip at the cost of one ECDSA verification.
 */
export class ReportVerifier {
  private readonly roots: TrustedRoot[];
  private readonly verifiedSignatures = new Set<string>();
  private readonly parsed = new Map<string, ParsedCert>();

  constructor(options: VerifierOptions = {}) {
    if (options.trustRoots && options.trustRoots.length > 0) {
      this.roots = options.trustRoots.map((pem, i) => {
        const ark = parseCert(pem, `trusted root #${i + 1}`);
        const product = productFromName(ark.commonName);
        if (!product) throw new AirlockError("CERT_INVALID", `trusted root #${i + 1}: CN "${ark.commonName}" names no product (expected ARK-Milan, ARK-Genoa or ARK-Turin...)`);
        const amd = parseCert(AMD_ROOTS[product].ark, "AMD ARK").der.equals(ark.der);
        return { ark, product, amd, ...(amd ? { ask: parseCert(AMD_ROOTS[product].ask, `AMD ASK-${product}`) } : {}) };
      });
    } else {
      this.roots = PRODUCTS.map((product) => ({
        ark: parseCert(AMD_ROOTS[product].ark, `AMD ARK-${product}`),
        ask: parseCert(AMD_ROOTS[product].ask, `AMD ASK-${product}`),
        product,
        amd: true,
      }));
    }
  }

  private cert(data: Buffer | string, label: string): ParsedCert {
    const key = createHash("sha256").update(typeof data === "string" ? Buffer.from(data) : data).digest("hex");
    let c = this.parsed.get(key);
    if (!c) {
      c = parseCert(data, label);
      if (this.parsed.size > 256) this.parsed.clear();
      this.parsed.set(key, c);
    }
    return c;
  }

  private signedBy(child: ParsedCert, issuer: ParsedCert): boolean {
    const key = `${createHash("sha256").update(child.der).digest("hex")}:${createHash("sha256").update(issuer.der).digest("hex")}`;
    if (this.verifiedSignatures.has(key)) return true;
    const ok = verifyPssSignature(child, issuer.publicKey) && child.x509.checkIssued(issuer.x509);
    if (ok) {
      if (this.verifiedSignatures.size > 1024) this.verifiedSignatures.clear();
      this.verifiedSignatures.add(key);
    }
    return ok;
  }

  verify(evidence: Evidence, expect: Expectations = {}): VerifyResult {
    const report = parseReport(evidence.report);
    const vcek = this.cert(evidence.vcek, "VCEK");
    let chainArk: ParsedCert | undefined;
    let chainAsk: ParsedCert | undefined;
    if (evidence.chain !== undefined) {
      // AMD KDS serves ASK then ARK; other tools bundle them in another order or add the VCEK, so
      // the ARK is told by being self-issued and the VCEK by being the VCEK.
      const ders = pemToDers(evidence.chain, "certificate chain");
      if (ders.length === 0 || ders.length > 3) throw new AirlockError("CERT_INVALID", `certificate chain: expected ASK then ARK (PEM), found ${ders.length} certificates`);
      for (const der of ders) {
        if (der.equals(vcek.der)) continue;
        const c = this.cert(der, "chain certificate");
        const selfIssued = c.x509.subject === c.x509.issuer;
        if ((selfIssued && chainArk) || (!selfIssued && chainAsk)) throw new AirlockError("CERT_INVALID", `certificate chain: more than one ${selfIssued ? "root (ARK)" : "intermediate (ASK)"}`);
        if (selfIssued) chainArk = c;
        else chainAsk = c;
      }
    }
    const passed: CheckName[] = [];
    const result: VerifyResult = { ok: false, passed, report, amdRoot: false };
    const check = (name: CheckName, cond: boolean, reason: () => string): void => {
      if (!cond) throw new CheckFailed(name, reason());
      passed.push(name);
    };
    try {
      // Product: what the VCEK says, else what the chain says; the caller's choice must agree.
      const vcekProductName = extString(vcek, KDS_OID.productName);
      const vcekProduct = vcekProductName ? productFromName(vcekProductName) : undefined;
      const chainProduct = chainAsk ? productFromName(chainAsk.commonName) : undefined;
      const product = expect.product ?? vcekProduct ?? chainProduct ?? productFromName(vcek.x509.issuer.split("\n").find((l) => l.startsWith("CN="))?.slice(3) ?? "");
      if (!product) throw new CheckFailed("product", "cannot tell the product (milan, genoa or turin) from the VCEK; pass it explicitly");
      result.product = product;

      // Root: the chain's ARK (or the default for that product) must be a trusted root.
      const candidates = this.roots.filter((r) => r.product === product);
      const root = chainArk ? candidates.find((r) => r.ark.der.equals(chainArk!.der)) : candidates[0];
      check("root", root !== undefined, () =>
        chainArk
          ? `the chain's ARK "${chainArk.commonName}" is not a trusted ${product} root${this.roots.every((r) => r.amd) ? " (only AMD's roots are trusted; pass a test root explicitly to trust it)" : ""}`
          : `no trusted ${product} root`,
      );
      const ark = root!.ark;
      result.amdRoot = root!.amd;
      const ask = chainAsk ?? root!.ask;
      if (!ask) throw new CheckFailed("ask-signature", `no ASK: give the chain (ASK or ASVK, then ARK) for this ${product} root`);
      check("ark-signature", this.signedBy(ark, ark), () => `ARK "${ark.commonName}" is not self-signed with RSASSA-PSS SHA-384`);
      check("ask-signature", this.signedBy(ask, ark), () => `ASK "${ask.commonName}" is not signed by ARK "${ark.commonName}" (RSASSA-PSS SHA-384, salt 48)`);
      check("vcek-signature", this.signedBy(vcek, ask), () =>
        vcek.commonName === "SEV-VLEK" && !chainAsk
          ? `a VLEK is signed by AMD's ASVK, not the ASK: give the chain (ASVK then ARK)`
          : `${vcek.commonName === "SEV-VLEK" ? "VLEK" : "VCEK"} is not signed by "${ask.commonName}" (RSASSA-PSS SHA-384, salt 48)`,
      );
      const at = expect.at ?? new Date();
      for (const c of [ark, ask, vcek]) {
        const from = new Date(c.x509.validFrom);
        const to = new Date(c.x509.validTo);
        if (!(at >= from && at <= to)) throw new CheckFailed("cert-validity", `${c.label} "${c.commonName}" is valid from ${from.toISOString()} to ${to.toISOString()}, not at ${at.toISOString()}`);
      }
      passed.push("cert-validity");
      const names = [vcekProduct && ["VCEK product name", vcekProduct], chainProduct && ["ASK", chainProduct], ["ARK", root!.product], productFromCpuid(report.cpuid) && ["report CPUID", productFromCpuid(report.cpuid)]].filter(Boolean) as [string, Product][];
      const mismatch = names.find(([, p]) => p !== product);
      check("product", !mismatch, () => `expected product ${product}, but the ${mismatch![0]} says ${mismatch![1]}`);

      // The report says which key signed it (VCEK: one chip; VLEK: a cloud provider's key from
      // AMD); the certificate must be of that kind.
      const pub = vcek.publicKey;
      const vlek = report.keyInfo.signingKey === "vlek";
      const certKind = vcek.commonName === "SEV-VLEK" ? "vlek" : vcek.commonName === "SEV-VCEK" ? "vcek" : undefined;
      if (report.keyInfo.signingKey === "none") throw new CheckFailed("vcek-key", "report is unsigned (key_info says no signing key)");
      if (certKind !== report.keyInfo.signingKey) throw new CheckFailed("vcek-key", `report is signed by its ${report.keyInfo.signingKey.toUpperCase()} but the certificate given is "${vcek.commonName}"`);
      check("vcek-key", pub.asymmetricKeyType === "ec" && pub.asymmetricKeyDetails?.namedCurve === "secp384r1", () => "VCEK key is not ECDSA P-384");

      // The VCEK certifies one TCB of one chip: both must be what the report claims.
      const tcb = decodeTcb(report.reportedTcb, product);
      const want: [keyof TcbVersion, string][] = [["bootloader", KDS_OID.blSPL], ["tee", KDS_OID.teeSPL], ["snp", KDS_OID.snpSPL], ["microcode", KDS_OID.ucodeSPL]];
      if (product === "turin") want.unshift(["fmc", KDS_OID.fmcSPL]);
      for (const [field, oid] of want) {
        const v = extInteger(vcek, oid);
        if (v !== tcb[field]) throw new CheckFailed("vcek-tcb", `reported_tcb ${field} SPL is ${tcb[field]} but the VCEK is for ${v === undefined ? "(missing extension)" : v}`);
      }
      passed.push("vcek-tcb");
      if (vlek) {
        // Not bound to a chip; AMD issued it to the provider named in the certificate.
        check("chip-id", extString(vcek, KDS_OID.cspId) !== undefined, () => "VLEK certificate names no cloud provider (CSP_ID)");
      } else {
        const hwid = extHwId(vcek);
        // Turin VCEKs carry the 8-byte chip id; the report pads it with zeros to 64.
        const turinId = product === "turin" && hwid?.length === 8 && report.chipId.subarray(0, 8).equals(hwid) && report.chipId.subarray(8).every((x) => x === 0);
        check("chip-id", hwid !== undefined && (hwid.equals(report.chipId) || turinId), () =>
          report.chipId.every((x) => x === 0)
            ? "report chip_id is masked (all zero): cannot bind it to the VCEK"
            : `report chip_id ${hex(report.chipId).slice(0, 16)}… is not the VCEK's hwID ${hwid ? hex(hwid).slice(0, 16) : "(missing)"}…`,
        );
      }

      // Signature: ECDSA P-384 over SHA-384 of bytes 0x000–0x29F; r, s little-endian.
      const rs = Buffer.concat([Buffer.from(report.signature.r.subarray(0, 48)).reverse(), Buffer.from(report.signature.s.subarray(0, 48)).reverse()]);
      let sigOk = false;
      try {
        sigOk = cryptoVerify("sha384", signedPart(evidence.report), { key: pub, dsaEncoding: "ieee-p1363" }, rs);
      } catch {
        sigOk = false;
      }
      check("report-signature", sigOk, () => "the report's signature does not verify with the VCEK (bytes 0x000-0x29F altered, or another chip's VCEK)");

      // The caller's expectations.
      const eq = (name: CheckName, field: string, got: Buffer, wanted: Buffer | undefined): void => {
        if (wanted === undefined) return;
        check(name, got.equals(wanted), () => `${field} is ${hex(got)}, expected ${hex(wanted)}`);
      };
      eq("measurement", "measurement", report.measurement, expect.measurement);
      eq("report-data", "report_data", report.reportData, expect.reportData);
      eq("host-data", "host_data", report.hostData, expect.hostData);
      if (expect.vmpl !== undefined) check("vmpl", report.vmpl === expect.vmpl, () => `vmpl is ${report.vmpl}, expected ${expect.vmpl}`);
      const policy = decodePolicy(report.policy);
      check("policy-debug", !policy.debug || expect.allowDebug === true, () => `policy 0x${report.policy.toString(16)} allows DEBUG (the host can read guest memory); refused unless debug is allowed`);
      if (expect.forbidSmt) check("policy-smt", !policy.smt, () => `policy 0x${report.policy.toString(16)} allows SMT`);
      if (expect.forbidMigrateMa) check("policy-migrate-ma", !policy.migrateMa, () => `policy 0x${report.policy.toString(16)} allows a migration agent`);
      if (expect.requireSingleSocket) check("policy-single-socket", policy.singleSocket, () => `policy 0x${report.policy.toString(16)} does not require SINGLE_SOCKET`);
      if (expect.minTcb) {
        for (const [field, min] of Object.entries(expect.minTcb) as [keyof TcbVersion, number][]) {
          const got = tcb[field] ?? 0;
          if (got < min) throw new CheckFailed("min-tcb", `reported_tcb ${field} SPL ${got} is below the minimum ${min}`);
        }
        passed.push("min-tcb");
      }
      result.ok = true;
    } catch (err) {
      if (!(err instanceof CheckFailed)) throw err;
      result.failed = { check: err.check, reason: err.message };
    }
    return result;
  }
}

/** Throws REPORT_REJECTED naming the first failed check. */
export function assertVerified(result: VerifyResult): void {
  if (!result.ok) {
    throw new AirlockError("REPORT_REJECTED", `attestation report rejected: ${result.failed!.check}: ${result.failed!.reason}`, {
      hint: result.failed!.check === "root" ? "an emulated report verifies only with --trust-root naming the emulated PSP's ARK" : undefined,
    });
  }
}
