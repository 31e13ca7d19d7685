// Issue 8 end to end with real QEMU guests, a hostile room: a re-grant under a look-alike manifest,
// and a data owner's input that the room declares PUBLIC. The owner (test/rooms/owner-scope/owner.yaml,
// room `ward`) encrypts `records` with the `age` CLI to an identity they keep and grants it, default
// scope, to their manifest. A hostile author's look-alike (look-alike.yaml: same room, input, file and
// workload; the input labelled PUBLIC; an open output `leak` the workload fills with the input)
// 1. is refused before any workload against the owner's grant (its digest asks for another key id);
// 2. once the owner grants it too, the ordinary way (grant warns), completes but `leak` is withheld:
//    the owner's signed USER_PRIVATE holds the sandbox above what an open output may carry;
// 3. cannot get a grant below USER_PRIVATE without --allow-scope-below-user-private (exit 2).
// The input's marker appears nowhere on the host in clear (verbatim, hex, base64).
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { airlock, killQemus, repoRoot, testStateDir } from "../helpers.ts";
import { ageKeygen, auditRecords, filesContaining } from "./room-setup.ts";

const t0 = Date.now();
const MARKER = `WARD-MARKER-${randomBytes(9).toString("hex")}`;
const RECORDS = `ward 7, bed 3: ${MARKER}\nward 7, bed 4: discharged\n`;

// One host, one airlock state (the embedded key broker holds the owner's grants); the owner's
// identity sits apart from the room folder the author controls.
const dir = mkdtempSync(path.join(tmpdir(), "airlock-room-owner-scope-"));
const roomDir = path.join(dir, "room");
const ownerDir = path.join(dir, "owner");
const investigatorKey = path.join(dir, "investigator", "investigator.key");
const ownerKey = path.join(ownerDir, "owner.key");
const state = testStateDir();
const env = { AIRLOCK_STATE: state };
const ownerManifest = path.join(roomDir, "owner.yaml");
const lookAlike = path.join(roomDir, "look-alike.yaml");
const outRefused = path.join(dir, "out-refused");
const outGranted = path.join(dir, "out-granted");
const keysDir = path.join(state, "kbs", "keys");

let ownerKeyId = "";

/** The marker as it would appear verbatim, hex-encoded, or inside base64 at any alignment. */
function markerForms(marker: string): string[] {
  const m = Buffer.from(marker);
  const forms = [marker, m.toString("hex"), m.toString("hex").toUpperCase()];
  for (const k of [0, 1, 2]) {
    for (const enc of ["base64", "base64url"] as const) {
      const b = Buffer.concat([Buffer.alloc(k), m]).toString(enc).replace(/=+$/, "");
      // Characters that depend on the marker's bytes alone: drop the group shared with the k
      // leading bytes, and a trailing partial group.
      const start = k === 0 ? 0 : 4;
      const end = (k + m.length) % 3 === 0 ? b.length : 4 * Math.floor((k + m.length) / 3);
      forms.push(b.slice(start, end));
    }
  }
  return [...new Set(forms)];
}

/** Files under `dirs` holding the marker in any of its forms (form → files). */
function markerHits(dirs: string[]): Record<string, string[]> {
  const hits: Record<string, string[]> = {};
  for (const f of markerForms(MARKER)) {
    const h = filesContaining(dirs, f);
    if (h.length > 0) hits[f] = h;
  }
  return hits;
}

/**
 * Every regular file under the temp folder written since this test started (other tests' files
 * come and go: a vanished one is skipped), holding any form of the marker.
 */
function markerHitsInTmp(): string[] {
  const needles = markerForms(MARKER).map((f) => Buffer.from(f));
  const hits: string[] = [];
  const walk = (p: string): void => {
    try {
      const st = lstatSync(p);
      if (st.isDirectory()) {
        for (const n of readdirSync(p)) walk(path.join(p, n));
      } else if (st.isFile() && st.mtimeMs >= t0 - 1000 && st.size <= 64 << 20) {
        const bytes = readFileSync(p);
        if (needles.some((n) => bytes.includes(n))) hits.push(p);
      }
    } catch {
      // gone meanwhile, or not ours to read
    }
  };
  walk(tmpdir());
  return hits;
}

function noMarkerOnHost(extra: string[]): void {
  expect(markerHits([...extra, state, roomDir])).toEqual({});
  expect(markerHitsInTmp()).toEqual([]);
}

function keyFiles(): Map<string, Buffer> {
  return new Map(readdirSync(keysDir).map((n) => [n, readFileSync(path.join(keysDir, n))]));
}

