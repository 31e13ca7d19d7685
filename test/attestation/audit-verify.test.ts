// `airlock audit verify` as a user runs it: real signed logs attested by an emulated PSP kept in a
// state folder (as `airlock run` keeps it), a real process, exit statuses.
import { execFile } from "node:child_process";
import { createHash, generateKeyPairSync } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodePolicy } from "../../proto/src/attestation/report.ts";
import { AUDIT_KINDS, AuditLog, auditKeyReportData, signerFromPrivateKey } from "../../proto/src/audit/index.ts";
import type { AuditRecord, Json } from "../../proto/src/audit/index.ts";
import { EmulatedPsp } from "../../host-tools/src/attestation/emulated-psp.ts";

const repo = path.resolve(import.meta.dirname, "../..");
const tmp = mkdtempSync(path.join(tmpdir(), "airlock-audit-verify-"));
const state = path.join(tmp, "state");
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function airlock(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env, AIRLOCK_STATE: state };
    execFile(process.execPath, ["--import", "tsx", path.join(repo, "host-tools/src/main.ts"), ...args], { cwd: repo, env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 99) : 0, stdout, stderr });
    });
  });
}

const measurement = "5a".repeat(48);
const hostData = "d1".repeat(32);
let psp: EmulatedPsp;
const ark = path.join(state, "psp", "ark.pem");

async function writeLog(name: string, privateKey: KeyObject, opts: { attest?: boolean; close?: boolean } = {}): Promise<string> {
  const file = path.join(tmp, name);
  const log = await AuditLog.create(file, { signer: signerFromPrivateKey(privateKey), checkpointEvery: 3, checkpointIntervalMs: 0 });
  const spki = signerFromPrivateKey(privateKey).publicKey.export({ type: "spki", format: "der" });
  await log.append(AUDIT_KINDS.manifestChecked, { room: "demo", digest: hostData });
  if (opts.attest !== false) {
    const ev = psp.evidence({ measurement: Buffer.from(measurement, "hex"), hostData: Buffer.from(hostData, "hex"), policy: encodePolicy({ smt: true }) }, { reportData: auditKeyReportData(spki), vmpl: 0 });
    const data: Record<string, Json> = {
      provider: "emulated",
      measurement,
      hostData,
      auditKeySpkiSha256: createHash("sha256").update(spki).digest("hex"),
      report: ev.report.toString("base64"),
      vcek: ev.vcek.toString("base64"),
      chain: ev.chain!,
    };
    await log.append(AUDIT_KINDS.attestation, data);
  }
  for (const o of ["a", "b", "c", "d"]) await log.append(AUDIT_KINDS.outputDecision, { output: o, decision: "withhold", reason: "scope" });
  if (opts.close === false) await log.abandon();
  else await log.close({ exitCode: 0 });
  return file;
}

let genuine: string;
let forged: string;
let cut: string;
let unattested: string;
beforeAll(async () => {
  psp = EmulatedPsp.open(path.join(state, "psp")); // where `airlock run` keeps it (AIRLOCK_STATE/psp)
  const key = generateKeyPairSync("ed25519").privateKey;
  genuine = await writeLog("genuine.jsonl", key);
  // Edited, then re-signed with a fresh key: the genuine attestation record kept, hashes recomputed.
  const recs = readFileSync(genuine, "utf8").split("\n").slice(0, -1).map((l) => JSON.parse(l) as AuditRecord);
  const forgedFile = path.join(tmp, "forged.jsonl");
  const log = await AuditLog.create(forgedFile, { signer: signerFromPrivateKey(generateKeyPairSync("ed25519").privateKey), checkpointEvery: 3, checkpointIntervalMs: 0 });
  for (const r of recs.filter((x) => x.kind !== "checkpoint" && x.kind !== "closed")) await log.append(r.kind, r.kind === AUDIT_KINDS.outputDecision ? { ...(r.data as Record<string, Json>), decision: "release" } : r.data);
  await log.close({ exitCode: 0 });
  forged = forgedFile;
  const lines = readFileSync(genuine, "utf8").split("\n");
  const firstCp = lines.findIndex((l) => l.includes('"kind":"checkpoint"'));
  cut = path.join(tmp, "cut.jsonl");
  writeFileSync(cut, lines.slice(0, firstCp + 1).join("\n") + "\n");
  unattested = await writeLog("unattested.jsonl", generateKeyPairSync("ed25519").privateKey, { attest: false });
}, 120_000);

