// Finds the host files an image is made of and fingerprints them. Everything an image contains
// comes from here, so the fingerprints are the whole cache key and the provenance in image.json.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cacheDir } from "../paths.ts";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";

export const DEFAULT_DEB_DIR = "/var/cache/airlock/debs";
export const SETUP_HINT = "run host-tools/scripts/setup.sh (it installs QEMU, busybox-static and Debian's kernel package)";

export async function sha256File(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest("hex");
}

export interface HostFile {
  /** Absolute path on the host. */
  source: string;
  size: number;
  sha256: string;
}

/**
 * A host file and its SHA-256. Hashing node (99 MB) and the kernel package for every `airlock up`
 * took most of a second before any VM started (issue 12), so a file's digest is remembered under
 * its identity and change times — device, inode, size, mtime and ctime in nanoseconds, as git's
 * index does: any write to the file changes its ctime, which no user can set back — in memory
 * and in the cache folder (fingerprints/, one small file per identity, written atomically).
 */
export async function hostFile(source: string): Promise<HostFile> {
  let st;
  try {
    st = statSync(source, { bigint: true });
  } catch {
    throw new AirlockError("IMAGE_MISSING", `image input ${source} does not exist`, { hint: SETUP_HINT });
  }
  const identity = `${path.resolve(source)}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  let sha256 = fingerprints.get(identity) ?? readFingerprint(identity);
  if (sha256 === undefined) {
    sha256 = await sha256File(source);
    writeFingerprint(identity, sha256);
  }
  fingerprints.set(identity, sha256);
  return { source, size: Number(st.size), sha256 };
}

const fingerprints = new Map<string, string>();
const fingerprintFile = (identity: string): string => path.join(cacheDir(), "fingerprints", createHash("sha256").update(identity).digest("hex"));

function readFingerprint(identity: string): string | undefined {
  try {
    const [id, sha256] = readFileSync(fingerprintFile(identity), "utf8").split("\n");
    // The file names its identity in full: a hash collision of names never yields another file's digest.
    return id === identity.replace("\0", " ") && /^[0-9a-f]{64}$/.test(sha256 ?? "") ? sha256 : undefined;
  } catch {
    return undefined;
  }
}

function writeFingerprint(identity: string, sha256: string): void {
  const file = fingerprintFile(identity);
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${identity.replace("\0", " ")}\n${sha256}\n`);
    renameSync(tmp, file);
  } catch {
    // Only a cache: the next run hashes the file again.
  }
}

/** The Debian kernel package to use: AIRLOCK_KERNEL_DEB, or the newest linux-image-*-amd64 in the cache. */
export function findKernelDeb(explicit?: string): string {
  const chosen = explicit ?? process.env.AIRLOCK_KERNEL_DEB;
  if (chosen) {
    if (!existsSync(chosen)) throw new AirlockError("IMAGE_MISSING", `kernel package ${chosen} does not exist`, { hint: SETUP_HINT });
    return path.resolve(chosen);
  }
  const debs = existsSync(DEFAULT_DEB_DIR)
    ? readdirSync(DEFAULT_DEB_DIR).filter((f) => /^linux-image-[0-9.]+-\d+-amd64_.*\.deb$/.test(f))
    : [];
  if (debs.length === 0) throw new AirlockError("IMAGE_MISSING", `no Debian kernel package in ${DEFAULT_DEB_DIR}`, { hint: SETUP_HINT });
  debs.sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  return path.join(DEFAULT_DEB_DIR, debs[debs.length - 1]!);
}

export interface KernelTree {
  /** Kernel release, e.g. 6.1.0-56-amd64. */
  release: string;
  vmlinuz: string;
  /** lib/modules/<release>/kernel */
  modulesDir: string;
}

