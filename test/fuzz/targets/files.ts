// Fuzz targets on files a user hands airlock: the room manifest (YAML) and the audit log.
import { createPublicKey, sign } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { bech32Encode } from "../../../proto/src/age/bech32.ts";
import { CHECKPOINT, CLOSED, GENESIS, recordHash, signedBytes } from "../../../proto/src/audit/record.ts";
import type { AuditRecord } from "../../../proto/src/audit/record.ts";
import { canonicalJson } from "../../../proto/src/audit/canonical.ts";
import { verifyAuditLog, type AuditVerification, type VerifyOptions } from "../../../proto/src/audit/verify.ts";
import { loadManifest } from "../../../proto/src/manifest/load.ts";
import { Refused, Violation, type DecoderTarget, type TargetFactory } from "../engine.ts";
import { dictionary, mutateJsonText, type Rng, type Seed } from "../mutate.ts";
import { fixedBytes, fixedEd25519, fixedP384 } from "../keys.ts";

// ---- the room manifest (manifest/load.ts) ----

const MANIFESTS: Record<string, string> = {
  "readme example": `apiVersion: airlock/v1
name: hello
workload:
  bundle: ./workload
  command: ["/bin/sh", "/workload/run.sh"]
  env: {GREETING: "hello"}
  timeoutSeconds: 600
inputs:
  - {name: corpus, path: ./data/corpus.age, mount: /data/in/corpus, mode: secure, scope: USER_PRIVATE}
outputs:
  - name: greeting
    mount: /data/out/greeting
    mode: open
    format: text
    maxBytes: 4096
  - {name: counts, mount: /data/out/counts, mode: trusted, recipient: ./keys/analyst.age.pub}
egress: []
collaborators:
  - {name: data-owner, publicKey: ./keys/owner.pub.pem}
governance: {consent: https://governance.example.test/consent, tls: {spkiSha256: abababababababababababababababababababababababababababababababab}}
resources: {firewall: {memoryMiB: 1024, vcpus: 1}, sandbox: {memoryMiB: 1024, vcpus: 1}}
`,
  "block style, anchors and aliases": `# a comment
apiVersion: "airlock/v1"
name: word-count
workload:
  bundle: workload
  command:
    - /bin/sh
    - /workload/count.sh
  env:
    LC_ALL: C
    LANG: 'C.UTF-8'
  timeoutSeconds: 300
inputs:
  - name: corpus
    path: ./data/corpus.age
    mount: /data/in/corpus.txt
    mode: trusted
    scope: MULTI_USER_PRIVATE
outputs:
  - name: counts
    mount: /data/out/counts
    mode: &trusted trusted
    recipient: RECIPIENT
    format: csv
    maxBytes: 16777216
  - name: report
    mount: /data/out/report
    mode: *trusted
    recipient: ./keys/analyst.age.pub
egress:
  - name: api
    url: http://api.example.test/v1/
    methods: [GET, POST]
    mode: open
    rules: {maxRequestBytes: 1024, maxResponseBytes: 65536}
resources:
  firewall: &vm
    memoryMiB: 1024
    vcpus: 1
  sandbox: *vm
`,
  "flow style (JSON)": JSON.stringify({ apiVersion: "airlock/v1", name: "json-room", workload: { bundle: "./workload", command: ["/bin/true"] }, outputs: [{ name: "out", mount: "/data/out/x", mode: "secure" }] }),
};

