// Certificate handling for the SNP chain (ARK → ASK → VCEK). Certificates are hostile input. Node's
// X509Certificate (OpenSSL) parses each one; a small bounds-checked DER walk below takes out the
// exact tbsCertificate bytes, the signature algorithm and the extensions (a schema-driven ASN.1
// library did the same ~50x slower, which mattered on the verifier's cold path). Every signature is
// checked by us with crypto.verify over tbsCertificate, so the RSASSA-PSS parameters AMD uses
// (SHA-384, MGF1-SHA-384, salt 48) are enforced rather than taken from the certificate.
import { constants, verify as cryptoVerify, X509Certificate } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { AirlockError } from "../errors.ts";

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
  /** VLEK only: the cloud provider the key was issued to. */
  cspId: "1.3.6.1.4.1.3704.1.5",
} as const;

const OID_RSASSA_PSS = "1.2.840.113549.1.1.10";
const OID_MGF1 = "1.2.840.113549.1.1.8";
const OID_SHA384 = "2.16.840.1.101.3.4.2.2";

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
  /** Where it came from, for messages: "VCEK". */
  label: string;
}

function certInvalid(label: string, reason: string, cause?: unknown): AirlockError {
  return new AirlockError("CERT_INVALID", `${label}: ${reason}`, {
    hint: "give DER or PEM X.509 certificates as published by AMD KDS (VCEK; chain = ASK then ARK)",
    cause,
  });
}

interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  at: number;
  start: number;
  end: number;
}

/** Reads the DER TLV at off, which must end by limit. */
function derTlv(buf: Buffer, off: number, label: string, limit = buf.length): Tlv {
  if (off + 2 > limit) throw certInvalid(label, "truncated DER");
  const tag = buf[off]!;
  if ((tag & 0x1f) === 0x1f) throw certInvalid(label, "multi-byte DER tags are not expected here");
  let len = buf[off + 1]!;
  let start = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > limit) throw certInvalid(label, "bad DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start + i]!;
    start += n;
  }
  const end = start + len;
  if (end > limit) throw certInvalid(label, "DER length runs past its container");
  return { tag, at: off, start, end };
}

/** The TLVs inside a constructed TLV. */
function derChildren(buf: Buffer, parent: Tlv, label: string): Tlv[] {
  const out: Tlv[] = [];
  for (let off = parent.start; off < parent.end; ) {
    const t = derTlv(buf, off, label, parent.end);
    out.push(t);
    off = t.end;
  }
  return out;
}