const verifyAudit = (out: string) => airlock(["audit", "verify", path.join(out, "audit.log"), "--trust-root", path.join(state, "psp", "ark.pem")], env);
const run = (manifest: string, out: string) => airlock(["run", manifest, "--out", out, "--accel", "tcg"], env, 280_000);

beforeAll(async () => {
  // The scan's needles find the records however they are encoded, wherever the marker sits in them.
  const forms = markerForms(MARKER);
  for (const pad of ["", "x", "xy"]) {
    const bytes = Buffer.from(pad + RECORDS);
    for (const enc of ["hex", "base64", "base64url"] as const) expect(forms.some((f) => bytes.toString(enc).includes(f)), `${enc} at +${pad.length}`).toBe(true);
  }
  cpSync(path.join(repoRoot, "test/rooms/owner-scope"), roomDir, { recursive: true });
  for (const d of [path.join(roomDir, "keys"), path.join(roomDir, "data"), ownerDir, path.dirname(investigatorKey)]) mkdirSync(d, { recursive: true });
  writeFileSync(path.join(roomDir, "keys/investigator.pub"), `${ageKeygen(investigatorKey)}\n`);
  // The owner encrypts with the `age` CLI (the clear text goes through a pipe, never a file) to an
  // identity they keep, then grants it to their manifest the ordinary way (default scope).
  const recipient = ageKeygen(ownerKey);
  execFileSync("age", ["-r", recipient, "-o", path.join(roomDir, "data/records.txt.age")], { input: RECORDS });
  const g = await airlock(["manifest", "grant", ownerManifest, "--input", "records", "--identity", ownerKey], env);
  expect(g.code, g.stderr).toBe(0);
  expect(g.stderr).not.toMatch(/WARNING/);
  ownerKeyId = /key "(ward\.records\.[0-9a-f]{24})"/.exec(g.stdout)?.[1] ?? "";
  expect(ownerKeyId, g.stdout).not.toBe("");
  expect(g.stdout).toMatch(/scope USER_PRIVATE/);
  expect(readdirSync(keysDir)).toContain(`${ownerKeyId}.json`);
});

afterAll(() => {
  killQemus("ward");
  rmSync(dir, { recursive: true, force: true });
  rmSync(state, { recursive: true, force: true });
});