const manifest: TargetFactory = {
  name: "manifest",
  what: "room manifests (manifest/load.ts loadManifest on a YAML file in a room folder)",
  create(): DecoderTarget {
    const dir = mkdtempSync(path.join(os.tmpdir(), "airlock-fuzz-manifest-"));
    mkdirSync(path.join(dir, "workload"));
    writeFileSync(path.join(dir, "workload", "run.sh"), "#!/bin/sh\necho hello\n");
    mkdirSync(path.join(dir, "data"));
    writeFileSync(path.join(dir, "data", "corpus.age"), "age-encryption.org/v1\n");
    mkdirSync(path.join(dir, "keys"));
    const recipient = bech32Encode("age", fixedBytes("manifest analyst"));
    writeFileSync(path.join(dir, "keys", "analyst.age.pub"), `# analyst\n${recipient}\n`);
    writeFileSync(path.join(dir, "keys", "owner.pub.pem"), createPublicKey(fixedEd25519("manifest owner")).export({ type: "spki", format: "pem" }) as string);
    const file = path.join(dir, "room.yaml");
    const seeds: Seed[] = Object.entries(MANIFESTS).map(([name, text]) => ({ name, data: Buffer.from(text.replace("RECIPIENT", recipient)) }));
    const run = (input: Buffer): void => {
      writeFileSync(file, input);
      const m = loadManifest(file);
      if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(m.name)) throw new Violation(`a manifest named ${JSON.stringify(m.name)} loaded`);
      for (const x of [...m.inputs, ...m.outputs]) if (!x.mount.startsWith("/data/") || x.mount.includes("..")) throw new Violation(`a mount ${JSON.stringify(x.mount)} loaded`);
    };
    const structured = (rng: Rng, seed: Seed): Buffer => {
      const doc: unknown = parseYaml(seed.data.toString("utf8"));
      return Buffer.from(mutateJsonText(rng, doc, rng.chance(0.7) ? (v) => stringifyYaml(v) : (v) => JSON.stringify(v)));
    };
    return {
      name: this.name,
      what: this.what,
      seeds,
      dict: dictionary("&a ", "*a", "&b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]", "<<: ", "!!binary ", "!!str ", "!!map ", "!!set ", "? ", ": ", "- ", "{", "}", "[", "]", "\n  ", "---\n", "...\n", "%YAML 1.2\n", "%TAG ! tag:x,2000:\n", "'", '"', "|\n", ">-\n", "#", "~", "null", ".inf", ".nan", "0x10", "0o17", "1e999", "-0", "..", "/data/out/../in", "./../../etc/passwd", "\t", "\ufeff", "\\u0000"),
      maxLen: 64 * 1024,
      structured,
      run,
      close: () => rmSync(dir, { recursive: true, force: true }),
    };
  },
};

// ---- the audit log (audit/verify.ts verifyAuditLog) ----

function auditLog(label: string, kinds: string[], end: "closed" | "checkpoint" | "tail", signer: "ed25519" | "p384-wrong-sig" = "ed25519"): string {
  const ed = fixedEd25519(`audit ${label}`);
  const p384 = fixedP384(`audit ${label}`);
  const publicKey = (signer === "ed25519" ? createPublicKey(ed) : p384.publicKey).export({ format: "der", type: "spki" }).toString("base64");
  const alg = signer === "ed25519" ? "ed25519" : "ecdsa-p384-sha384";
  const lines: string[] = [];
  let prev = GENESIS;
  let seq = 0;
  const add = (kind: string, data: AuditRecord["data"], sealed = false): void => {
    const r: AuditRecord = { seq, time: new Date(Date.UTC(2026, 0, 1, 0, 0, seq)).toISOString(), kind, data, prev, hash: "" };
    r.hash = recordHash(r);
    if (sealed) {
      // ECDSA signatures are randomised, so the P-384 seed carries fixed (wrong) bytes instead.
      r.sig = signer === "ed25519" ? sign(null, signedBytes(r.hash), ed).toString("base64") : fixedBytes(`audit sig ${seq}`, 96).toString("base64");
    }
    lines.push(canonicalJson(r));
    prev = r.hash;
    seq++;
  };
  kinds.forEach((k, i) => add(k, { name: `item-${i}`, n: i, ok: i % 2 === 0, list: [1, "two", null] }));
  if (end !== "tail") add(end === "closed" ? CLOSED : CHECKPOINT, { alg, publicKey, covers: seq }, true);
  if (end === "tail") {
    add(CHECKPOINT, { alg, publicKey, covers: seq }, true);
    add("output.decision", { output: "late", decision: "withhold" });
  }
  return `${lines.join("\n")}\n`;
}

