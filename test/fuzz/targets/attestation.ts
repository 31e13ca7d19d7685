// Fuzz targets on attestation evidence: the SNP report codec and certificate DER.
import { issueCertificate, kdsExtensions } from "../../../host-tools/src/attestation/test-chain.ts";
import { AMD_ROOTS } from "../../../proto/src/attestation/amd-roots.ts";
import { extHwId, extInteger, extString, isAmdPss, KDS_OID, parseCert, pemToDers, verifyPssSignature } from "../../../proto/src/attestation/certs.ts";
import { decodePolicy, decodeTcb, encodePolicy, encodeTcb, parseReport, PRODUCTS, productFromCpuid, reportToJson, serializeReport, SIGNATURE_ALGO_ECDSA_P384_SHA384, tcbReservedBytesSet } from "../../../proto/src/attestation/report.ts";
import type { AttestationReport } from "../../../proto/src/attestation/report.ts";
import { AirlockError } from "../../../proto/src/errors.ts";
import { Violation, type DecoderTarget, type TargetFactory } from "../engine.ts";
import { dictionary, type Field, type Seed } from "../mutate.ts";
import { fixedBytes, fixedP384 } from "../keys.ts";

/**
 * A VCEK (or VLEK) in AMD's shape (host-tools' test chain): P-384 key from a fixed scalar, the KDS
 * extensions, RSASSA-PSS algorithm. Its signature is fixed bytes (the ASK's private key is AMD's):
 * it parses like a real one and fails verification, as a forged one would.
 */
function kdsCert(kind: "vcek" | "vlek"): Buffer {
  return issueCertificate({
    subject: kind === "vcek" ? "SEV-VCEK" : "SEV-VLEK",
    issuer: kind === "vcek" ? "SEV-Milan" : "SEV-VLEK-Milan",
    subjectKey: fixedP384(`${kind} key`).publicKey,
    serial: 0,
    notBefore: new Date("2024-01-01T00:00:00Z"),
    notAfter: new Date("2031-01-01T00:00:00Z"),
    extensions: kdsExtensions("milan", { bootloader: 3, tee: 0, snp: 8, microcode: 115 }, kind === "vcek" ? { chipId: fixedBytes("chip id", 64) } : { cspId: "airlock-fuzz-csp" }),
    signature: fixedBytes(`${kind} signature`, 512),
  });
}

/** Offsets of every DER length in a certificate (constructed TLVs are walked). */
function derFields(der: Buffer): Field[] {
  const fields: Field[] = [];
  const walk = (start: number, end: number, depth: number): void => {
    for (let off = start; off + 2 <= end && depth < 12; ) {
      const tag = der[off]!;
      let len = der[off + 1]!;
      let body = off + 2;
      if (len & 0x80) {
        const n = len & 0x7f;
        if (n === 1 || n === 2 || n === 4) fields.push({ off: off + 2, size: n, le: false });
        len = 0;
        for (let i = 0; i < n; i++) len = len * 256 + der[off + 2 + i]!;
        body += n;
      } else {
        fields.push({ off: off + 1, size: 1, le: false });
      }
      if (tag & 0x20) walk(body, Math.min(end, body + len), depth + 1);
      off = body + len;
    }
  };
  walk(0, der.length, 0);
  return fields;
}

function report(version: number, product: "milan" | "genoa" | "turin"): AttestationReport {
  const tcb = encodeTcb(product === "turin" ? { fmc: 1, bootloader: 2, tee: 3, snp: 4, microcode: 5 } : { bootloader: 3, tee: 0, snp: 8, microcode: 115 }, product);
  const cpuid = { milan: { family: 0x19, model: 0x01, stepping: 1 }, genoa: { family: 0x19, model: 0x11, stepping: 1 }, turin: { family: 0x1a, model: 0x02, stepping: 1 } }[product];
  const sig = (label: string): Buffer => Buffer.concat([fixedBytes(label, 48), Buffer.alloc(24)]);
  return {
    version,
    guestSvn: 1,
    policy: encodePolicy({ abiMajor: 1, abiMinor: 55, smt: true, singleSocket: version === 5 }),
    familyId: fixedBytes("family", 16),
    imageId: fixedBytes("image", 16),
    vmpl: 0,
    signatureAlgo: SIGNATURE_ALGO_ECDSA_P384_SHA384,
    currentTcb: tcb,
    platformInfo: 1n,
    keyInfo: { authorKeyEn: version === 4, maskChipKey: false, signingKey: version === 5 ? "vlek" : "vcek" },
    reportData: fixedBytes("report data", 64),
    measurement: fixedBytes("measurement", 48),
    hostData: fixedBytes("host data", 32),
    idKeyDigest: Buffer.alloc(48),
    authorKeyDigest: Buffer.alloc(48),
    reportId: fixedBytes("report id", 32),
    reportIdMa: Buffer.alloc(32, 0xff),
    reportedTcb: tcb,
    ...(version >= 3 ? { cpuid } : {}),
    chipId: fixedBytes("chip id", 64),
    committedTcb: tcb,
    currentVersion: { major: 1, minor: 55, build: 21 },
    committedVersion: { major: 1, minor: 55, build: 21 },
    launchTcb: tcb,
    ...(version >= 4 ? { launchMitVector: 3n, currentMitVector: 7n } : {}),
    signature: { r: sig("r"), s: sig("s") },
  };
}

