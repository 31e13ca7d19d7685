// verifyAttestedAuditLog on real signed logs shaped like the firewall's, attested by an emulated PSP
// (a test chain under a test ARK, the report binding the audit key as the firewall's does).
import { createHash, generateKeyPairSync } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EmulatedPsp } from "../../host-tools/src/attestation/emulated-psp.ts";
import { encodePolicy } from "../../proto/src/attestation/report.ts";
import { AUDIT_KINDS, AuditLog, auditKeyReportData, signerFromPrivateKey, verifyAttestedAuditLog } from "../../proto/src/audit/index.ts";
import type { AuditRecord, Json } from "../../proto/src/audit/index.ts";

const dir = mkdtempSync(path.join(tmpdir(), "airlock-audit-attested-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => path.join(dir, `log-${n++}.jsonl`);

const measurement = Buffer.alloc(48, 0x5a);
const hostData = Buffer.alloc(32, 0xd1);
let psp: EmulatedPsp;
let trustRoots: string[];
beforeAll(() => {
  psp = EmulatedPsp.createInMemory();
  trustRoots = [psp.arkPem];
}, 120_000); // two RSA-4096 keys

const spki = (k: KeyObject): Buffer => k.export({ type: "spki", format: "der" });

/** The firewall's attestation record for a key (firewall-vm/src/main.ts, step 2). */
function attestationData(publicKey: KeyObject, tamper?: (report: Buffer) => void): Record<string, Json> {
  const ev = psp.evidence({ measurement, hostData, policy: encodePolicy({ smt: true }) }, { reportData: auditKeyReportData(spki(publicKey)), vmpl: 0 });
  tamper?.(ev.report);
  return {
    provider: "emulated",
    measurement: measurement.toString("hex"),
    hostData: hostData.toString("hex"),
    auditKeySpkiSha256: createHash("sha256").update(spki(publicKey)).digest("hex"),
    report: ev.report.toString("base64"),
    vcek: ev.vcek.toString("base64"),
    chain: ev.chain!,
  };
}

type Rec = { kind: string; data: Json };

/** What a run records, in the firewall's order. */
function runRecords(attestation: Record<string, Json>): Rec[] {
  return [
    { kind: AUDIT_KINDS.manifestChecked, data: { room: "demo", digest: hostData.toString("hex"), inputs: 1, outputs: 1, collaborators: 1 } },
    { kind: AUDIT_KINDS.signatureChecked, data: { collaborator: "alice", ok: true, reason: null } },
    { kind: AUDIT_KINDS.attestation, data: attestation },
    { kind: AUDIT_KINDS.keyReleased, data: { keyId: "demo/corpus", input: "corpus", released: true } },
    { kind: AUDIT_KINDS.inputServed, data: { input: "corpus", served: true, bytes: 1234 } },
    { kind: AUDIT_KINDS.workloadStarted, data: {} },
    { kind: AUDIT_KINDS.workloadExited, data: { code: 0 } },
    { kind: AUDIT_KINDS.outputDecision, data: { output: "counts", decision: "withhold", reason: "scope" } },
  ];
}

/** Writes records through the real writer (hash chain, signed checkpoints every 3, closed). */
async function writeLog(privateKey: KeyObject, records: Rec[], close = true): Promise<string> {
  const file = fresh();
  const log = await AuditLog.create(file, { signer: signerFromPrivateKey(privateKey), checkpointEvery: 3, checkpointIntervalMs: 0 });
  for (const r of records) await log.append(r.kind, r.data);
  if (close) await log.close({ exitCode: 0 });
  else await log.abandon();
  return readFileSync(file, "utf8");
}

const genuineKey = generateKeyPairSync("ed25519");
let genuine: string;
beforeAll(async () => {
  genuine = await writeLog(genuineKey.privateKey, runRecords(attestationData(genuineKey.publicKey)));
}, 120_000);

const lines = (text: string): string[] => text.split("\n").slice(0, -1);
const parse = (l: string): AuditRecord => JSON.parse(l) as AuditRecord;
const text = (ls: string[]): string => ls.map((l) => `${l}\n`).join("");

describe("verifyAttestedAuditLog", () => {
  it("verifies a genuine closed log whose key the attestation report binds", () => {
    const v = verifyAttestedAuditLog(genuine, { trustRoots, measurement, hostData });
    expect(v.firstBad).toBeNull();
    expect(v).toMatchObject({ valid: true, end: "closed", alg: "ed25519" });
    expect(v.attestation).toMatchObject({ ok: true, seq: 2, provider: "emulated", product: "milan", amdRoot: false, measurement: measurement.toString("hex"), hostData: hostData.toString("hex"), failed: null });
    expect(v.attestation!.reportChecks).toContain("report-signature");
    expect(v.warnings.join("\n")).toMatch(/test root/);
    // report_data is exactly SHA-512("airlock-audit-key-v1\0" || SPKI DER), as the firewall computes it.
    const rd = createHash("sha512").update(Buffer.concat([Buffer.from("airlock-audit-key-v1\0"), spki(genuineKey.publicKey)])).digest();
    expect(auditKeyReportData(spki(genuineKey.publicKey)).equals(rd)).toBe(true);
  });

  it("fails a log edited and then re-signed with a fresh key (hashes recomputed, new checkpoints), naming the key binding", async () => {
    const attacker = generateKeyPairSync("ed25519");
    const records = lines(genuine)
      .map(parse)
      .filter((r) => r.kind !== "checkpoint" && r.kind !== "closed")
      .map((r) => ({ kind: r.kind, data: r.kind === AUDIT_KINDS.outputDecision ? { output: "counts", decision: "release", reason: "forged" } : r.data }));
    const forged = await writeLog(attacker.privateKey, records);
    // As a chain it is flawless: only the binding catches it.
    expect(verifyAttestedAuditLog(forged, { skipAttestation: true }).valid).toBe(true);
    const v = verifyAttestedAuditLog(forged, { trustRoots });
    expect(v.valid).toBe(false);
    expect(v.attestation?.failed?.check).toBe("key-binding");
    expect(v.firstBad).toMatchObject({ seq: 2, reason: expect.stringMatching(/the checkpoints are signed by a key the attestation report does not bind/) });
  });

  it("fails a log truncated after its first checkpoint by default; allowOpen accepts it with a warning", () => {
    const ls = lines(genuine);
    const firstCp = ls.findIndex((l) => parse(l).kind === "checkpoint");
    const cut = text(ls.slice(0, firstCp + 1));
    const v = verifyAttestedAuditLog(cut, { trustRoots });
    expect(v).toMatchObject({ valid: false, end: "checkpoint" });
    expect(v.firstBad?.reason).toMatch(/not closed/);
    const open = verifyAttestedAuditLog(cut, { trustRoots, allowOpen: true });
    expect(open.valid).toBe(true);
    expect(open.attestation?.ok).toBe(true);
    expect(open.warnings.join("\n")).toMatch(/not closed/);
    // An unsigned tail too: refused by default, accepted when open logs are.
    const tail = text(ls.slice(0, firstCp + 2));
    expect(verifyAttestedAuditLog(tail, { trustRoots }).firstBad?.reason).toMatch(/unsigned tail/);
    expect(verifyAttestedAuditLog(tail, { trustRoots, allowOpen: true }).valid).toBe(true);
  });

  it("fails a report whose signature is broken", async () => {
    const k = generateKeyPairSync("ed25519");
    const broken = await writeLog(
      k.privateKey,
      runRecords(
        attestationData(k.publicKey, (report) => {
          report[0x2a0 + 5] ^= 0x01; // a byte of the signature's r
        }),
      ),
    );
    const v = verifyAttestedAuditLog(broken, { trustRoots });
    expect(v.valid).toBe(false);
    expect(v.attestation?.failed?.check).toBe("report");
    expect(v.firstBad?.reason).toMatch(/the attestation report does not verify: report-signature/);
  });

  it("fails a log whose attestation record was removed (deleted, or the log rewritten without it)", async () => {
    const ls = lines(genuine);
    const at = ls.findIndex((l) => parse(l).kind === "attestation");
    expect(verifyAttestedAuditLog(text([...ls.slice(0, at), ...ls.slice(at + 1)]), { trustRoots }).firstBad?.reason).toMatch(/records were deleted/);
    const without = await writeLog(genuineKey.privateKey, runRecords({}).filter((r) => r.kind !== AUDIT_KINDS.attestation));
    const v = verifyAttestedAuditLog(without, { trustRoots });
    expect(v.valid).toBe(false);
    expect(v.attestation).toMatchObject({ seq: null, failed: { check: "record" } });
    expect(v.firstBad?.reason).toMatch(/holds no attestation record/);
    // Skipping the binding accepts it, and says loudly what that means.
    const skipped = verifyAttestedAuditLog(without, { skipAttestation: true });
    expect(skipped.valid).toBe(true);
    expect(skipped.attestation).toBeNull();
    expect(skipped.warnings[0]).toMatch(/NOT checked/);
  });

  it("refuses the emulated PSP's test root unless it is passed", () => {
    const v = verifyAttestedAuditLog(genuine);
    expect(v.valid).toBe(false);
    expect(v.attestation?.failed?.check).toBe("report");
    expect(v.firstBad?.reason).toMatch(/the attestation report does not verify: root: the chain's ARK "ARK-Milan-AIRLOCK-TEST" is not a trusted milan root/);
    // Another test root is no better.
    const other = EmulatedPsp.createInMemory();
    expect(verifyAttestedAuditLog(genuine, { trustRoots: [other.arkPem] }).firstBad?.reason).toMatch(/root:/);
  }, 120_000);

  it("checks the expected measurement and host_data, the record's own fields, and where the record sits", async () => {
    expect(verifyAttestedAuditLog(genuine, { trustRoots, measurement: Buffer.alloc(48, 1) }).firstBad?.reason).toMatch(/measurement is 5a5a.*, expected 0101/);
    expect(verifyAttestedAuditLog(genuine, { trustRoots, hostData: Buffer.alloc(32, 2) }).attestation?.failed?.check).toBe("host-data");
    const k = generateKeyPairSync("ed25519");
    const lying = await writeLog(k.privateKey, runRecords({ ...attestationData(k.publicKey), measurement: "00".repeat(48) }));
    expect(verifyAttestedAuditLog(lying, { trustRoots }).firstBad?.reason).toMatch(/says measurement "0000.*but the report/);
    const recs = runRecords(attestationData(k.publicKey));
    const late = await writeLog(k.privateKey, [recs[0]!, recs[3]!, recs[2]!, ...recs.slice(4)]);
    expect(verifyAttestedAuditLog(late, { trustRoots }).firstBad?.reason).toMatch(/after record seq 1 \("key.released"\)/);
    const twice = await writeLog(k.privateKey, [...recs, recs[2]!]);
    expect(verifyAttestedAuditLog(twice, { trustRoots }).firstBad?.reason).toMatch(/second attestation record/);
    const noVcek = await writeLog(k.privateKey, runRecords({ ...attestationData(k.publicKey), vcek: null }));
    expect(verifyAttestedAuditLog(noVcek, { trustRoots }).firstBad?.reason).toMatch(/carries no VCEK/);
  });

  it("reports chain faults before the binding, and a bad trusted root as an error", () => {
    const ls = lines(genuine);
    const i = ls.findIndex((l) => parse(l).kind === AUDIT_KINDS.inputServed);
    const edited = [...ls];
    edited[i] = edited[i]!.replace('"served":true', '"served":false');
    const v = verifyAttestedAuditLog(text(edited), { trustRoots });
    expect(v.firstBad?.reason).toMatch(new RegExp(`record seq ${i} was edited`));
    expect(v.attestation).toBeNull();
    expect(() => verifyAttestedAuditLog(genuine, { trustRoots: ["not a certificate"] })).toThrow();
  });
});
