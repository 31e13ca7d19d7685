// What a room needs on the remote host, as a plan of content-addressed files: both boot images
// (into the remote cache's images/ folder, where the remote airlock finds them under the same
// key) and the room folder: the manifest rewritten to name its files relatively (workload bundle,
// encrypted inputs, collaborators' public keys; recipients and CA certificates inline), so the
// room's digest is the same on both sides. The remote side (`airlock remote-side stage`) builds
// those folders from the uploaded blobs; every path in a plan is checked there (hostile input).
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, linkSync, mkdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseDocument } from "yaml";
import { AirlockError } from "../../../proto/src/errors.ts";
import { listTree } from "../../../proto/src/manifest/digest.ts";
import type { Manifest } from "../../../proto/src/manifest/index.ts";
import { IMAGE_FILES, type PairImages } from "../images/build.ts";
import { cacheDir } from "../paths.ts";

export interface StagedFile {
  path: string;
  sha256: string;
  mode: number;
  /** Local source (not sent). */
  source?: string;
  size?: number;
}

export interface StagePlan {
  images: { dir: string; files: StagedFile[] }[];
  room: { files: StagedFile[]; dirs: string[]; symlinks: { path: string; target: string }[]; texts: { path: string; text: string }[] };
}

const sha256 = (b: Buffer | string): string => createHash("sha256").update(b).digest("hex");

/** The plan for one room and its images (hashes the local files). */
export async function planRoom(manifest: Manifest, images: PairImages, hash: (file: string) => Promise<{ sha256: string; size: number }>): Promise<StagePlan> {
  const imagePlans = await Promise.all(
    (["firewall", "sandbox"] as const).map(async (role) => ({
      dir: `images/${path.basename(images[role].dir)}`,
      files: await Promise.all(IMAGE_FILES.map(async (f) => {
        const source = path.join(images[role].dir, f);
        return { path: f, mode: 0o644, source, ...(await hash(source)) };
      })),
    })),
  );
  const files: StagedFile[] = [];
  const dirs = ["workload"];
  const symlinks: { path: string; target: string }[] = [];
  const texts: { path: string; text: string }[] = [];
  for (const e of listTree(manifest.workload.bundle)) {
    const p = `workload/${e.path}`;
    if (e.type === "dir") dirs.push(p);
    else if (e.type === "symlink") symlinks.push({ path: p, target: readlinkSync(path.join(manifest.workload.bundle, e.path)) });
    else files.push({ path: p, sha256: e.sha256, size: e.size, mode: e.mode, source: path.join(manifest.workload.bundle, e.path) });
  }
  const doc = parseDocument(readFileSync(manifest.file, "utf8"));
  doc.setIn(["workload", "bundle"], "./workload");
  if (manifest.inputs.length) dirs.push("inputs");
  manifest.inputs.forEach((input, i) => {
    const p = `inputs/${i}`;
    files.push({ path: p, mode: 0o644, source: input.path, ...{ sha256: "", size: 0 } });
    doc.setIn(["inputs", i, "path"], `./${p}`);
  });
  manifest.outputs.forEach((o, i) => o.recipient && doc.setIn(["outputs", i, "recipient"], o.recipient));
  if (manifest.console?.recipient) doc.setIn(["console", "recipient"], manifest.console.recipient);
  if (manifest.collaborators.length) dirs.push("keys");
  manifest.collaborators.forEach((c, i) => {
    texts.push({ path: `keys/collaborator-${i}.pem`, text: c.publicKeyPem });
    doc.setIn(["collaborators", i, "publicKey"], `./keys/collaborator-${i}.pem`);
  });
  manifest.egress.forEach((e, i) => {
    if (e.tls?.caPem && doc.hasIn(["egress", i, "tls", "ca"])) {
      doc.deleteIn(["egress", i, "tls", "ca"]);
      doc.setIn(["egress", i, "tls", "caPem"], e.tls.caPem);
    }
  });
  if (manifest.governance.tls?.caPem && doc.hasIn(["governance", "tls", "ca"])) {
    doc.deleteIn(["governance", "tls", "ca"]);
    doc.setIn(["governance", "tls", "caPem"], manifest.governance.tls.caPem);
  }
  texts.push({ path: "room.yaml", text: doc.toString() });
  for (const f of files) if (!f.sha256) Object.assign(f, await hash(f.source!));
  return { images: imagePlans, room: { files, dirs, symlinks, texts } };
}

/** The blobs a plan needs (deduplicated), with their local sources. */
export function planBlobs(plan: StagePlan): { file: string; sha256: string; size: number }[] {
  const all = [...plan.images.flatMap((i) => i.files), ...plan.room.files];
  const seen = new Map<string, { file: string; sha256: string; size: number }>();
  for (const f of all) if (!seen.has(f.sha256)) seen.set(f.sha256, { file: f.source!, sha256: f.sha256, size: f.size! });
  return [...seen.values()];
}

/** The plan as it is sent: no local paths. */
export function wirePlan(plan: StagePlan): StagePlan {
  const strip = (f: StagedFile): StagedFile => ({ path: f.path, sha256: f.sha256, mode: f.mode });
  return { images: plan.images.map((i) => ({ dir: i.dir, files: i.files.map(strip) })), room: { ...plan.room, files: plan.room.files.map(strip) } };
}

// ---- remote side ----