function derOid(buf: Buffer, t: Tlv, label: string): string {
  if (t.tag !== 0x06 || t.end === t.start) throw certInvalid(label, "expected an OBJECT IDENTIFIER");
  const parts: number[] = [];
  let v = 0;
  for (let i = t.start; i < t.end; i++) {
    v = v * 128 + (buf[i]! & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 256) throw certInvalid(label, "OBJECT IDENTIFIER arc too large");
    if (!(buf[i]! & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  if (buf[t.end - 1]! & 0x80) throw certInvalid(label, "truncated OBJECT IDENTIFIER");
  const first = parts.shift()!;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...parts].join(".");
}

/** AlgorithmIdentifier ::= SEQUENCE { OID, params OPTIONAL } → oid and the raw params TLV. */
function derAlgorithm(buf: Buffer, t: Tlv, label: string): { oid: string; params?: Buffer } {
  if (t.tag !== 0x30) throw certInvalid(label, "AlgorithmIdentifier is not a SEQUENCE");
  const kids = derChildren(buf, t, label);
  if (kids.length < 1 || kids.length > 2) throw certInvalid(label, "malformed AlgorithmIdentifier");
  const oid = derOid(buf, kids[0]!, label);
  return kids[1] ? { oid, params: buf.subarray(kids[1].at, kids[1].end) } : { oid };
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
  const [tbs, sigAlg, sigValue, ...extra] = derChildren(der, outer, label);
  if (!tbs || !sigAlg || !sigValue || extra.length > 0 || tbs.tag !== 0x30 || sigValue.tag !== 0x03) throw certInvalid(label, "Certificate must be SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }");
  if (sigValue.end - sigValue.start < 2 || der[sigValue.start] !== 0) throw certInvalid(label, "malformed signature BIT STRING");
  const signatureAlgorithm = derAlgorithm(der, sigAlg, label);
  const tbsKids = derChildren(der, tbs, label);
  let i = tbsKids[0]?.tag === 0xa0 ? 1 : 0; // explicit version
  const innerSigAlg = tbsKids[i + 1];
  if (!innerSigAlg || !der.subarray(innerSigAlg.at, innerSigAlg.end).equals(der.subarray(sigAlg.at, sigAlg.end))) {
    throw certInvalid(label, "tbsCertificate.signature differs from signatureAlgorithm");
  }
  i += 6; // serial, signature, issuer, validity, subject, subjectPublicKeyInfo
  const extensions = new Map<string, Buffer>();
  for (const t of tbsKids.slice(i)) {
    if (t.tag !== 0xa3) continue; // issuer/subject unique ids
    const seq = derTlv(der, t.start, label, t.end);
    if (seq.tag !== 0x30 || seq.end !== t.end) throw certInvalid(label, "malformed extensions");
    for (const e of derChildren(der, seq, label)) {
      const parts = e.tag === 0x30 ? derChildren(der, e, label) : [];
      const value = parts[parts.length - 1];
      if (parts.length < 2 || parts.length > 3 || value?.tag !== 0x04 || (parts.length === 3 && parts[1]!.tag !== 0x01)) throw certInvalid(label, "malformed extension");
      const oid = derOid(der, parts[0]!, label);
      if (extensions.has(oid)) throw certInvalid(label, `duplicate extension ${oid}`);
      extensions.set(oid, der.subarray(value.start, value.end));
    }
  }
  let x509: X509Certificate;
  let publicKey: KeyObject;
  try {
    x509 = new X509Certificate(der);
    publicKey = x509.publicKey;
  } catch (err) {
    throw certInvalid(label, `cannot parse certificate (${(err as Error).message})`, err);
  }
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(x509.subject)?.[1] ?? "";
  return {
    der,
    x509,
    publicKey,
    tbs: der.subarray(tbs.at, tbs.end),
    signatureAlgorithm,
    signature: der.subarray(sigValue.start + 1, sigValue.end),
    extensions,
    commonName: cn,
    label,
  };
}

/** True when the signature algorithm is RSASSA-PSS with exactly SHA-384, MGF1-SHA-384, salt 48 (trailer 1). */
export function isAmdPss(cert: ParsedCert): boolean {
  const alg = cert.signatureAlgorithm;
  if (alg.oid !== OID_RSASSA_PSS || !alg.params) return false;
  try {
    const p = alg.params;
    const seq = derTlv(p, 0, "PSS params");
    if (seq.tag !== 0x30 || seq.end !== p.length) return false;
    const fields = new Map(derChildren(p, seq, "PSS params").map((t) => [t.tag, t]));
    const inner = (tag: number): Tlv | undefined => {
      const t = fields.get(tag);
      return t ? derTlv(p, t.start, "PSS params", t.end) : undefined;
    };
    const isSha384 = (buf: Buffer, t: Tlv | undefined): boolean => {
      if (!t) return false;
      const a = derAlgorithm(buf, t, "PSS params");
      return a.oid === OID_SHA384 && (a.params === undefined || a.params.equals(Buffer.from([0x05, 0x00])));
    };
    const int = (t: Tlv | undefined): number | undefined => (t && t.tag === 0x02 && t.end - t.start === 1 ? p[t.start] : undefined);
    const mgf = inner(0xa1);
    if (!isSha384(p, inner(0xa0)) || !mgf) return false;
    const mgfAlg = derAlgorithm(p, mgf, "PSS params");
    if (mgfAlg.oid !== OID_MGF1 || !mgfAlg.params || !isSha384(mgfAlg.params, derTlv(mgfAlg.params, 0, "PSS params"))) return false;
    if (int(inner(0xa2)) !== 48) return false;
    return !fields.has(0xa3) || int(inner(0xa3)) === 1;
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