/** Unpacks the kernel package once into the cache (keyed by the package's hash). */
export function extractKernel(deb: HostFile, cacheDir: string): KernelTree {
  const dir = path.join(cacheDir, "kernels", deb.sha256.slice(0, 32));
  if (!existsSync(path.join(dir, ".complete"))) {
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    try {
      execFileSync("dpkg-deb", ["-x", deb.source, tmp], { stdio: ["ignore", "ignore", "pipe"] });
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw new AirlockError("IMAGE_BUILD", `cannot unpack kernel package ${deb.source}: ${(err as Error).message}`, { cause: err });
    }
    execFileSync("touch", [path.join(tmp, ".complete")]);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(path.dirname(dir), { recursive: true });
    renameSync(tmp, dir);
  }
  const boot = readdirSync(path.join(dir, "boot")).find((f) => f.startsWith("vmlinuz-"));
  if (!boot) throw new AirlockError("IMAGE_BUILD", `${deb.source} holds no /boot/vmlinuz-*: not a kernel image package`);
  const release = boot.slice("vmlinuz-".length);
  return { release, vmlinuz: path.join(dir, "boot", boot), modulesDir: path.join(dir, "lib/modules", release, "kernel") };
}

/** busybox from Debian's busybox-static: it must be static, as the minimal image has no libc. */
export function findBusybox(): string {
  for (const candidate of ["/bin/busybox", "/usr/bin/busybox"]) {
    if (existsSync(candidate)) {
      // ldd refuses a static executable; that refusal is what we want to see.
      try {
        execFileSync("ldd", [candidate], { stdio: "pipe" });
      } catch {
        return candidate;
      }
    }
  }
  throw new AirlockError("IMAGE_MISSING", "no statically linked busybox on this host", { hint: SETUP_HINT });
}

export function busyboxApplets(busybox: string): string[] {
  return execFileSync(busybox, ["--list"]).toString().split("\n").filter((a) => /^[a-z0-9_.[-]+$/.test(a) && a !== "busybox").sort();
}

/** Shared libraries an ELF binary needs, as ldd resolves them on this host (absolute paths). */
export function sharedLibraries(binary: string): string[] {
  const out = execFileSync("ldd", [binary]).toString();
  const libs = new Set<string>();
  for (const line of out.split("\n")) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.add(m[1]!);
  }
  return [...libs].sort();
}

/** A module's dependencies, from the `depends=` field of its .modinfo section. */
export function moduleDepends(koFile: string): string[] {
  const data = readFileSync(koFile);
  const at = data.indexOf("\0depends=");
  if (at < 0) return [];
  const start = at + "\0depends=".length;
  const value = data.subarray(start, data.indexOf(0, start)).toString("ascii");
  return value ? value.split(",").filter(Boolean) : [];
}

/**
 * Expands modules (paths relative to lib/modules/<release>/kernel) with their dependencies, in
 * an order insmod can follow: dependencies first. Refuses a dependency it cannot find.
 */
export function resolveModules(modulesDir: string, wanted: string[]): string[] {
  const index = new Map<string, string>();
  const walk = (rel: string): void => {
    for (const name of readdirSync(path.join(modulesDir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${name.name}` : name.name;
      if (name.isDirectory()) walk(r);
      else if (name.name.endsWith(".ko")) index.set(name.name.slice(0, -3).replace(/-/g, "_"), r);
    }
  };
  walk("");
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = (rel: string): void => {
    if (order.includes(rel)) return;
    if (visiting.has(rel)) throw new AirlockError("IMAGE_BUILD", `kernel module dependency cycle at ${rel}`);
    visiting.add(rel);
    for (const dep of moduleDepends(path.join(modulesDir, rel))) {
      const depRel = index.get(dep.replace(/-/g, "_"));
      if (!depRel) throw new AirlockError("IMAGE_BUILD", `kernel module ${rel} needs ${dep}, which the kernel package does not have`);
      visit(depRel);
    }
    visiting.delete(rel);
    order.push(rel);
  };
  for (const w of wanted) {
    if (!existsSync(path.join(modulesDir, w))) throw new AirlockError("IMAGE_BUILD", `kernel module ${w} is not in the kernel package`);
    visit(w);
  }
  return order;
}
