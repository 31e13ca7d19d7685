// Certificate handling for the SNP chain (ARK → ASK → VCEK). Certificates are hostile input: they
// are parsed with a schema-driven ASN.1 parser (@peculiar/asn1-x509) and by node:crypto's
// X509Certificate, and every signature is checked by us with crypto.verify over the exact
// tbsCertificate bytes, so the RSASSA-PSS parameters AMD uses (SHA-384, MGF1-SHA-384, salt 48) are
// enforced rather than taken from the certificate.
import { constants, verify as cryptoVerify, X509Certificate } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier, Certificate } from "@peculiar/asn1-x509";
import { id_mgf1, id_RSASSA_PSS, id_sha384, RsaSaPssParams } from "@peculiar/asn1-rsa";
import { AirlockError } from "../../../proto/src/errors.ts";

/** AMD's KDS certificate extensions (VCEK/VLEK), under 1.3.6.1.4.1.3704.1. */
export const KDS_OID = {
  structVersion: "1.3.6.1.4.1.3704.1.1",
  productName: "1.3.6.1.4.1.3704.1.2",
  blSPL: "1.3.6.1.4.1.3704.1.3.1",
  teeSPL: "1.3.6.1.4.1.3704.1.3.2",
  snpSPL: "1.3.6.1.4.1.3704.1.3.3",
  ucodeSPL: "1.3.6.1.4.1.3704.1.3.8",
  fmcSPL: "1.3.6.1.4.1.3704.1.3.9",
  hwID: "1.3.6.1.4.1.3704.1.4",
} as const;

export interface ParsedCert {
  der: Buffer;
  x509: X509Certificate;
  publicKey: KeyObject;
  /** Raw DER of tbsCertificate: what the issuer signed. */
  tbs: Buffer;
  signatureAlgorithm: { oid: string; params?: Buffer };
  signature: Buffer;
  /** Extension OID → extnValue contents (the bytes inside the OCTET STRING). */
  extensions: Map<string, Buffer>;
  commonName: string;
  /** Where it came from, for messages: "VCEK (vcek.der)". */
  label: string;
}

function certInvalid(label: string, reason: string, cause?: unknown): AirlockError {
  return new AirlockError("CERT_INVALID", `${label}: ${reason}`, {
    hint: "give DER or PEM X.509 certificates as published by AMD KDS (VCEK; chain = ASK then ARK)",
    cause,
  });
}

/** Minimal DER header reader: returns [contentStart, contentEnd] of the TLV at off, bounds-checked. */
function derTlv(buf: Buffer, off: number, label: string): { tag: number; start: number; end: number } {
  if (off + 2 > buf.length) throw certInvalid(label, "truncated DER");
  const tag = buf[off]!;
  let len = buf[off + 1]!;
  let start = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > buf.length) throw certInvalid(label, "bad DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start + i]!;
    start += n;
  }
  const end = start + len;
  if (end > buf.length) throw certInvalid(label, "DER length runs past the end");
  return { tag, start, end };
}

/** Splits PEM text into DER certificates. */
export function pemToDers(pem: string, label: string): Buffer[] {
  const out: Buffer[] = [];
  const re = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;
  for (let m = re.exec(pem); m; m = re.exec(pem)) {
    const body = m[1]!.replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) throw certInvalid(label, "PEM body is not base64");
    out.push(Buffer.from(body, "base64"));
  }
  return out;
}

/** A certificate from DER bytes or PEM text (first certificate). */
export function toDer(data: Buffer | string, label: string): Buffer {
  const text = typeof data === "string" ? data : data.subarray(0, 64).includes("-----BEGIN") ? data.toString("latin1") : undefined;
  if (text === undefined) return data as Buffer;
  const ders = pemToDers(text, label);
  if (ders.length === 0) throw certInvalid(label, "no PEM certificate found");
  return ders[0]!;
}

