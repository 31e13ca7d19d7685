// A test ARK → ASK → VCEK chain in AMD's certificate shapes (google/go-sev-guest's fake_certs.go
// does the same for Go): RSA-4096 ARK and ASK signed with RSASSA-PSS (SHA-384, MGF1-SHA-384,
// salt 48), a P-384 VCEK carrying the KDS extensions. CNs say TEST so nobody mistakes them for AMD's.
//
// Library choice: node:crypto signs but cannot build certificates. @peculiar/asn1-x509 (with
// asn1-schema and asn1-rsa) is a schema-only DER codec from the PKI.js/webcrypto maintainers: it
// lets us write exactly the RSASSA-PSS AlgorithmIdentifier and the raw KDS extensions, and leaves
// signing to node:crypto. @peculiar/x509 builds on the same schemas but signs through WebCrypto,
// and pkijs carries its own crypto engine; neither buys anything here.
import { constants, createHash, generateKeyPairSync, randomBytes, sign as cryptoSign } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  BasicConstraints,
  Certificate,
  Extension,
  Extensions,
  id_ce_basicConstraints,
  id_ce_keyUsage,
  KeyUsage,
  KeyUsageFlags,
  Name,
  RelativeDistinguishedName,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
} from "@peculiar/asn1-x509";
import { id_mgf1, id_RSASSA_PSS, id_sha384, RsaSaPssParams } from "@peculiar/asn1-rsa";
import type { Product, TcbVersion } from "../../../proto/src/attestation/report.ts";
import { KDS_OID } from "../../../proto/src/attestation/certs.ts";

const PRODUCT_NAME: Record<Product, string> = { milan: "Milan", genoa: "Genoa", turin: "Turin" };

function pssAlgorithm(): AlgorithmIdentifier {
  const sha384 = new AlgorithmIdentifier({ algorithm: id_sha384, parameters: null });
  const params = new RsaSaPssParams({
    hashAlgorithm: sha384,
    maskGenAlgorithm: new AlgorithmIdentifier({ algorithm: id_mgf1, parameters: AsnConvert.serialize(sha384) }),
    saltLength: 48,
  });
  return new AlgorithmIdentifier({ algorithm: id_RSASSA_PSS, parameters: AsnConvert.serialize(params) });
}

function amdName(cn: string): Name {
  // Same attribute order as AMD's certificates.
  const attrs: [string, string][] = [
    ["2.5.4.11", "Engineering"],
    ["2.5.4.6", "US"],
    ["2.5.4.7", "Santa Clara"],
    ["2.5.4.8", "CA"],
    ["2.5.4.10", "Advanced Micro Devices"],
    ["2.5.4.3", cn],
  ];
  return new Name(
    attrs.map(([type, v]) => new RelativeDistinguishedName([new AttributeTypeAndValue({ type, value: new AttributeValue(type === "2.5.4.6" ? { printableString: v } : { utf8String: v }) })])),
  );
}

function derInteger(n: number): Buffer {
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return Buffer.from([0x02, bytes.length, ...bytes]);
}

function ab(b: Buffer): ArrayBuffer {
  return new Uint8Array(b).buffer;
}

function ext(oid: string, value: Buffer, critical = false): Extension {
  return new Extension({ extnID: oid, critical, extnValue: new OctetString(ab(value)) });
}

/**
 * A certificate in AMD's shape (RSASSA-PSS algorithm, AMD's name attributes), signed by
 * `issuerKey` — or carrying the fixed `signature` bytes given instead, which parse like a real
 * signature and fail verification (the fuzzer's seeds).
 */
export function issueCertificate(options: {
  subject: string;
  issuer: string;
  subjectKey: KeyObject;
  serial: number;
  notBefore: Date;
  notAfter: Date;
  extensions: Extension[];
} & ({ issuerKey: KeyObject } | { signature: Buffer })): Buffer {
  const spki = AsnConvert.parse(options.subjectKey.export({ type: "spki", format: "der" }), SubjectPublicKeyInfo);
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: ab(derInteger(options.serial).subarray(2)),
    signature: pssAlgorithm(),
    issuer: amdName(options.issuer),
    validity: new Validity({ notBefore: options.notBefore, notAfter: options.notAfter }),
    subject: amdName(options.subject),
    subjectPublicKeyInfo: spki,
    extensions: new Extensions(options.extensions),
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const signature = "signature" in options ? options.signature : cryptoSign("sha384", tbsDer, { key: options.issuerKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 });
  const cert = new Certificate({ tbsCertificate: tbs, signatureAlgorithm: pssAlgorithm(), signatureValue: ab(signature) });
  return Buffer.from(AsnConvert.serialize(cert));
}

function caExtensions(pathLen?: number): Extension[] {
  return [
    ext(id_ce_basicConstraints, Buffer.from(AsnConvert.serialize(new BasicConstraints({ cA: true, ...(pathLen !== undefined ? { pathLenConstraint: pathLen } : {}) }))), true),
    ext(id_ce_keyUsage, Buffer.from(AsnConvert.serialize(new KeyUsage(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign))), true),
  ];
}

