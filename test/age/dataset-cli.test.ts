// `airlock dataset` and `airlock audit verify` as a user runs them, against the real `age` CLI:
// large files streamed both ways with bounded memory, identity files, exit statuses.
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, generateKeyPairSync } from "node:crypto";
import { createReadStream, createWriteStream, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { once } from "node:events";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decrypt, openInput, readIdentityFile } from "../../proto/src/age/index.ts";
import { AuditLog, signerFromPrivateKey } from "../../proto/src/audit/index.ts";

const repo = path.resolve(import.meta.dirname, "../..");
// The CLI runs from its sources with tsx (resolved from the repo: the working folder is a temp dir).
const tsxLoader = pathToFileURL(path.join(repo, "node_modules/tsx/dist/loader.mjs")).href;
const dir = mkdtempSync(path.join(tmpdir(), "airlock-dataset-"));
const MiB = 1024 * 1024;
const BIG = 256 * MiB;
const big = path.join(dir, "big.bin");
let bigSha = "";
let cliRecipient = "";

function airlock(args: string[], input?: Buffer): { status: number; stdout: Buffer; stderr: string } {
  const r = spawnSync(process.execPath, ["--import", tsxLoader, path.join(repo, "host-tools/src/main.ts"), ...args], {
    cwd: dir,
    input,
    maxBuffer: 64 * MiB,
    timeout: 120_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString() };
}

async function sha256File(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest("hex");
}

beforeAll(async () => {
  // A pseudo-random 256 MiB file, written in 1 MiB pieces (never held whole in memory).
  const out = createWriteStream(big);
  const h = createHash("sha256");
  let block = createHash("sha512").update("seed").digest();
  for (let i = 0; i < BIG / MiB; i++) {
    block = createHash("sha512").update(block).digest();
    const piece = Buffer.alloc(MiB, block);
    piece.writeUInt32BE(i, 0);
    h.update(piece);
    if (!out.write(piece)) await once(out, "drain");
  }
  out.end();
  await once(out, "finish");
  bigSha = h.digest("hex");
  // The data owner's side, done with the age CLI: a key pair and the dataset encrypted to it.
  execFileSync("age-keygen", ["-o", path.join(dir, "cli-id.txt")], { stdio: "ignore" });
  execFileSync("age-keygen", ["-o", path.join(dir, "other-id.txt")], { stdio: "ignore" });
  cliRecipient = execFileSync("age-keygen", ["-y", path.join(dir, "cli-id.txt")], { encoding: "utf8" }).trim();
  execFileSync("age", ["-r", cliRecipient, "-o", path.join(dir, "big.age"), big]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("airlock dataset", () => {
  it("keygen writes a 0600 identity the age CLI accepts and refuses to overwrite it", () => {
    const r = airlock(["dataset", "keygen", "-o", "id.txt"]);
    expect(r.status).toBe(0);
    const recipient = r.stdout.toString().trim();
    expect(statSync(path.join(dir, "id.txt")).mode & 0o777).toBe(0o600);
    expect(execFileSync("age-keygen", ["-y", path.join(dir, "id.txt")], { encoding: "utf8" }).trim()).toBe(recipient);
    expect(airlock(["dataset", "keygen", "-o", "id.txt"]).status).toBe(2);
    expect(airlock(["dataset", "recipient", "id.txt"]).stdout.toString().trim()).toBe(recipient);
  });

  it("age CLI encrypts 256 MiB, our decrypt streams it with bounded memory", async () => {
    const ids = await readIdentityFile(path.join(dir, "cli-id.txt"));
    const h = createHash("sha256");
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    let n = 0;
    for await (const c of decrypt(openInput(path.join(dir, "big.age")), ids)) {
      h.update(c);
      if ((n += c.length) % (16 * MiB) < c.length) peak = Math.max(peak, process.memoryUsage().rss);
    }
    expect(n).toBe(BIG);
    expect(h.digest("hex")).toBe(bigSha);
    expect(peak - rss0).toBeLessThan(96 * MiB); // the file is 256 MiB: it was never held whole
  });

  it("airlock dataset encrypt → age -d, and age -e → airlock dataset decrypt -o, byte-exact on 256 MiB", async () => {
    const r = airlock(["dataset", "encrypt", "-r", cliRecipient, "-o", "ours.age", big]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    execFileSync("age", ["-d", "-i", path.join(dir, "cli-id.txt"), "-o", path.join(dir, "ours.out"), path.join(dir, "ours.age")]);
    expect(await sha256File(path.join(dir, "ours.out"))).toBe(bigSha);

    const d = airlock(["dataset", "decrypt", "-i", "cli-id.txt", "-o", "theirs.out", "big.age"]);
    expect(d.status).toBe(0);
    expect(statSync(path.join(dir, "theirs.out")).mode & 0o777).toBe(0o600);
    expect(await sha256File(path.join(dir, "theirs.out"))).toBe(bigSha);
  });

  it("refuses a truncated file, says so, and leaves no output behind", () => {
    const ct = readFileSync(path.join(dir, "big.age")).subarray(0, 3 * MiB);
    writeFileSync(path.join(dir, "cut.age"), ct);
    const r = airlock(["dataset", "decrypt", "-i", "cli-id.txt", "-o", "cut.out", "cut.age"]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/chunk \d+ .*truncated.*\[CRYPTO\]/);
    expect(existsSync(path.join(dir, "cut.out"))).toBe(false);
    const wrong = airlock(["dataset", "decrypt", "-i", "other-id.txt", "cut.age"]);
    expect(wrong.stderr).toMatch(/wrong identity/);
    expect(wrong.stdout.length).toBe(0);
  });

  it("encrypts stdin to a recipients file, armored, for the age CLI", () => {
    writeFileSync(path.join(dir, "recipients.txt"), `# the analyst\n${cliRecipient}\n`);
    const r = airlock(["dataset", "encrypt", "-R", "recipients.txt", "-a"], Buffer.from("word,count\nthe,3\n"));
    expect(r.stdout.toString()).toMatch(/^-----BEGIN AGE ENCRYPTED FILE-----/);
    expect(execFileSync("age", ["-d", "-i", path.join(dir, "cli-id.txt")], { input: r.stdout, encoding: "utf8" })).toBe("word,count\nthe,3\n");
  });
});

describe("airlock audit verify", () => {
  it("exits 0 on a good log, 1 naming the first bad record after a hand edit", async () => {
    const k = generateKeyPairSync("ed25519");
    writeFileSync(path.join(dir, "audit.pub"), k.publicKey.export({ type: "spki", format: "pem" }));
    const file = path.join(dir, "audit.jsonl");
    const log = await AuditLog.create(file, { signer: signerFromPrivateKey(k.privateKey), checkpointEvery: 3, checkpointIntervalMs: 0 });
    for (const o of ["a", "b", "c", "d"]) await log.append("output.decision", { output: o, decision: "withhold", reason: "scope" });
    await log.close();
    const ok = airlock(["audit", "verify", "audit.jsonl", "--key", "audit.pub", "--no-attestation", "--json"]);
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout.toString())).toMatchObject({ valid: true, end: "closed", records: 6 });

    writeFileSync(path.join(dir, "edited.jsonl"), readFileSync(file, "utf8").replace('"output":"b","reason":"scope"', '"output":"b","reason":"scopes"'));
    const bad = airlock(["audit", "verify", "edited.jsonl"]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/record seq 1 was edited.*\[AUDIT_INVALID\]/);

    const lines = readFileSync(file, "utf8").split("\n");
    writeFileSync(path.join(dir, "cut.jsonl"), lines.slice(0, 5).join("\n") + "\n");
    const cut = airlock(["audit", "verify", "cut.jsonl"]);
    expect(cut.status).toBe(1);
    expect(cut.stderr).toMatch(/unsigned tail: records seq 4..4/);
    expect(airlock(["audit", "verify", "cut.jsonl", "--allow-unsigned-tail", "--no-attestation"]).status).toBe(0);
    expect(airlock(["audit", "verify", "nothere.jsonl"]).status).toBe(2);
  });
});
