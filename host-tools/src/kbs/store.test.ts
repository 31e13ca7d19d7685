import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { checkPolicy, KeyStore, loadMasterKey } from "./store.ts";

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

  it("checks policies field by field", () => {
    expect(() => checkPolicy({ measurements: [] }, "p")).toThrow(/non-empty list/);
    expect(() => checkPolicy({ ...policy, hostdata: "00" }, "p")).toThrow(/unknown field "hostdata"/);
    expect(() => checkPolicy({ ...policy, vmpl: 4 }, "p")).toThrow(/vmpl/);
    expect(() => checkPolicy({ ...policy, minTcb: { snp: 300 } }, "p")).toThrow(/minTcb.snp/);
    expect(() => checkPolicy({ ...policy, trustRoots: ["not pem"] }, "p")).toThrow(/PEM/);
    expect(checkPolicy({ ...policy, allowDebug: false, product: "genoa" }, "p")).toMatchObject({ product: "genoa" });
  });
});