describe("a look-alike of the data owner's room", () => {
  it("is refused before any workload with the owner's grant of the real manifest: another digest, another key id", async () => {
    const r = await run(lookAlike, outRefused);
    expect(r.code, r.stderr).toBe(65);
    // The firewall's code, in brackets (soft: the checks below still run if it is missing).
    expect.soft(r.stderr).toMatch(/\[KEY_RELEASE\]/);
    expect(r.stderr).toMatch(/key broker refused key "ward\.records\.[0-9a-f]{24}"/);
    expect(r.stderr).not.toContain(ownerKeyId);

    expect(readdirSync(outRefused).sort()).toEqual(["audit.log", "summary.json"]);
    const records = auditRecords(path.join(outRefused, "audit.log"));
    const hostData = String(records.find((x) => x.kind === "attestation")!.data.hostData);
    const released = records.filter((x) => x.kind === "key.released" && x.data.input === "records");
    expect(released).toHaveLength(1);
    // The firewall asked for the key of the digest it computed itself: not the owner's.
    expect(released[0]!.data).toMatchObject({ input: "records", released: false, keyId: `ward.records.${hostData.slice(0, 24)}` });
    expect(released[0]!.data.keyId).not.toBe(ownerKeyId);
    expect(String(released[0]!.data.reason)).toMatch(/HTTP 404/);
    expect(records.some((x) => ["input.served", "workload.started", "output.decision", "workload.exited"].includes(x.kind))).toBe(false);
    const v = await verifyAudit(outRefused);
    expect(v.code, v.stdout + v.stderr).toBe(0);

    const summary = JSON.parse(readFileSync(path.join(outRefused, "summary.json"), "utf8")) as { completed: boolean; files: unknown[]; outputs: unknown[]; reason?: string; refused: unknown[] };
    expect(summary).toMatchObject({ status: "failed", completed: false, files: [], outputs: [], violations: [] });
    expect(summary.reason ?? "").toMatch(/key broker refused key/);
    expect(summary.refused).toEqual([{ code: "KEY_RELEASE", reason: expect.stringMatching(/key broker refused key "ward\.records\.[0-9a-f]{24}" \(HTTP 404\)/) }]);

    // The owner's key was not touched; the look-alike's digest got no key.
    expect(readdirSync(keysDir).filter((n) => n.startsWith("ward.records."))).toEqual([`${ownerKeyId}.json`]);
    for (const form of markerForms(MARKER)) expect(r.stdout + r.stderr).not.toContain(form);
    noMarkerOnHost([outRefused]);
  });

  it("granted by the owner the ordinary way (with a warning), completes, but `leak` is withheld: the owner's USER_PRIVATE rules", async () => {
    const g = await airlock(["manifest", "grant", lookAlike, "--input", "records", "--identity", ownerKey], env);
    expect(g.code, g.stderr).toBe(0);
    expect(g.stderr).toMatch(/scope: the manifest declares PUBLIC; you grant USER_PRIVATE/);
    expect(g.stderr).toMatch(/open outputs \(released in clear when their rules hold\): leak/);
    expect(g.stderr).toMatch(/WARNING: the manifest declares input records as PUBLIC, lower than the USER_PRIVATE granted here/);
    expect(g.stderr).toMatch(/WARNING: .*open output\(s\) leak are withheld/);
    const lookKeyId = /key "(ward\.records\.[0-9a-f]{24})"/.exec(g.stdout)?.[1] ?? "";
    expect(lookKeyId, g.stdout).not.toBe("");
    expect(lookKeyId).not.toBe(ownerKeyId);

    const r = await run(lookAlike, outGranted);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/output leak: withhold/);
    expect(r.stderr).toMatch(/output report: encrypt/);
    expect(readdirSync(outGranted).sort()).toEqual(["audit.log", "report.tar.age", "summary.json"]);
    expect(existsSync(path.join(outGranted, "leak"))).toBe(false);

    const records = auditRecords(path.join(outGranted, "audit.log"));
    expect(records.find((x) => x.kind === "key.released" && x.data.input === "records")!.data).toMatchObject({ keyId: lookKeyId, released: true, ownerScope: "USER_PRIVATE", manifestScope: "PUBLIC" });
    expect(records.find((x) => x.kind === "input.served")!.data).toMatchObject({
      input: "records",
      served: true,
      bytes: Buffer.byteLength(RECORDS),
      scope: "USER_PRIVATE",
      manifestScope: "PUBLIC",
      ownerScope: "USER_PRIVATE",
      sandboxScope: "USER_PRIVATE",
    });
    const decisions = Object.fromEntries(records.filter((x) => x.kind === "output.decision").map((x) => [x.data.output, x.data]));
    expect(decisions.leak).toMatchObject({ decision: "withhold", mode: "open", sandboxScope: "USER_PRIVATE" });
    expect(String(decisions.leak!.reason)).toMatch(/USER_PRIVATE/);
    expect(decisions.report).toMatchObject({ decision: "encrypt", mode: "trusted" });
    const v = await verifyAudit(outGranted);
    expect(v.code, v.stdout + v.stderr).toBe(0);

    const summary = JSON.parse(readFileSync(path.join(outGranted, "summary.json"), "utf8")) as { completed: boolean; files: { file: string }[] };
    expect(summary.completed).toBe(true);
    expect(summary.files.map((f) => f.file)).toEqual(["report.tar.age"]);

    // The input did reach the workload: the investigator opens the report (in memory) and finds it.
    const tar = execFileSync("age", ["-d", "-i", investigatorKey, path.join(outGranted, "report.tar.age")], { maxBuffer: 1 << 26 });
    expect(execFileSync("tar", ["-t"], { input: tar }).toString().trim().split("\n")).toEqual(["records.txt"]);
    expect(execFileSync("tar", ["-x", "-O", "records.txt"], { input: tar }).toString()).toBe(RECORDS);

    for (const form of markerForms(MARKER)) expect(r.stdout + r.stderr + g.stdout + g.stderr).not.toContain(form);
    noMarkerOnHost([outRefused, outGranted]);
  });

  it("cannot get a grant below USER_PRIVATE without --allow-scope-below-user-private (exit 2, nothing stored)", async () => {
    const before = keyFiles();
    for (const manifest of [lookAlike, ownerManifest]) {
      for (const scope of ["PUBLIC", "DOMAIN_OWNED"]) {
        const g = await airlock(["manifest", "grant", manifest, "--input", "records", "--identity", ownerKey, "--scope", scope], env);
        expect(g.code, `${path.basename(manifest)} --scope ${scope}: ${g.stderr}`).toBe(2);
        expect(g.stderr).toMatch(new RegExp(`scope ${scope} is below USER_PRIVATE`));
        expect(g.stderr).toMatch(/--allow-scope-below-user-private/);
        expect(g.stdout).toBe("");
      }
    }
    expect(keyFiles()).toEqual(before);
  });
});