const audit: TargetFactory = {
  name: "audit",
  what: "audit logs (audit/verify.ts verifyAuditLog, with and without an expected key, unsigned tails, requireClosed)",
  create(): DecoderTarget {
    const expectedKey = createPublicKey(fixedEd25519("audit run"));
    const seeds: Seed[] = [
      { name: "closed", data: Buffer.from(auditLog("run", ["manifest.checked", "attestation", "key.released", "output.decision"], "closed")) },
      { name: "ends at a checkpoint", data: Buffer.from(auditLog("run", ["manifest.checked", "input.served"], "checkpoint")) },
      { name: "unsigned tail", data: Buffer.from(auditLog("run", ["workload.started"], "tail")) },
    ];
    const extraCorpus: Seed[] = [{ name: "P-384, wrong signature", data: Buffer.from(auditLog("p384", ["violation"], "closed", "p384-wrong-sig")) }];
    const optionSets: VerifyOptions[] = [{}, { expectedKey, allowUnsignedTail: true }, { requireClosed: true }];
    const check = (v: AuditVerification, o: VerifyOptions): void => {
      if (v.valid !== (v.firstBad === null)) throw new Violation(`valid ${v.valid} with firstBad ${JSON.stringify(v.firstBad)}`);
      if (v.valid && v.records === 0) throw new Violation("an empty log verified");
      if (v.valid && o.requireClosed && v.end !== "closed") throw new Violation(`requireClosed, yet a log ending "${v.end}" verified`);
      if (v.valid && !o.allowUnsignedTail && v.end === "unsigned-tail") throw new Violation("an unsigned tail verified without allowUnsignedTail");
    };
    const run = (input: Buffer): void => {
      const text = input.toString("utf8");
      let valid = 0;
      for (const o of optionSets) {
        const v = verifyAuditLog(text, o);
        check(v, o);
        if (v.valid) valid++;
      }
      if (valid === 0) throw new Refused("the log does not verify");
    };
    // Structured: edit one record's JSON (sometimes re-hashing it so the chain check passes), or
    // drop, repeat, swap or cut lines.
    const structured = (rng: Rng, seed: Seed): Buffer => {
      const lines = seed.data.toString("utf8").split("\n");
      const last = lines.pop()!;
      const i = rng.int(lines.length);
      const op = rng.int(6);
      if (op === 0) lines.splice(i, 1);
      else if (op === 1) lines.splice(i, 0, lines[i]!);
      else if (op === 2) {
        const j = rng.int(lines.length);
        [lines[i], lines[j]] = [lines[j]!, lines[i]!];
      } else if (op === 3) lines[i] = lines[i]!.slice(0, rng.int(lines[i]!.length));
      else {
        const rec = JSON.parse(lines[i]!) as Record<string, unknown>;
        const text = mutateJsonText(rng, rec, (v) => JSON.stringify(v), [GENESIS, "x".repeat(64), "2026-13-01T00:00:00Z", CHECKPOINT, CLOSED]);
        lines[i] = text;
        if (op === 5) {
          try {
            const r = JSON.parse(text) as AuditRecord;
            r.hash = recordHash(r);
            lines[i] = JSON.stringify(r);
          } catch {
            // not a record any more: keep the text
          }
        }
      }
      return Buffer.from(`${lines.join("\n")}\n${last}`);
    };
    return {
      name: this.name,
      what: this.what,
      seeds,
      extraCorpus,
      // verifyAuditLog reports every fault of a log as {valid: false}: anything thrown is a failure.
      refusal: () => false,
      dict: dictionary('"seq":', '"data":', '"sig":', '"kind":"closed"', '"kind":"checkpoint"', "1e999", "-0", "[[[[[[[[", "{}", "null", "\n", '"__proto__"', '"covers":'),
      maxLen: 256 * 1024,
      structured,
      run,
    };
  },
};

export const fileTargets: TargetFactory[] = [manifest, audit];