export function parseCert(data: Buffer | string, label: string): ParsedCert {
  const der = toDer(data, label);
  const outer = derTlv(der, 0, label);
  if (outer.tag !== 0x30 || outer.end !== der.length) throw certInvalid(label, "not a DER certificate (outer SEQUENCE)");
  const tbsTlv = derTlv(der, outer.start, label);
  if (tbsTlv.tag !== 0x30) throw certInvalid(label, "tbsCertificate is not a SEQUENCE");
  let x509: X509Certificate;
  let asn: Certificate;
  try {
    x509 = new X509Certificate(der);
    asn = AsnConvert.parse(der, Certificate);
  } catch (err) {
    throw certInvalid(label, `cannot parse certificate (${(err as Error).message})`, err);
  }
  const extensions = new Map<string, Buffer>();
  for (const ext of asn.tbsCertificate.extensions ?? []) {
    if (extensions.has(ext.extnID)) throw certInvalid(label, `duplicate extension ${ext.extnID}`);
    extensions.set(ext.extnID, Buffer.from(ext.extnValue.buffer));
  }
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(x509.subject)?.[1] ?? "";
  const params = asn.signatureAlgorithm.parameters;
  return {
    der,
    x509,
    publicKey: x509.publicKey,
    tbs: der.subarray(outer.start, tbsTlv.end),
    signatureAlgorithm: { oid: asn.signatureAlgorithm.algorithm, ...(params ? { params: Buffer.from(params) } : {}) },
    signature: Buffer.from(asn.signatureValue),
    extensions,
    commonName: cn,
    label,
  };
}

/** True when the signature algorithm is RSASSA-PSS with exactly SHA-384, MGF1-SHA-384, salt 48. */
export function isAmdPss(cert: ParsedCert): boolean {
  const alg = cert.signatureAlgorithm;
  if (alg.oid !== id_RSASSA_PSS || !alg.params) return false;
  try {
    const p = AsnConvert.parse(alg.params, RsaSaPssParams);
    if (p.hashAlgorithm.algorithm !== id_sha384 || p.maskGenAlgorithm.algorithm !== id_mgf1) return false;
    if (!p.maskGenAlgorithm.parameters) return false;
    const mgfHash = AsnConvert.parse(p.maskGenAlgorithm.parameters, AlgorithmIdentifier);
    return mgfHash.algorithm === id_sha384 && p.saltLength === 48 && p.trailerField === 1;
  } catch {
    return false;
  }
}

/** Verifies cert's RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48) signature with issuerKey. */
export function verifyPssSignature(cert: ParsedCert, issuerKey: KeyObject): boolean {
  if (!isAmdPss(cert) || issuerKey.asymmetricKeyType !== "rsa") return false;
  try {
    return cryptoVerify("sha384", cert.tbs, { key: issuerKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }, cert.signature);
  } catch {
    return false;
  }
}

/** Reads a DER INTEGER (small, non-negative) from an extension value. */
export function extInteger(cert: ParsedCert, oid: string): number | undefined {
  const v = cert.extensions.get(oid);
  if (v === undefined) return undefined;
  const t = derTlv(v, 0, `${cert.label} extension ${oid}`);
  if (t.tag !== 0x02 || t.end !== v.length || t.end - t.start < 1 || t.end - t.start > 5) throw certInvalid(cert.label, `extension ${oid} is not a small INTEGER`);
  let n = 0;
  for (let i = t.start; i < t.end; i++) n = n * 256 + v[i]!;
  if (v[t.start]! & 0x80) throw certInvalid(cert.label, `extension ${oid} is negative`);
  return n;
}

/** Reads a DER IA5String/UTF8String/PrintableString from an extension value. */
export function extString(cert: ParsedCert, oid: string): string | undefined {
  const v = cert.extensions.get(oid);
  if (v === undefined) return undefined;
  const t = derTlv(v, 0, `${cert.label} extension ${oid}`);
  if (![0x16, 0x0c, 0x13].includes(t.tag) || t.end !== v.length) throw certInvalid(cert.label, `extension ${oid} is not a string`);
  return v.subarray(t.start, t.end).toString("latin1");
}

/** The hwID extension: AMD stores the raw chip id bytes, not DER-wrapped. */
export function extHwId(cert: ParsedCert): Buffer | undefined {
  return cert.extensions.get(KDS_OID.hwID);
}
