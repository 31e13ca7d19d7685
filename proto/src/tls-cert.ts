// A self-signed TLS certificate for a key made inside a VM (the service API's, in the firewall):
// nobody vouches for it but the attestation evidence, which binds the key's hash
// (proto/airlock/v1/service.proto), so clients pin the key, not a CA. node:crypto signs but cannot
// build certificates; @peculiar/asn1-x509 (already the project's DER codec for AMD's
// certificates, host-tools/src/attestation/test-chain.ts says why) writes the structure.
import { createHash, randomBytes, sign, type KeyObject } from "node:crypto";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  Certificate,
  Extension,
  Extensions,
  GeneralName,
  id_ce_subjectAltName,
  Name,
  RelativeDistinguishedName,
  SubjectAlternativeName,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
} from "@peculiar/asn1-x509";

const ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";
const COMMON_NAME = "2.5.4.3";

/** PEM of a certificate for `key` (ECDSA P-256), self-signed, naming `dnsNames` and `ipAddresses`. */
export function selfSignedCertificate(options: { privateKey: KeyObject; publicKey: KeyObject; commonName: string; dnsNames: string[]; ipAddresses: string[]; notBefore: Date; notAfter: Date }): string {
  const name = new Name([new RelativeDistinguishedName([new AttributeTypeAndValue({ type: COMMON_NAME, value: new AttributeValue({ utf8String: options.commonName }) })])]);
  const san = new SubjectAlternativeName([
    ...options.dnsNames.map((dNSName) => new GeneralName({ dNSName })),
    ...options.ipAddresses.map((ip) => new GeneralName({ iPAddress: ip })),
  ]);
  const algorithm = new AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA256 });
  const serial = randomBytes(16);
  serial[0]! &= 0x7f; // a positive INTEGER
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: ab(serial),
    signature: algorithm,
    issuer: name,
    validity: new Validity({ notBefore: options.notBefore, notAfter: options.notAfter }),
    subject: name,
    subjectPublicKeyInfo: AsnConvert.parse(options.publicKey.export({ type: "spki", format: "der" }), SubjectPublicKeyInfo),
    extensions: new Extensions([new Extension({ extnID: id_ce_subjectAltName, critical: false, extnValue: new OctetString(AsnConvert.serialize(san)) })]),
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const signature = sign("sha256", tbsDer, { key: options.privateKey, dsaEncoding: "der" });
  const der = Buffer.from(AsnConvert.serialize(new Certificate({ tbsCertificate: tbs, signatureAlgorithm: algorithm, signatureValue: ab(signature) })));
  return `-----BEGIN CERTIFICATE-----\n${der.toString("base64").replace(/.{1,64}/g, "$&\n")}-----END CERTIFICATE-----\n`;
}

/** SHA-256 (hex) of a public key's DER SubjectPublicKeyInfo: what clients pin. */
export function spkiSha256(publicKey: KeyObject): string {
  return createHash("sha256").update(publicKey.export({ type: "spki", format: "der" })).digest("hex");
}

function ab(b: Buffer): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer;
}
