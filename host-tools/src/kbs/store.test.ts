import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { checkPolicy, KEY_ID, KeyStore, loadMasterKey } from "./store.ts";

const tmp = mkdtempSync(path.join(tmpdir(), "airlock-kbs-store-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
afterEach(() => {
  delete process.env.AIRLOCK_KBS_MASTER_KEY;
});

describe("broker master key", () => {
  it("comes from the environment, or a private file created on first use", () => {
    process.env.AIRLOCK_KBS_MASTER_KEY = "ab".repeat(32);
    expect(loadMasterKey(undefined).equals(Buffer.alloc(32, 0xab))).toBe(true);
    process.env.AIRLOCK_KBS_MASTER_KEY = "xyz";
    expect(() => loadMasterKey(undefined)).toThrow(/64 hex digits/);
    delete process.env.AIRLOCK_KBS_MASTER_KEY;
    const file = path.join(tmp, "m", "master.key");
    const created = loadMasterKey(file, { create: true });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(loadMasterKey(file).equals(created)).toBe(true);
    chmodSync(file, 0o644);
    expect(() => loadMasterKey(file)).toThrow(/chmod 600/);
    expect(() => loadMasterKey(path.join(tmp, "absent"))).toThrow(/absent/);
    const short = path.join(tmp, "short.key");
    writeFileSync(short, "abc", { mode: 0o600 });
    expect(() => loadMasterKey(short)).toThrow(/32 raw bytes or 64 hex digits/);
  });
});

describe("key store", () => {
  const policy = { measurements: ["cd".repeat(48)] };
  it("stores keys encrypted, bound to their id", () => {
    const master = randomBytes(32);
    const store = new KeyStore(path.join(tmp, "s"), master);
    const key = Buffer.from("AGE-SECRET-KEY-1EXAMPLEEXAMPLEEXAMPLE");
    store.put("a", key, policy);
    store.put("b", randomBytes(16), policy);
    expect(store.open("a").equals(key)).toBe(true);
    expect(store.list()).toEqual(["a", "b"]);
    const fileA = path.join(tmp, "s", "keys", "a.json");
    expect(readFileSync(fileA, "utf8")).not.toContain("AGE-SECRET");
    expect(statSync(fileA).mode & 0o777).toBe(0o600);
    // b's ciphertext moved into a's file does not open as a.
    const a = JSON.parse(readFileSync(fileA, "utf8"));
    const b = JSON.parse(readFileSync(path.join(tmp, "s", "keys", "b.json"), "utf8"));
    writeFileSync(fileA, JSON.stringify({ ...a, nonce: b.nonce, ciphertext: b.ciphertext }));
    expect(() => store.open("a")).toThrow(/does not decrypt/);
    expect(() => store.put("../x", key, policy)).toThrow(/key id/);
    expect(store.policy("missing")).toBeUndefined();
  });

  it("never re-binds a key to another room digest; other policy fields may change for the same digest", () => {
    const store = new KeyStore(path.join(tmp, "bind"), randomBytes(32));
    const digestA = "aa".repeat(32);
    const digestB = "bb".repeat(32);
    const key = Buffer.from("AGE-SECRET-KEY-1OWNER");
    store.put("hello.corpus.aaaaaaaaaaaaaaaaaaaaaaaa", key, { ...policy, hostData: digestA });
    // The look-alike's grant: same id, another digest. Refused, and the stored key is untouched.
    expect(() => store.put("hello.corpus.aaaaaaaaaaaaaaaaaaaaaaaa", Buffer.from("AGE-SECRET-KEY-1ATTACKER"), { ...policy, hostData: digestB })).toThrow(
      new RegExp(`key hello\\.corpus\\.a{24} is bound to room digest ${digestA}; it is not re-bound to room digest ${digestB}`),
    );
    expect(() => store.put("hello.corpus.aaaaaaaaaaaaaaaaaaaaaaaa", key, policy)).toThrow(/is bound to room digest a{64}; it is not re-bound to any room/);
    expect(store.policy("hello.corpus.aaaaaaaaaaaaaaaaaaaaaaaa")?.hostData).toBe(digestA);
    expect(store.open("hello.corpus.aaaaaaaaaaaaaaaaaaaaaaaa").equals(key)).toBe(true);
    // A rebuilt firewall image (new measurement), a scope, upper-case hex: same digest, allowed.
    store.put("hello.corpus.aaaaaaaaaaaaaaaaaaaaaaaa", key, { measurements: ["ef".repeat(48)], hostData: digestA.toUpperCase(), scope: "SEALED" });
    expect(store.policy("hello.corpus.aaaaaaaaaaaaaaaaaaaaaaaa")).toMatchObject({ measurements: ["ef".repeat(48)], scope: "SEALED" });
    // A key registered for any room stays one: it is not narrowed (it may have been released already).
    store.put("shared", key, policy);
    expect(() => store.put("shared", key, { ...policy, hostData: digestA })).toThrow(/key shared is bound to any room/);
    store.put("shared", key, { ...policy, allowDebug: false });
  });

  it("holds the longest input key id (ROOM.INPUT.DIGEST24 at 63-character names)", () => {
    const id = `${"r".repeat(63)}.${"i".repeat(63)}.${"0".repeat(24)}`;
    expect(KEY_ID.test(id)).toBe(true);
    new KeyStore(path.join(tmp, "long"), randomBytes(32)).put(id, Buffer.from("k"), policy);
  });

  it("checks policies field by field", () => {
    expect(() => checkPolicy({ measurements: [] }, "p")).toThrow(/non-empty list/);
    expect(() => checkPolicy({ ...policy, hostdata: "00" }, "p")).toThrow(/unknown field "hostdata"/);
    expect(() => checkPolicy({ ...policy, vmpl: 4 }, "p")).toThrow(/vmpl/);
    expect(() => checkPolicy({ ...policy, minTcb: { snp: 300 } }, "p")).toThrow(/minTcb.snp/);
    expect(() => checkPolicy({ ...policy, trustRoots: ["not pem"] }, "p")).toThrow(/PEM/);
    expect(checkPolicy({ ...policy, allowDebug: false, product: "genoa" }, "p")).toMatchObject({ product: "genoa" });
    expect(() => checkPolicy({ ...policy, scope: "SECRET" }, "p")).toThrow(/scope must be one of PUBLIC, DOMAIN_OWNED, USER_PRIVATE/);
    expect(checkPolicy({ ...policy, scope: "PUBLIC" }, "p")).toMatchObject({ scope: "PUBLIC" });
  });
});
