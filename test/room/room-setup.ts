// Shared set-up for the room end-to-end tests: copy an example to a temporary folder, make keys and
// encrypted inputs with the `age` CLI (as a data owner would), grant the input identities to the
// room, run it with the real `airlock` CLI, and scan folders for a planted marker.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, lstatSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { airlock, repoRoot, testStateDir, type CliResult } from "../helpers.ts";

export interface RoomCopy {
  dir: string;
  manifest: string;
  state: string;
  env: NodeJS.ProcessEnv;
  keys: string;
}

/** Copies examples/<name> to a fresh folder with a fresh airlock state (pairs, key broker, PSP). */
export function copyExample(name: string): RoomCopy {
  return copyRoom(path.join(repoRoot, "examples", name));
}

/** Copies a room folder (room.yaml and what it names) to a fresh folder with a fresh airlock state. */
export function copyRoom(source: string): RoomCopy {
  const dir = mkdtempSync(path.join(tmpdir(), `airlock-room-${path.basename(source)}-`));
  cpSync(source, path.join(dir, "room"), { recursive: true });
  const keys = path.join(dir, "owner-keys");
  mkdirSync(keys);
  const state = testStateDir();
  return { dir, manifest: path.join(dir, "room/room.yaml"), state, env: { AIRLOCK_STATE: state }, keys };
}

export function removeRoom(room: RoomCopy): void {
  rmSync(room.dir, { recursive: true, force: true });
  rmSync(room.state, { recursive: true, force: true });
}

/** `age-keygen`: returns the identity file and its recipient. */
export function ageKeygen(file: string): string {
  execFileSync("age-keygen", ["-o", file], { stdio: "ignore" });
  return execFileSync("age-keygen", ["-y", file]).toString().trim();
}

/** Encrypts `plaintext` with the `age` CLI to a fresh identity; returns the identity file. */
export function ageEncryptInput(room: RoomCopy, input: string, plaintext: Buffer, target: string): string {
  const identity = path.join(room.keys, `${input}.key`);
  const recipient = ageKeygen(identity);
  const clear = path.join(room.keys, `${input}.clear`);
  writeFileSync(clear, plaintext);
  mkdirSync(path.dirname(target), { recursive: true });
  execFileSync("age", ["-r", recipient, "-o", target, clear]);
  return identity;
}

export async function grant(room: RoomCopy, input: string, identity: string): Promise<void> {
  const r = await airlock(["manifest", "grant", room.manifest, "--input", input, "--identity", identity], room.env);
  if (r.code !== 0) throw new Error(`grant failed: ${r.stderr}`);
}

export function runRoom(room: RoomCopy, out: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return airlock(["run", room.manifest, "--out", out, "--accel", "tcg", ...extra], { ...room.env, ...env }, 280_000);
}

/** The marker as a leak might carry it: verbatim, hex (either case), base64 and base64url. */
export function markerForms(marker: string): string[] {
  const b = Buffer.from(marker);
  return [marker, b.toString("hex"), b.toString("hex").toUpperCase(), b.toString("base64").replace(/=+$/, ""), b.toString("base64url")];
}

/** Every path under `dirs` whose name (when `names`) or bytes contain one of `needles`. */
function pathsContaining(dirs: string[], needles: Buffer[], names: boolean): string[] {
  const hits: string[] = [];
  const walk = (p: string): void => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return;
    }
    if (names && needles.some((f) => Buffer.from(path.basename(p)).includes(f))) hits.push(`${p} (name)`);
    if (st.isDirectory()) for (const n of readdirSync(p)) walk(path.join(p, n));
    else if (st.isFile()) {
      const data = readFileSync(p);
      if (needles.some((f) => data.includes(f))) hits.push(p);
    }
  };
  for (const d of dirs) walk(d);
  return hits;
}

/** Every file under `dirs` whose name or bytes contain any form of `marker` (markerForms). */
export function leaksOf(dirs: string[], marker: string): string[] {
  return pathsContaining(dirs, markerForms(marker).map((f) => Buffer.from(f)), true);
}

/** Every regular file under `dirs` whose bytes contain `marker`. */
export function filesContaining(dirs: string[], marker: string): string[] {
  return pathsContaining(dirs, [Buffer.from(marker)], false);
}

/**
 * Opens a sealed output as its recipient would: `age -d` with the identity, then GNU tar. Returns
 * each file's bytes by its path inside the archive.
 */
export function openSealed(file: string, identity: string): Map<string, Buffer> {
  const dir = mkdtempSync(path.join(tmpdir(), "airlock-sealed-"));
  try {
    // From a file: GNU tar stops reading at the end-of-archive marker, before the bucket's padding.
    const tar = path.join(dir, ".archive.tar");
    execFileSync("age", ["-d", "-i", identity, "-o", tar, file]);
    execFileSync("tar", ["-x", "-f", tar, "-C", dir]);
    rmSync(tar);
    const files = new Map<string, Buffer>();
    const walk = (rel: string): void => {
      for (const n of readdirSync(path.join(dir, rel))) {
        const r = rel ? `${rel}/${n}` : n;
        if (lstatSync(path.join(dir, r)).isDirectory()) walk(r);
        else files.set(r, readFileSync(path.join(dir, r)));
      }
    };
    walk("");
    return files;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface AuditLine {
  seq: number;
  kind: string;
  data: Record<string, unknown>;
}

export function auditRecords(file: string): AuditLine[] {
  return readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditLine);
}