const SAFE_REL = /^(?!\/)(?!.*(^|\/)\.\.?(\/|$))[A-Za-z0-9._+@=,-][A-Za-z0-9._+@=, /-]{0,1023}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const MAX_ENTRIES = 100_000;

function checkRel(p: unknown, what: string): string {
  if (typeof p !== "string" || !SAFE_REL.test(p) || p.includes("//")) throw new AirlockError("REMOTE", `stage plan: ${what} ${JSON.stringify(p)?.slice(0, 100)} is not a safe relative path`);
  return p;
}

/** Checks a plan received on stdin: shapes, sizes, paths, hashes. */
export function checkPlan(raw: unknown): StagePlan {
  const bad = (what: string): never => {
    throw new AirlockError("REMOTE", `stage plan: ${what}`);
  };
  const o = raw as StagePlan;
  if (!o || typeof o !== "object" || !Array.isArray(o.images) || !o.room || typeof o.room !== "object") bad("expected {images, room}");
  const checkFiles = (list: unknown, at: string): StagedFile[] => {
    if (!Array.isArray(list) || list.length > MAX_ENTRIES) bad(`${at} must be a list of at most ${MAX_ENTRIES}`);
    return (list as StagedFile[]).map((f) => {
      if (!f || typeof f.sha256 !== "string" || !HEX64.test(f.sha256) || typeof f.mode !== "number" || (f.mode & ~0o777) !== 0) bad(`${at}: each file needs a sha256 and a mode`);
      return { path: checkRel(f.path, `${at} path`), sha256: f.sha256, mode: f.mode };
    });
  };
  if (o.images.length !== 2) bad("expected two images");
  const images = o.images.map((i) => {
    const dir = checkRel(i?.dir, "image dir");
    if (!/^images\/(firewall|sandbox)-[0-9a-f]{24}$/.test(dir)) bad(`image dir ${dir} is not images/<name>-<key>`);
    return { dir, files: checkFiles(i.files, dir) };
  });
  const r = o.room;
  if (!Array.isArray(r.dirs) || !Array.isArray(r.symlinks) || !Array.isArray(r.texts) || r.dirs.length + r.symlinks.length + r.texts.length > MAX_ENTRIES) bad("room needs dirs, symlinks and texts lists");
  const texts = r.texts.map((t) => {
    if (typeof t?.text !== "string" || t.text.length > 1 << 20) bad("a text is at most 1 MiB");
    return { path: checkRel(t.path, "text"), text: t.text };
  });
  const symlinks = r.symlinks.map((s) => {
    if (typeof s?.target !== "string" || s.target.length > 4096) bad("a symlink target is a string");
    return { path: checkRel(s.path, "symlink"), target: s.target };
  });
  if (!texts.some((t) => t.path === "room.yaml")) bad("room.yaml is missing");
  return { images, room: { files: checkFiles(r.files, "room"), dirs: r.dirs.map((d) => checkRel(d, "dir")), symlinks, texts } };
}

/**
 * Builds the plan's folders in this host's cache from its blobs (`blobs/sha256/<hex>`), each under
 * a temporary name then renamed, so a folder is either whole or absent. Returns the room manifest.
 */
export function materialize(plan: StagePlan): { manifest: string; images: string[] } {
  const cache = cacheDir();
  const blob = (sha: string): string => {
    const f = path.join(cache, "blobs", "sha256", sha);
    if (!existsSync(f)) throw new AirlockError("FILE_UNREADABLE", `blob ${sha} was not uploaded to ${path.dirname(f)}`);
    return f;
  };
  const place = (dir: string, fill: (tmp: string) => void): void => {
    if (existsSync(dir)) return;
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true, mode: 0o700 });
    try {
      fill(tmp);
      renameSync(tmp, dir);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
  };
  const images = plan.images.map((i) => {
    const dir = path.join(cache, i.dir);
    // Large and never modified: hard links to the blobs (a copy where links cannot be made).
    place(dir, (tmp) => i.files.forEach((f) => linkOrCopy(blob(f.sha256), path.join(tmp, f.path))));
    return dir;
  });
  const roomKey = sha256(JSON.stringify(plan.room));
  const roomDir = path.join(cache, "rooms", roomKey.slice(0, 32));
  mkdirSync(path.dirname(roomDir), { recursive: true, mode: 0o700 });
  place(roomDir, (tmp) => {
    for (const d of plan.room.dirs) mkdirSync(path.join(tmp, d), { recursive: true });
    for (const f of plan.room.files) {
      const dest = path.join(tmp, f.path);
      mkdirSync(path.dirname(dest), { recursive: true });
      // The workload's files are copied: their modes are part of the room's digest.
      if (f.path.startsWith("inputs/")) linkOrCopy(blob(f.sha256), dest);
      else {
        copyFileSync(blob(f.sha256), dest);
        chmodSync(dest, f.mode);
      }
    }
    // Texts before symlinks, so no write can follow a link the plan made.
    for (const t of plan.room.texts) writeFileSync(path.join(tmp, t.path), t.text, { mode: 0o600, flag: "wx" });
    for (const s of plan.room.symlinks) symlinkSync(s.target, path.join(tmp, s.path));
  });
  return { manifest: path.join(roomDir, "room.yaml"), images };
}

function linkOrCopy(from: string, to: string): void {
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
  }
}
