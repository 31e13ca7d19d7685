// --host against a real OpenSSH server (Debian's sshd on loopback, started here): the host key is
// pinned or refused, only the user's authorized key logs in, the remote airlock must be this one,
// and a cut upload resumes and is verified on arrival. No SSH mocks.
import { cpSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { randomBytes, createHash } from "node:crypto";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { airlock, repoRoot } from "../helpers.ts";
import { scratchDir } from "../scratch.ts";
import { keygen, startSshd, type TestSshd } from "./sshd.ts";
import { SshConnection } from "../../host-tools/src/remote/connection.ts";
import { BlobUploader, hashFile } from "../../host-tools/src/remote/upload.ts";
import { fingerprint, knownHostKeys } from "../../host-tools/src/remote/host-key.ts";
import type { RemoteHost } from "../../host-tools/src/remote/inventory.ts";

let sshd: TestSshd;
const work = scratchDir("airlock-remote-trust-");
const remoteEnv = { AIRLOCK_STATE: path.join(work, "remote-state"), AIRLOCK_CACHE: path.join(work, "remote-cache") };

function inventory(hosts: Record<string, Record<string, unknown>>): string {
  const file = path.join(work, `hosts-${randomBytes(3).toString("hex")}.yaml`);
  const yaml = ["hosts:", ...Object.entries(hosts).flatMap(([n, h]) => [`  ${n}:`, ...Object.entries(h).map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`)])].join("\n");
  writeFileSync(file, `${yaml}\n`);
  return file;
}

const base = (): Record<string, unknown> => ({ url: `ssh://root@127.0.0.1:${sshd.port}`, identity: sshd.userKey, knownHosts: sshd.knownHosts, airlock: repoRoot, env: remoteEnv });
const cli = (args: string[], hosts: string) => airlock(args, { AIRLOCK_HOSTS: hosts, AIRLOCK_STATE: path.join(work, "local-state"), SSH_AUTH_SOCK: "" }, 60_000);

beforeAll(async () => {
  sshd = await startSshd();
});
afterAll(async () => {
  await sshd?.stop();
});

describe("--host trust", () => {
  it("reaches a pinned host with the user's key and the same airlock", async () => {
    const r = await cli(["status", "--host", "lab", "--json"], inventory({ lab: base() }));
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
    // Pinned by fingerprint in the inventory instead of known_hosts.
    const byFp = await cli(["status", "--host", "lab"], inventory({ lab: { ...base(), knownHosts: path.join(work, "none"), hostKey: sshd.fingerprint } }));
    expect(byFp.code, byFp.stderr).toBe(0);
  });

  it("refuses an unknown host key and shows its fingerprint", async () => {
    const r = await cli(["status", "--host", "lab"], inventory({ lab: { ...base(), knownHosts: path.join(work, "empty-known-hosts") } }));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("[HOST_KEY]");
    expect(r.stderr).toMatch(/is unknown/);
    expect(r.stderr).toContain(sshd.fingerprint);
  });

  it("refuses a changed host key (known_hosts, hashed entry, or the inventory's pin)", async () => {
    const other = keygen(path.join(work, `other-host-${randomBytes(3).toString("hex")}`));
    const kh = path.join(work, "changed-known-hosts");
    writeFileSync(kh, `[127.0.0.1]:${sshd.port} ${other.split(" ").slice(0, 2).join(" ")}\n`);
    const viaKnownHosts = await cli(["status", "--host", "lab"], inventory({ lab: { ...base(), knownHosts: kh } }));
    expect(viaKnownHosts.code).toBe(1);
    expect(viaKnownHosts.stderr).toMatch(/CHANGED/);
    expect(viaKnownHosts.stderr).toContain(sshd.fingerprint);
    const otherFp = fingerprint(Buffer.from(other.split(" ")[1]!, "base64"));
    const viaPin = await cli(["status", "--host", "lab"], inventory({ lab: { ...base(), hostKey: otherFp } }));
    expect(viaPin.code).toBe(1);
    expect(viaPin.stderr).toMatch(/CHANGED: it is SHA256:/);
    expect(viaPin.stderr).toContain(sshd.fingerprint);
  });

  it("matches hashed known_hosts entries as ssh-keygen -H writes them", async () => {
    const kh = path.join(work, "hashed-known-hosts");
    writeFileSync(kh, readFileSync(sshd.knownHosts));
    const { execFileSync } = await import("node:child_process");
    execFileSync("ssh-keygen", ["-H", "-f", kh], { stdio: "ignore" });
    expect(readFileSync(kh, "utf8")).toMatch(/^\|1\|/);
    expect(knownHostKeys(kh, "127.0.0.1", sshd.port).keys).toHaveLength(1);
    const r = await cli(["status", "--host", "lab"], inventory({ lab: { ...base(), knownHosts: kh } }));
    expect(r.code, r.stderr).toBe(0);
  });

  it("refuses a user key the host does not authorize, and never falls back to a password", async () => {
    const wrong = path.join(work, `wrong-user-${randomBytes(3).toString("hex")}`);
    keygen(wrong);
    const r = await cli(["status", "--host", "lab"], inventory({ lab: { ...base(), identity: wrong } }));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("[REMOTE]");
    expect(r.stderr).toMatch(/refused the key/);
    // The URL form with --identity behaves the same.
    const url = await cli(["status", "--host", `ssh://root@127.0.0.1:${sshd.port}`, "--identity", wrong, "--known-hosts", sshd.knownHosts], inventory({}));
    expect(url.stderr).toMatch(/refused the key/);
  });

  it("says so when airlock is missing on the remote side, or is another version", async () => {
    const missing = await cli(["status", "--host", "lab"], inventory({ lab: { ...base(), airlock: "/nonexistent/airlock" } }));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/airlock is not installed on .*127\.0\.0\.1/);
    expect(missing.stderr).toMatch(/hint: install the same airlock there/);

    // A copy of this checkout that says it is another version.
    const copy = path.join(work, "other-airlock");
    mkdirSync(copy);
    cpSync(path.join(repoRoot, "dist"), path.join(copy, "dist"), { recursive: true });
    cpSync(path.join(repoRoot, "host-tools/bin"), path.join(copy, "host-tools/bin"), { recursive: true });
    symlinkSync(path.join(repoRoot, "node_modules"), path.join(copy, "node_modules"));
    const pkg = JSON.parse(readFileSync(path.join(repoRoot, "package.json"), "utf8")) as { version: string };
    writeFileSync(path.join(copy, "package.json"), JSON.stringify({ ...pkg, version: "9.9.9" }));
    const other = await cli(["status", "--host", "lab"], inventory({ lab: { ...base(), airlock: copy } }));
    expect(other.code).toBe(2);
    expect(other.stderr).toMatch(/the airlock on .* is 9\.9\.9 .* this one is 0\.1\.0/);
  });
});

describe("content-addressed upload over SSH", () => {
  it("resumes an upload cut mid-transfer (the sshd session killed) and verifies it on arrival", async () => {
    const file = path.join(work, "blob.bin");
    writeFileSync(file, randomBytes(48 << 20));
    const blob = await hashFile(file);
    const host: RemoteHost = { name: "lab", user: "root", host: "127.0.0.1", port: sshd.port, identity: sshd.userKey, knownHosts: [sshd.knownHosts], airlock: repoRoot, env: {} };
    const cache = path.join(work, "upload-cache");

    const first = await SshConnection.connect(host);
    const up1 = await BlobUploader.open(first, cache);
    let killed = false;
    const cut = up1.upload(blob, (sent) => {
      if (!killed && sent > blob.size * 0.4) {
        killed = true;
        for (const pid of sshd.sessionPids()) process.kill(pid, "SIGKILL");
      }
    });
    await expect(cut).rejects.toThrow(/cut after \d+ of \d+ bytes|No response|closed|Not connected|ECONNRESET/);
    first.close();
    const partSize = existsSync(`${cache}/blobs/sha256/${blob.sha256}.part`) ? readFileSync(`${cache}/blobs/sha256/${blob.sha256}.part`).length : 0;
    expect(partSize).toBeGreaterThan(blob.size * 0.3);
    expect(existsSync(`${cache}/blobs/sha256/${blob.sha256}`)).toBe(false);

    const second = await SshConnection.connect(host);
    const up2 = await BlobUploader.open(second, cache);
    const resumed = await up2.upload(blob);
    expect(resumed.status).toBe("resumed");
    expect(resumed.sent).toBeLessThan(blob.size * 0.75);
    const landed = readFileSync(`${cache}/blobs/sha256/${blob.sha256}`);
    expect(createHash("sha256").update(landed).digest("hex")).toBe(blob.sha256);
    // Present now: nothing is sent again.
    expect((await up2.upload(blob)).status).toBe("present");
    up2.close();
    second.close();
  });
});