const REPORT_FIELDS: Field[] = [
  { off: 0x000, size: 4, le: true },
  { off: 0x008, size: 8, le: true },
  { off: 0x008, size: 4, le: true },
  { off: 0x030, size: 4, le: true },
  { off: 0x034, size: 4, le: true },
  { off: 0x048, size: 4, le: true },
  { off: 0x188, size: 1, le: true },
  { off: 0x189, size: 1, le: true },
  { off: 0x1f8, size: 8, le: true },
];

interface AttestationSeeds {
  reports: Seed[];
  certs: Seed[];
  vcekDer: Buffer;
  chainPem: string;
}

let cached: AttestationSeeds | undefined;

/** Reports of every version, AMD's ARKs and ASKs, and a VCEK and a VLEK in AMD's shape. */
export function attestationSeeds(): AttestationSeeds {
  if (cached) return cached;
  const reports: Seed[] = [
    { name: "v2 milan", data: serializeReport(report(2, "milan")), fields: REPORT_FIELDS },
    { name: "v3 genoa", data: serializeReport(report(3, "genoa")), fields: REPORT_FIELDS },
    { name: "v4 turin", data: serializeReport(report(4, "turin")), fields: REPORT_FIELDS },
    { name: "v5 milan vlek", data: serializeReport(report(5, "milan")), fields: REPORT_FIELDS },
  ];
  const vcekDer = kdsCert("vcek");
  const vlekDer = kdsCert("vlek");
  const certs: Seed[] = [
    { name: "VCEK", data: vcekDer, fields: derFields(vcekDer) },
    { name: "VLEK", data: vlekDer, fields: derFields(vlekDer) },
  ];
  for (const p of PRODUCTS) {
    for (const which of ["ark", "ask"] as const) {
      const der = pemToDers(AMD_ROOTS[p][which], p)[0]!;
      certs.push({ name: `AMD ${which} ${p}`, data: der, fields: derFields(der) });
    }
  }
  certs.push({ name: "AMD ASK milan, PEM", data: Buffer.from(AMD_ROOTS.milan.ask) });
  cached = { reports, certs, vcekDer, chainPem: AMD_ROOTS.milan.ask + AMD_ROOTS.milan.ark };
  return cached;
}

const snpReport: TargetFactory = {
  name: "snp-report",
  what: "SEV-SNP attestation reports (report.ts parseReport, then what the verifier reads from one)",
  create(): DecoderTarget {
    const run = (input: Buffer): void => {
      const r = parseReport(input);
      // What parses must serialize back to the same bytes: nothing read is lost or invented.
      if (!serializeReport(r).equals(input)) throw new Violation("serializeReport(parseReport(x)) differs from x");
      decodePolicy(r.policy);
      for (const p of PRODUCTS) {
        reportToJson(r, p);
        decodeTcb(r.currentTcb, p);
        tcbReservedBytesSet(r.reportedTcb, p);
      }
      productFromCpuid(r.cpuid);
    };
    return { name: this.name, what: this.what, seeds: attestationSeeds().reports, dict: [], maxLen: 4096, run };
  },
};

const certs: TargetFactory = {
  name: "certs",
  what: "X.509 certificates in DER or PEM (certs.ts parseCert, its KDS extension readers, isAmdPss, verifyPssSignature)",
  create(): DecoderTarget {
    const ark = parseCert(AMD_ROOTS.milan.ark, "ARK");
    const ask = parseCert(AMD_ROOTS.milan.ask, "ASK");
    const run = (input: Buffer): void => {
      const c = parseCert(input, "VCEK");
      for (const read of [
        () => [KDS_OID.structVersion, KDS_OID.blSPL, KDS_OID.teeSPL, KDS_OID.snpSPL, KDS_OID.ucodeSPL, KDS_OID.fmcSPL].forEach((o) => extInteger(c, o)),
        () => extString(c, KDS_OID.productName),
        () => extString(c, KDS_OID.cspId),
        () => extHwId(c),
      ]) {
        try {
          read();
        } catch (err) {
          if (!(err instanceof AirlockError)) throw err;
        }
      }
      isAmdPss(c);
      verifyPssSignature(c, ark.publicKey);
      verifyPssSignature(c, ask.publicKey);
      if (!c.der.subarray(0, 1).equals(Buffer.from([0x30]))) throw new Violation("a certificate that does not start with a SEQUENCE parsed");
      if (c.tbs.length >= c.der.length) throw new Violation("tbsCertificate is not inside the certificate");
    };
    return {
      name: this.name,
      what: this.what,
      seeds: attestationSeeds().certs,
      dict: dictionary("\x30\x82", "\x30\x80", "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a", "\x06\x0a\x2b\x06\x01\x04\x01\x9c\x78\x01\x01", "\x02\x01\x00", "\x02\x84\xff\xff\xff\xff", "\x04\x00", "\x05\x00", "\xa3\x03", "\x16\x00", "-----BEGIN CERTIFICATE-----\n", "\n-----END CERTIFICATE-----\n"),
      maxLen: 16 * 1024,
      run,
    };
  },
};

export const attestationTargets: TargetFactory[] = [snpReport, certs];
