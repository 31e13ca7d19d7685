// `airlock manifest grant` and the embedded broker: a grant serves the manifest digest it was made
// for. The attack this guards against: a second manifest reusing the room's name and the input's
// name, declaring the input PUBLIC next to an open output, asks for the owner's key.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatIdentityFile, X25519Identity } from "../../../proto/src/age/index.ts";
import { requestKey } from "../../../proto/src/attestation/kbs-client.ts";
import { encodePolicy } from "../../../proto/src/attestation/report.ts";
import { loadManifest, manifestDigest, type Manifest } from "../../../proto/src/manifest/index.ts";
import { inputKeyId } from "../../../proto/src/room.ts";
import { EmulatedPsp } from "../attestation/emulated-psp.ts";
import { embeddedBrokerDirs, grantInput, roomKeyPolicy } from "./grant.ts";
import { startKbs } from "./server.ts";
import { KeyStore, loadMasterKey } from "./store.ts";

const repo = path.resolve(import.meta.dirname, "../../..");
const tmp = mkdtempSync(path.join(tmpdir(), "airlock-grant-"));
const measurement = randomBytes(48);
const saved = { state: process.env.AIRLOCK_STATE, kbs: process.env.AIRLOCK_KBS_STATE };
let psp: EmulatedPsp;

/** A room folder holding room.yaml; `inputScope` and `extraOutput` are what the look-alike changes. */
function room(dir: string, inputScope: string, extraOutput = ""): Manifest {
  const at = path.join(tmp, dir);
  mkdirSync(path.join(at, "workload"), { recursive: true });
  writeFileSync(path.join(at, "workload/run.sh"), "#!/bin/sh\nwc -l /data/in/records\n");
  writeFileSync(path.join(at, "records.age"), "");
  writeFileSync(
    path.join(at, "room.yaml"),
    `apiVersion: airlock/v1
name: ward
workload: {bundle: ./workload, command: ["/bin/sh", "/workload/run.sh"]}
inputs:
  - {name: records, path: ./records.age, mount: /data/in/records, mode: secure, scope: ${inputScope}}
outputs:
  - {name: counts, mount: /data/out/counts, mode: secure}
${extraOutput}`,
  );
  return loadManifest(path.join(at, "room.yaml"));
}

