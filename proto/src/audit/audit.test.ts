import { spawn } from "node:child_process";
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { AuditLog, canonicalJson, recordHash, signerFromPrivateKey, verifyAuditLog } from "./index.ts";
import type { AuditRecord } from "./index.ts";

const dir = mkdtempSync(path.join(tmpdir(), "airlock-audit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => path.join(dir, `log-${n++}.jsonl`);

const ed = generateKeyPairSync("ed25519");
const signer = signerFromPrivateKey(ed.privateKey);

async function writeLog(records: number, every = 4, close = true): Promise<{ file: string; lines: string[] }> {
  const file = fresh();
  const log = await AuditLog.create(file, { signer, checkpointEvery: every, checkpointIntervalMs: 0 });
  for (let i = 0; i < records; i++) await log.append("output.decision", { output: `o${i}`, decision: "withhold", reason: "too big" });
  if (close) await log.close({ exit: 0 });
  else await log.abandon();
  return { file, lines: readFileSync(file, "utf8").split("\n").slice(0, -1) };
}

const text = (lines: string[]): string => lines.map((l) => `${l}\n`).join("");
const parse = (l: string): AuditRecord => JSON.parse(l) as AuditRecord;

describe("canonical JSON", () => {
  it("sorts keys, drops no data and refuses what JSON cannot hold", () => {
    expect(canonicalJson({ b: 1, a: [true, null, "x"], c: { z: 1.5, y: -0 } })).toBe('{"a":[true,null,"x"],"b":1,"c":{"y":0,"z":1.5}}');
    expect(() => canonicalJson({ a: NaN })).toThrow(/\$\.a/);
    expect(() => canonicalJson({ d: new Date() })).toThrow(/Date/);
  });
});

describe("audit log", () => {
  it("writes a chain with periodic signed checkpoints that verifies, closed", async () => {
    const { file, lines } = await writeLog(10);
    const kinds = lines.map((l) => parse(l).kind);
    expect(kinds.filter((k) => k === "checkpoint")).toHaveLength(2);
    expect(kinds.at(-1)).toBe("closed");
    const v = verifyAuditLog(readFileSync(file, "utf8"), { expectedKey: ed.publicKey });
    expect(v).toMatchObject({ valid: true, end: "closed", records: 13, firstBad: null, alg: "ed25519" });
    expect(v.kinds["output.decision"]).toBe(10);
  });

  it("signs with ECDSA P-384 (the attested key's kind) as well", async () => {
    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" });
    const file = fresh();
    const log = await AuditLog.create(file, { signer: signerFromPrivateKey(p384.privateKey), checkpointIntervalMs: 0 });
    await log.append("attestation", { measurement: "ab".repeat(48) });
    await log.close();
    expect(verifyAuditLog(readFileSync(file, "utf8"), { expectedKey: p384.publicKey })).toMatchObject({ valid: true, alg: "ecdsa-p384-sha384" });
    expect(verifyAuditLog(readFileSync(file, "utf8"), { expectedKey: ed.publicKey }).firstBad?.reason).toMatch(/other than the expected/);
  });

  it("refuses to reopen an existing log and rejects records that are not plain JSON", async () => {
    const { file } = await writeLog(1);
    await expect(AuditLog.create(file, { signer })).rejects.toThrow(/already exists/);
    const log = await AuditLog.create(fresh(), { signer, checkpointIntervalMs: 0 });
    await expect(log.append("x", { when: new Date() as never })).rejects.toThrow(/not plain JSON/);
    await expect(log.append("checkpoint", {})).rejects.toThrow(/kind/);
    await log.append("ok", {}); // the log is still usable
    await log.close();
  });

  it("signs a checkpoint on a timer while records are unsigned", async () => {
    const file = fresh();
    const log = await AuditLog.create(file, { signer, checkpointEvery: 1000, checkpointIntervalMs: 50 });
    await log.append("consent.asked", { url: "https://g.test" });
    await new Promise((r) => setTimeout(r, 200));
    await log.abandon();
    expect(verifyAuditLog(readFileSync(file, "utf8"))).toMatchObject({ valid: true, end: "checkpoint", lastSignedSeq: 1 });
  });
});

describe("audit verify detects", () => {
  it("an edited record", async () => {
    const { lines } = await writeLog(6);
    const bad = [...lines];
    bad[2] = bad[2]!.replace('"withhold"', '"release"');
    expect(verifyAuditLog(text(bad)).firstBad).toMatchObject({ line: 3, seq: 2, reason: expect.stringMatching(/was edited/) });
  });

  it("an edited record whose chain was recomputed (the next signature fails)", async () => {
    const { lines } = await writeLog(6);
    const recs = lines.map(parse);
    recs[1]!.data = { output: "o1", decision: "release", reason: "forged" };
    for (let i = 1; i < recs.length; i++) {
      recs[i]!.prev = recs[i - 1]!.hash;
      recs[i]!.hash = recordHash(recs[i]!);
    }
    const v = verifyAuditLog(text(recs.map((r) => canonicalJson(r))));
    expect(v.valid).toBe(false);
    expect(v.firstBad?.reason).toMatch(/checkpoint record seq 4: the signature does not verify/);
  });

  it("a deleted record, reordered records, a duplicated record", async () => {
    const { lines } = await writeLog(6);
    expect(verifyAuditLog(text([...lines.slice(0, 2), ...lines.slice(3)])).firstBad?.reason).toMatch(/line 3 holds seq 3, expected 2: records were deleted/);
    expect(verifyAuditLog(text([lines[0]!, lines[2]!, lines[1]!, ...lines.slice(3)])).firstBad).toMatchObject({ line: 2 });
    expect(verifyAuditLog(text([lines[0]!, lines[1]!, lines[1]!, ...lines.slice(2)])).firstBad?.reason).toMatch(/duplicated or reordered/);
  });

  it("truncation: unsigned tail, not closed, torn line, empty", async () => {
    const { lines } = await writeLog(6); // seq 0-3, cp 4, 5-6, closed 7... with every=4
    const unsignedTail = verifyAuditLog(text(lines.slice(0, 6)));
    expect(unsignedTail).toMatchObject({ valid: false, end: "unsigned-tail", unsignedTail: { from: 5, to: 5 } });
    expect(unsignedTail.firstBad?.reason).toMatch(/unsigned tail: records seq 5..5 come after the last signed checkpoint \(4\)/);
    expect(verifyAuditLog(text(lines.slice(0, 6)), { allowUnsignedTail: true })).toMatchObject({ valid: true, end: "unsigned-tail" });
    const atCheckpoint = verifyAuditLog(text(lines.slice(0, 5)));
    expect(atCheckpoint).toMatchObject({ valid: true, end: "checkpoint" });
    expect(atCheckpoint.warnings[0]).toMatch(/not closed/);
    expect(verifyAuditLog(text(lines.slice(0, 5)), { requireClosed: true }).valid).toBe(false);
    const torn = text(lines).slice(0, -10);
    expect(verifyAuditLog(torn).firstBad?.reason).toMatch(/not a JSON record|incomplete/);
    expect(verifyAuditLog(`${text(lines.slice(0, 5))}{"seq":5,"ti`).firstBad?.reason).toMatch(/line 6 is incomplete/);
    expect(verifyAuditLog("").firstBad?.reason).toMatch(/empty/);
  });

  it("records after closed, a stripped signature, a substituted key", async () => {
    const { lines } = await writeLog(2);
    const more = await writeLog(3);
    expect(verifyAuditLog(text([...lines, more.lines[3]!])).firstBad?.reason).toMatch(/follows the closed record/);
    const stripped = parse(lines.at(-1)!);
    delete stripped.sig;
    expect(verifyAuditLog(text([...lines.slice(0, -1), canonicalJson(stripped)])).firstBad?.reason).toMatch(/lacks its signature/);
    // An attacker re-signs the whole log with a key of their own: only --key catches it.
    const other = signerFromPrivateKey(generateKeyPairSync("ed25519").privateKey);
    const file = fresh();
    const log = await AuditLog.create(file, { signer: other, checkpointIntervalMs: 0 });
    await log.close();
    const forged = readFileSync(file, "utf8");
    expect(verifyAuditLog(forged).valid).toBe(true);
    expect(verifyAuditLog(forged, { expectedKey: createPublicKey(ed.privateKey) }).valid).toBe(false);
  });

  it("a checkpoint whose algorithm does not fit its key (rehashed so only that is wrong)", async () => {
    const { lines } = await writeLog(1);
    const cp = parse(lines.at(-1)!);
    (cp.data as Record<string, unknown>).alg = "ecdsa-p384-sha384";
    cp.hash = recordHash(cp);
    expect(verifyAuditLog(text([...lines.slice(0, -1), canonicalJson(cp)])).firstBad?.reason).toMatch(/names algorithm "ecdsa-p384-sha384" for a ed25519 key/);
  });

  it("garbage lines", () => {
    expect(verifyAuditLog("hello\n").firstBad?.reason).toMatch(/line 1 is not a JSON record/);
    expect(verifyAuditLog('{"seq":0}\n').firstBad?.reason).toMatch(/has fields/);
  });
});

describe("audit verify never throws", () => {
  it("on data with no canonical form: 1e999 (Infinity) or nesting deeper than the stack (found by npm run fuzz)", async () => {
    const { lines } = await writeLog(2);
    for (const data of ["1e999", "[-1e999]", `${"[".repeat(20000)}${"]".repeat(20000)}`]) {
      const edited = [...lines];
      edited[1] = edited[1]!.replace(/"data":\{[^}]*\}/, `"data":${data}`);
      expect(edited[1]).toContain(data.slice(0, 8));
      const v = verifyAuditLog(text(edited));
      expect(v).toMatchObject({ valid: false, firstBad: { line: 2, seq: 1 } });
      expect(v.firstBad!.reason).toMatch(/no canonical JSON form/);
    }
  });
});

describe("durability", () => {
  it("keeps every acknowledged record after the writer is killed with SIGKILL", async () => {
    const file = fresh();
    const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(new URL("./crash-child.fixture.ts", import.meta.url)), file], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let key = "";
    const acked: number[] = [];
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("child did not acknowledge 150 records within 20 s")), 20_000);
        let buf = "";
        child.stdout.on("data", (d: Buffer) => {
          buf += d.toString();
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.startsWith("key ")) key = line.slice(4);
            else acked.push(Number(line.split(" ")[1]));
          }
          if (acked.length >= 150 && child.exitCode === null) {
            child.kill("SIGKILL"); // mid-stream: the child is appending as fast as it can
            clearTimeout(timer);
            resolve();
          }
        });
        child.on("exit", () => reject(new Error("child exited early")));
      });
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await new Promise((r) => child.once("exit", r));
      }
    }
    const log = readFileSync(file, "utf8");
    const expectedKey = createPublicKey({ key: Buffer.from(key, "base64"), format: "der", type: "spki" });
    const v = verifyAuditLog(log, { expectedKey, allowUnsignedTail: true });
    expect(v.valid).toBe(true);
    expect(v.records).toBeGreaterThan(Math.max(...acked));
    const onDisk = new Set(log.split("\n").filter(Boolean).map((l) => parse(l).seq));
    for (const seq of acked) expect(onDisk.has(seq)).toBe(true);
    expect(verifyAuditLog(log, { expectedKey }).valid).toBe(v.end !== "unsigned-tail");
  });
});
