// Issue 5 end to end with real QEMU guests: examples/word-count as a new user runs it. The corpus is
// encrypted with the `age` CLI, granted to the room, the manifest signed by its collaborator, and
// governance asked for consent (a real HTTP server on loopback); `airlock run` then `age -d` gives
// the right counts. The same room is then refused when governance says no.
import { generateKeyPairSync } from "node:crypto";
import { appendFileSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { airlock, killQemus } from "../helpers.ts";
import { ageEncryptInput, ageKeygen, auditRecords, copyExample, filesContaining, grant, openSealed, removeRoom, runRoom } from "./room-setup.ts";

const MARKER = "Zebra-Marker-5f3a1c";
const room = copyExample("word-count");
let consent: { status: number; body: string } = { status: 200, body: '{"consent": true}' };
const asked: unknown[] = [];
const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (d: Buffer) => (body += d.toString()));
  req.on("end", () => {
    asked.push(JSON.parse(body || "null"));
    res.writeHead(consent.status, { "content-type": "application/json" }).end(consent.body);
  });
});

// ~3 MiB of text over a small vocabulary (so several age chunks and data frames), with the marker.
function corpus(): { text: string; counts: Map<string, number> } {
  const vocab = ["the", "cat", "sat", "on", "mat", "and", "dog", "ran", "far", "away", "Über", "naïve", "x1y2"];
  const lines: string[] = [];
  let seed = 7;
  for (let i = 0; i < 60_000; i++) {
    const words: string[] = [];
    for (let j = 0; j < 8; j++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      words.push(vocab[seed % vocab.length]!);
    }
    lines.push(i % 5000 === 0 ? `${words.join(" ")} ${MARKER}!` : `${words.join(", ")}.`);
  }
  const text = `${lines.join("\n")}\n`;
  const counts = new Map<string, number>();
  for (const w of text.toLowerCase().split(/[^a-z]+/)) if (w) counts.set(w, (counts.get(w) ?? 0) + 1);
  return { text, counts };
}

beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/consent`;
  const alice = generateKeyPairSync("ed25519");
  writeFileSync(path.join(room.keys, "alice.pem"), alice.privateKey.export({ type: "pkcs8", format: "pem" }));
  writeFileSync(path.join(room.dir, "room/keys/alice.pub.pem"), alice.publicKey.export({ type: "spki", format: "pem" }));
  appendFileSync(room.manifest, `collaborators:\n  - name: alice\n    publicKey: ./keys/alice.pub.pem\ngovernance:\n  consent: ${url}\n`);
  writeFileSync(path.join(room.dir, "room/keys/analyst.pub"), `${ageKeygen(path.join(room.keys, "analyst.key"))}\n`);
  const identity = ageEncryptInput(room, "corpus", Buffer.from(corpus().text), path.join(room.dir, "room/data/corpus.txt.age"));
  await grant(room, "corpus", identity);
});

afterAll(() => {
  killQemus("word-count");
  server.close();
  removeRoom(room);
});

describe("examples/word-count", () => {
  it("needs its collaborator's signature; once signed and consented, age -d gives the right counts", async () => {
    const unsigned = await airlock(["manifest", "verify", room.manifest], room.env);
    expect(unsigned.code).toBe(1);
    expect(unsigned.stdout).toMatch(/FAIL alice: no signature/);
    const signed = await airlock(["manifest", "sign", room.manifest, "--key", path.join(room.keys, "alice.pem"), "--name", "alice"], room.env);
    expect(signed.code, signed.stderr).toBe(0);
    expect((await airlock(["manifest", "verify", room.manifest], room.env)).code).toBe(0);

    const out = path.join(room.dir, "out");
    const r = await runRoom(room, out);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/output counts: encrypt \(trusted/);

    // One sealed archive for the output, named by the host; the analyst opens it with age and tar.
    expect(readdirSync(out).sort()).toEqual(["audit.log", "counts.tar.age", "summary.json"]);
    const sealed = openSealed(path.join(out, "counts.tar.age"), path.join(room.keys, "analyst.key"));
    expect([...sealed.keys()]).toEqual(["counts.csv"]);
    const csv = sealed.get("counts.csv")!.toString();
    const lines = csv.trim().split("\n");
    expect(lines[0]).toBe("word,count");
    const got = new Map(lines.slice(1).map((l) => [l.split(",")[0]!, Number(l.split(",")[1])]));
    expect(got).toEqual(corpus().counts);

    // The audit trail verifies and tells the story in order.
    const audit = path.join(out, "audit.log");
    const v = await airlock(["audit", "verify", audit, "--trust-root", path.join(room.state, "psp", "ark.pem")], room.env);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    const kinds = auditRecords(audit).map((x) => x.kind);
    const order = ["manifest.checked", "manifest.signature", "attestation", "key.released", "consent.asked", "consent.answered", "input.served", "workload.started", "output.decision", "workload.exited", "closed"];
    expect(order.map((k) => kinds.indexOf(k))).toEqual([...order.map((k) => kinds.indexOf(k))].sort((a, b) => a - b));
    expect(order.every((k) => kinds.includes(k))).toBe(true);
    const records = auditRecords(audit);
    expect(records.find((x) => x.kind === "manifest.signature")!.data).toMatchObject({ collaborator: "alice", ok: true });
    expect(records.find((x) => x.kind === "input.served")!.data).toMatchObject({ input: "corpus", served: true, bytes: Buffer.byteLength(corpus().text), sandboxScope: "USER_PRIVATE" });
    expect(asked).toHaveLength(1);
    expect(asked[0]).toMatchObject({ room: "word-count" });

    // No plaintext of the input on the host's disk: neither in the outputs nor in airlock's state.
    expect(filesContaining([out, room.state], MARKER)).toEqual([]);
  });

  it("is refused, fail closed, when governance says no", async () => {
    consent = { status: 403, body: '{"consent": false, "why": "not today"}' };
    const out = path.join(room.dir, "out-refused");
    const r = await runRoom(room, out);
    expect(r.code).toBe(65); // the run did not complete
    expect(r.stderr).toMatch(/\[CONSENT\]|governance did not consent/);
    const records = auditRecords(path.join(out, "audit.log"));
    expect(records.find((x) => x.kind === "consent.answered")!.data).toMatchObject({ granted: false, status: 403 });
    expect(records.some((x) => x.kind === "workload.started" || x.kind === "input.served")).toBe(false);
    expect((await airlock(["audit", "verify", path.join(out, "audit.log"), "--trust-root", path.join(room.state, "psp", "ark.pem")], room.env)).code).toBe(0);
    expect(readdirSync(out).sort()).toEqual(["audit.log", "summary.json"]);
    expect(existsSync(path.join(out, "counts"))).toBe(false);
  });

  it("is refused when a collaborator's signature is missing, and when the corpus was tampered with", async () => {
    consent = { status: 200, body: '{"consent": true}' };
    const sigFile = `${room.manifest}.sig.json`;
    const sig = readFileSync(sigFile);
    rmSync(sigFile);
    const out1 = path.join(room.dir, "out-unsigned");
    const r1 = await runRoom(room, out1);
    expect(r1.code).not.toBe(0);
    expect(r1.stderr).toMatch(/manifest not signed by alice \(no signature\)/);
    const rec1 = auditRecords(path.join(out1, "audit.log"));
    expect(rec1.find((x) => x.kind === "manifest.signature")!.data).toMatchObject({ collaborator: "alice", ok: false });
    expect(rec1.some((x) => x.kind === "key.released" || x.kind === "workload.started")).toBe(false);
    writeFileSync(sigFile, sig);

    // One flipped bit in the middle of the age file: the payload's authentication fails there.
    const enc = path.join(room.dir, "room/data/corpus.txt.age");
    const bytes = readFileSync(enc);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    writeFileSync(enc, bytes);
    const out2 = path.join(room.dir, "out-tampered");
    const r2 = await runRoom(room, out2);
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toMatch(/input corpus: .*(tampered|authenticat)/i);
    const rec2 = auditRecords(path.join(out2, "audit.log"));
    expect(rec2.find((x) => x.kind === "input.served")!.data).toMatchObject({ input: "corpus", served: false });
    expect(rec2.some((x) => x.kind === "workload.started")).toBe(false);
    expect(filesContaining([out1, out2, room.state], MARKER)).toEqual([]);
  });
});