describe("airlock audit verify", () => {
  it("exits 0 on a genuine closed log with the emulated PSP's root trusted, 1 without it", async () => {
    const [ok, json, untrusted] = await Promise.all([
      airlock("audit", "verify", genuine, "--emulated-psp"),
      airlock("audit", "verify", genuine, "--trust-root", ark, "--measurement", measurement, "--host-data", hostData, "--json"),
      airlock("audit", "verify", genuine),
    ]);
    expect(ok.stderr).toBe("");
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/verifies — 9 records, closed by a signed record/);
    expect(ok.stdout).toMatch(/key bound by the attestation report in record seq 1 \(emulated, milan; verified up to a TEST root/);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ valid: true, end: "closed", attestation: { ok: true, amdRoot: false, measurement, hostData } });
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/the attestation report does not verify: root: .*ARK-Milan-AIRLOCK-TEST.*\[AUDIT_INVALID\]/);
    expect(untrusted.stderr).toMatch(/hint: .*--emulated-psp/);
  });

  it("exits 1 naming the failure: a re-signed log, a truncated log, a missing attestation, a wrong measurement", async () => {
    const [resigned, truncated, open, alias, missing, skipped, wrong] = await Promise.all([
      airlock("audit", "verify", forged, "--emulated-psp"),
      airlock("audit", "verify", cut, "--emulated-psp"),
      airlock("audit", "verify", cut, "--emulated-psp", "--allow-open"),
      airlock("audit", "verify", cut, "--emulated-psp", "--allow-unsigned-tail"),
      airlock("audit", "verify", unattested, "--emulated-psp"),
      airlock("audit", "verify", unattested, "--no-attestation"),
      airlock("audit", "verify", genuine, "--emulated-psp", path.join(state, "psp"), "--measurement", "00".repeat(48)),
    ]);
    expect(resigned.code).toBe(1);
    expect(resigned.stderr).toMatch(/the checkpoints are signed by a key the attestation report does not bind/);
    expect(truncated.code).toBe(1);
    expect(truncated.stderr).toMatch(/not closed.*\n.*hint: .*--allow-open/);
    expect(open.code).toBe(0);
    expect(open.stdout).toMatch(/ends at a signed checkpoint \(not closed\)/);
    expect(open.stdout).toMatch(/warning: the log is not closed/);
    expect(alias.code).toBe(0);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/holds no attestation record/);
    expect(skipped.code).toBe(0);
    expect(skipped.stderr).toMatch(/WARNING: --no-attestation/);
    expect(skipped.stdout).toMatch(/warning: the attestation binding was NOT checked/);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/measurement is 5a5a.*, expected 0000/);
  });

  it("exits 2 for input it cannot read", async () => {
    const results = await Promise.all([
      airlock("audit", "verify", path.join(tmp, "nothere.jsonl")),
      airlock("audit", "verify", genuine, "--trust-root", path.join(tmp, "nothere.pem")),
      airlock("audit", "verify", genuine, "--emulated-psp", path.join(tmp, "no-psp")),
      airlock("audit", "verify", genuine, "--emulated-psp", "--measurement", "zz"),
      airlock("audit", "verify", genuine, "--trust-root", genuine),
      airlock("audit", "verify", genuine, "--no-attestation", "--trust-root", ark),
    ]);
    expect(results.map((r) => r.code)).toEqual([2, 2, 2, 2, 2, 2]);
    expect(results[2]!.stderr).toMatch(/no emulated PSP there/);
  });
});