let owners: Manifest;
let lookAlike: Manifest;
beforeAll(() => {
  // The emulated PSP's test chain is shared with the other tests (RSA-4096 generation is slow).
  const shared = path.join(tmpdir(), "airlock-test-emulated-psp");
  psp = EmulatedPsp.open(shared);
  mkdirSync(path.join(tmp, "state"));
  symlinkSync(shared, path.join(tmp, "state", "psp"));
  process.env.AIRLOCK_STATE = path.join(tmp, "state");
  delete process.env.AIRLOCK_KBS_STATE;
  owners = room("owner", "USER_PRIVATE");
  lookAlike = room("look-alike", "PUBLIC", "  - {name: leak, mount: /data/out/leak, mode: open, format: text}\n");
});
afterAll(() => {
  for (const [k, v] of [["AIRLOCK_STATE", saved.state], ["AIRLOCK_KBS_STATE", saved.kbs]] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  rmSync(tmp, { recursive: true, force: true });
});

/** What the CLI binds a grant to (room-digest.ts computes it with the room's pins). */
const bound = (m: Manifest): { digest: Buffer; firewallMeasurement: Buffer } => ({ digest: manifestDigest(m), firewallMeasurement: measurement });

describe("manifest grant", () => {
  it("binds the key to the manifest digest: a look-alike gets another key id and another broker-kept identity", async () => {
    const digestA = manifestDigest(owners).toString("hex");
    const digestB = manifestDigest(lookAlike).toString("hex");
    expect(lookAlike.name).toBe(owners.name);
    expect(digestB).not.toBe(digestA);

    const a = await grantInput(owners, "records", undefined, bound(owners));
    expect(a).toMatchObject({ keyId: `ward.records.${digestA.slice(0, 24)}`, digest: digestA, scope: "USER_PRIVATE", declaredScope: "USER_PRIVATE", openOutputs: [], warnings: [] });
    expect(a.keyId).toBe(inputKeyId("ward", "records", digestA)); // what the owner's firewall asks for
    expect(a.recipient).toMatch(/^age1[0-9a-z]{58}$/);

    const b = await grantInput(lookAlike, "records", undefined, bound(lookAlike));
    expect(b.keyId).toBe(inputKeyId("ward", "records", digestB)); // what the look-alike's firewall asks for
    expect(b.keyId).not.toBe(a.keyId);
    expect(b.recipient).not.toBe(a.recipient); // data encrypted to the owner's recipient stays out of its reach
    expect(b).toMatchObject({ declaredScope: "PUBLIC", openOutputs: ["leak"] });
    expect(b.warnings.join("\n")).toMatch(/declares input records as PUBLIC, lower than the USER_PRIVATE granted here: the firewall holds the data to USER_PRIVATE \(the stricter\), so open output\(s\) leak are withheld/);

    // Granting the owner's manifest again keeps its identity (and its binding).
    expect((await grantInput(owners, "records", undefined, bound(owners))).recipient).toBe(a.recipient);
    const dirs = embeddedBrokerDirs();
    const store = new KeyStore(dirs.kbs, loadMasterKey(path.join(dirs.kbs, "master.key")));
    expect(store.policy(a.keyId)).toMatchObject({ hostData: digestA, scope: "USER_PRIVATE", measurements: [measurement.toString("hex")] });
    expect(store.policy(b.keyId)?.hostData).toBe(digestB);
    // The old way in: re-binding the owner's key id to the look-alike's digest.
    expect(() => store.put(a.keyId, Buffer.from(formatIdentityFile(X25519Identity.generate())), roomKeyPolicy(measurement, Buffer.from(digestB, "hex"), psp))).toThrow(
      `key ${a.keyId} is bound to room digest ${digestA}; it is not re-bound to room digest ${digestB}`,
    );

    // The broker releases the owner's key to the owner's room only, with the owner's scope, signed.
    const kbs = await startKbs({ stateDir: dirs.kbs, masterKey: loadMasterKey(path.join(dirs.kbs, "master.key")) });
    try {
      const firewall = (digest: string) => {
        const launch = { measurement, hostData: Buffer.from(digest, "hex"), policy: encodePolicy({ smt: true }), reportId: randomBytes(32) };
        return { kind: "emulated" as const, getReport: async (rd: Buffer) => psp.evidence(launch, { reportData: rd, vmpl: 0 }) };
      };
      const released = await requestKey({ endpoint: kbs.endpoint, keyId: a.keyId, provider: firewall(digestA), brokerPublicKey: kbs.publicKey });
      expect(released.scope).toBe("USER_PRIVATE");
      expect(released.key.toString("utf8")).toContain("AGE-SECRET-KEY-1");
      released.key.fill(0);
      await expect(requestKey({ endpoint: kbs.endpoint, keyId: a.keyId, provider: firewall(digestB), brokerPublicKey: kbs.publicKey })).rejects.toThrow(/host-data/);
    } finally {
      await kbs.close();
    }
  });

  it("registers a given identity under the digest's key id", async () => {
    const id = X25519Identity.generate();
    const g = await grantInput(owners, "records", formatIdentityFile(id), bound(owners));
    expect(g.recipient).toBe(id.recipient.toString());
    await expect(grantInput(owners, "nope", undefined, bound(owners))).rejects.toThrow(/no input named "nope"/);
  });

  it("refuses a scope below USER_PRIVATE unless explicitly allowed, and records the granted scope", async () => {
    for (const scope of ["PUBLIC", "DOMAIN_OWNED"] as const) {
      await expect(grantInput(lookAlike, "records", undefined, bound(lookAlike), { scope })).rejects.toThrow(
        new RegExp(`input records: scope ${scope} is below USER_PRIVATE, so the room's open outputs may carry this data.*--allow-scope-below-user-private`),
      );
    }
    const g = await grantInput(lookAlike, "records", undefined, bound(lookAlike), { scope: "PUBLIC", allowLowScope: true });
    expect(g.scope).toBe("PUBLIC");
    expect(g.warnings.join("\n")).toMatch(/you grant PUBLIC and the manifest declares PUBLIC, so the firewall holds the data to PUBLIC only: open output\(s\) leak may carry it in clear/);
    const sealed = await grantInput(owners, "records", undefined, bound(owners), { scope: "SEALED" });
    expect(sealed.warnings).toEqual(["the manifest declares input records as USER_PRIVATE, lower than the SEALED granted here: the firewall holds the data to SEALED (the stricter); make sure this is the manifest you meant to grant"]);
    const dirs = embeddedBrokerDirs();
    const store = new KeyStore(dirs.kbs, loadMasterKey(path.join(dirs.kbs, "master.key")));
    expect(store.policy(g.keyId)?.scope).toBe("PUBLIC");
    expect(store.policy(sealed.keyId)?.scope).toBe("SEALED");
  });

  it("the CLI refuses --scope PUBLIC without the flag before building anything", async () => {
    const run = (...args: string[]) =>
      new Promise<{ code: number; stderr: string }>((resolve) =>
        execFile(process.execPath, ["--import", "tsx", path.join(repo, "host-tools/src/main.ts"), ...args], { cwd: repo, timeout: 30_000, env: { ...process.env, AIRLOCK_CACHE: path.join(tmp, "no-cache") } }, (err, _out, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 99) : 0, stderr }),
        ),
      );
    const r = await run("manifest", "grant", lookAlike.file, "--input", "records", "--scope", "PUBLIC");
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--scope for input records: scope PUBLIC is below USER_PRIVATE.*--allow-scope-below-user-private/s);
    const bad = await run("manifest", "grant", lookAlike.file, "--input", "records", "--scope", "SECRET");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/Choices: "PUBLIC", "DOMAIN_OWNED", "USER_PRIVATE"/);
  });
});