const ia5 = (s: string): Buffer => Buffer.concat([Buffer.from([0x16, s.length]), Buffer.from(s, "latin1")]);

/**
 * The KDS extensions of a VCEK (bound to `chipId`) or a VLEK (naming the cloud provider `cspId`):
 * product, the TCB's SPLs, and the hwID or csp_id as AMD stores them.
 */
export function kdsExtensions(product: Product, t: TcbVersion, bound: { chipId: Buffer } | { cspId: string }): Extension[] {
  const name = PRODUCT_NAME[product];
  return [
    ext(KDS_OID.structVersion, derInteger(0)),
    ext(KDS_OID.productName, ia5(`${name}-B0`)),
    ext(KDS_OID.blSPL, derInteger(t.bootloader)),
    ext(KDS_OID.teeSPL, derInteger(t.tee)),
    ext(KDS_OID.snpSPL, derInteger(t.snp)),
    ext(KDS_OID.ucodeSPL, derInteger(t.microcode)),
    ...(product === "turin" ? [ext(KDS_OID.fmcSPL, derInteger(t.fmc ?? 0))] : []),
    // AMD stores the hwID raw (not DER-wrapped); Turin VCEKs certify the 8-byte chip id. A VLEK
    // is not bound to a chip: it names the cloud provider instead.
    "cspId" in bound ? ext(KDS_OID.cspId, ia5(bound.cspId)) : ext(KDS_OID.hwID, product === "turin" ? bound.chipId.subarray(0, 8) : bound.chipId),
  ];
}

export function toPem(der: Buffer): string {
  return `-----BEGIN CERTIFICATE-----\n${der.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END CERTIFICATE-----\n`;
}

export interface TestChain {
  product: Product;
  arkDer: Buffer;
  askDer: Buffer;
  vcekDer: Buffer;
  /** The VCEK's private key: signs reports. */
  vcekKey: KeyObject;
  chipId: Buffer;
  tcb: TcbVersion;
}

export const TEST_CN_SUFFIX = "AIRLOCK-TEST";

/**
 * Creates a fresh test chain. The ARK and ASK private keys exist only inside this call: once the
 * VCEK is certified they are dropped, so no one (us included) can mint more certificates under
 * this test root. A new chain means a new root.
 */
export function createTestChain(options: { product: Product; tcb: TcbVersion; chipId?: Buffer; now?: Date; vlek?: { cspId: string } }): TestChain {
  const now = options.now ?? new Date();
  const name = PRODUCT_NAME[options.product];
  const notBefore = new Date(now.getTime() - 24 * 3600_000);
  const rsa = (): { publicKey: KeyObject; privateKey: KeyObject } => generateKeyPairSync("rsa", { modulusLength: 4096, publicExponent: 0x10001 });
  const ark = rsa();
  const ask = rsa();
  const vcek = generateKeyPairSync("ec", { namedCurve: "secp384r1" });
  const arkCn = `ARK-${name}-${TEST_CN_SUFFIX}`;
  // A VLEK chain has an ASVK ("SEV-VLEK-<Product>") where a VCEK chain has the ASK.
  const askCn = options.vlek ? `SEV-VLEK-${name}-${TEST_CN_SUFFIX}` : `SEV-${name}-${TEST_CN_SUFFIX}`;
  const years = (n: number): Date => new Date(notBefore.getTime() + n * 365 * 24 * 3600_000);
  const arkDer = issueCertificate({ subject: arkCn, issuer: arkCn, subjectKey: ark.publicKey, issuerKey: ark.privateKey, serial: 0x10000, notBefore, notAfter: years(25), extensions: caExtensions() });
  const askDer = issueCertificate({ subject: askCn, issuer: arkCn, subjectKey: ask.publicKey, issuerKey: ark.privateKey, serial: 0x10001, notBefore, notAfter: years(25), extensions: caExtensions(0) });
  const chipId = options.chipId ?? randomBytes(64);
  const kds = kdsExtensions(options.product, options.tcb, options.vlek ? { cspId: options.vlek.cspId } : { chipId });
  const vcekDer = issueCertificate({ subject: options.vlek ? "SEV-VLEK" : "SEV-VCEK", issuer: askCn, subjectKey: vcek.publicKey, issuerKey: ask.privateKey, serial: 0, notBefore, notAfter: years(7), extensions: kds });
  if (options.product === "turin") chipId.fill(0, 8);
  return { product: options.product, arkDer, askDer, vcekDer, vcekKey: vcek.privateKey, chipId, tcb: options.tcb };
}

/** sha256 of a DER certificate, for naming a root in messages. */
export function certFingerprint(der: Buffer): string {
  return createHash("sha256").update(der).digest("hex");
}
