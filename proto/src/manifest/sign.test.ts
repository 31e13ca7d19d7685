import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { checkSignatures, signManifestDigest } from "./sign.ts";

const keyPair = (type: "ed25519" | "p384" | "rsa") => {
  const k =
    type === "ed25519" ? generateKeyPairSync("ed25519") : type === "p384" ? generateKeyPairSync("ec", { namedCurve: "secp384r1" }) : generateKeyPairSync("rsa", { modulusLength: 1024 });
  return { priv: k.privateKey.export({ type: "pkcs8", format: "pem" }) as string, pub: k.publicKey.export({ type: "spki", format: "pem" }) as string };
};
const sha = (s: string): string => createHash("sha256").update(s).digest("hex");

describe("manifest signatures", () => {
  const digest = randomBytes(32);
  const alice = keyPair("ed25519");
  const bob = keyPair("p384");
  const required = [
    { name: "alice", publicKeySha256: sha(alice.pub) },
    { name: "bob", publicKeySha256: sha(bob.pub) },
  ];

  it("verifies Ed25519 and P-384 signatures over the digest, and only when all are present", () => {
    const sa = signManifestDigest(digest, "alice", alice.priv);
    const sb = signManifestDigest(digest, "bob", bob.priv);
    expect(sa.alg).toBe("ed25519");
    expect(sb.alg).toBe("p384");
    expect(checkSignatures(digest, required, [sa, sb]).every((c) => c.ok)).toBe(true);
    const onlyA = checkSignatures(digest, required, [sa]);
    expect(onlyA.map((c) => [c.name, c.ok, c.reason])).toEqual([
      ["alice", true, "ed25519 signature verifies"],
      ["bob", false, "no signature"],
    ]);
  });

  it("refuses another digest, another key, a flipped bit and junk", () => {
    const sa = signManifestDigest(digest, "alice", alice.priv);
    const other = Buffer.from(digest);
    other[0]! ^= 1;
    expect(checkSignatures(other, required.slice(0, 1), [sa])[0]!.reason).toMatch(/does not verify/);
    const mallory = keyPair("ed25519");
    expect(checkSignatures(digest, required.slice(0, 1), [signManifestDigest(digest, "alice", mallory.priv)])[0]!.reason).toMatch(/key other than the manifest names/);
    const sig = Buffer.from(sa.signature, "base64");
    sig[5]! ^= 0x40;
    expect(checkSignatures(digest, required.slice(0, 1), [{ ...sa, signature: sig.toString("base64") }])[0]!.ok).toBe(false);
    expect(checkSignatures(digest, required.slice(0, 1), "junk")[0]!.ok).toBe(false);
    expect(checkSignatures(digest, required.slice(0, 1), [{ name: "alice", publicKeyPem: 5 }])[0]!.reason).toMatch(/malformed/);
  });

  it("signs only with Ed25519 or P-384", () => {
    expect(() => signManifestDigest(digest, "x", keyPair("rsa").priv)).toThrow(/only Ed25519 and ECDSA P-384/);
  });
});
