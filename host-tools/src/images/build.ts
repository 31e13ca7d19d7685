// Builds airlock boot images: kernel + initrd + command line + image.json. Reproducible by
// construction: every input is fingerprinted, the initrd is a canonical cpio (cpio.ts), and
// image.json records only content hashes and package names, never host paths or times. The
// fingerprints are also the cache key, so unchanged inputs reuse the cached result.
import { createHash } from "node:crypto";
import { copyFileSync, createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { Transform } from "node:stream";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { RECIPES, type ImageName, type ImageRecipe } from "../../../images/recipes.ts";
import { AirlockError } from "../../../proto/src/errors.ts";
import { canonicalJson, listTree } from "../../../proto/src/manifest/digest.ts";
import { cacheDir, projectRoot } from "../paths.ts";
import { declaredFirmware } from "../measure/declared-firmware.ts";
import { writeCpio, type CpioEntry } from "./cpio.ts";
import { busyboxApplets, extractKernel, findBusybox, findKernelDeb, hostFile, resolveModules, sharedLibraries, type HostFile } from "./host-inputs.ts";

/** Bump when the builder's output for the same inputs changes. */
const BUILDER_VERSION = 2;
/** vCPU model the emulated PSP declares (its signature is in each VMSA, so it is part of the measurement). */
export const DECLARED_VCPU_TYPE = "EPYC-v4";

export type Compression = "none" | "gzip";

export interface FileDigest {
  file: string;
  size: number;
  sha256: string;
  sha384: string;
}

export interface ImageInfo {
  format: "airlock-image/v1";
  name: ImageName;
  kernelRelease: string;
  cmdline: string;
  compression: Compression;
  /** Firmware the emulated launch declares (measure/declared-firmware.ts), relative to the image folder. */
  ovmf: "declared-firmware.fd";
  vcpuType: string;
  files: { kernel: FileDigest; initrd: FileDigest; cmdline: FileDigest; firmware: FileDigest };
  inputs: Record<string, unknown>;
  /** Fingerprint of every input: equal keys mean equal images. */
  key: string;
}

export interface BuiltImage {
  dir: string;
  info: ImageInfo;
  cached: boolean;
}

export interface BuildProgress {
  image: ImageName;
  step: string;
  /** 0..1 where a step can tell. */
  fraction?: number;
}

export interface BuildOptions {
  /** Folder baked in at /workload (sandbox image only). */
  workloadDir?: string;
  kernelDeb?: string;
  compression?: Compression;
  onProgress?: (p: BuildProgress) => void;
}

interface Gathered {
  entries: CpioEntry[];
  kernel: { vmlinuz: string; release: string };
  inputs: Record<string, unknown>;
}

function dirsFor(paths: string[]): CpioEntry[] {
  const dirs = new Set<string>();
  for (const p of paths) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
  }
  return [...dirs].map((d) => ({ path: d, type: "dir" as const }));
}

async function gather(recipe: ImageRecipe, options: BuildOptions): Promise<Gathered> {
  const root = projectRoot();
  const progress = (step: string): void => options.onProgress?.({ image: recipe.name, step });
  progress("fingerprinting inputs");

  const deb = await hostFile(findKernelDeb(options.kernelDeb));
  const kernel = extractKernel(deb, cacheDir());
  const busybox = await hostFile(findBusybox());
  const files: CpioEntry[] = [];
  const hostFiles: { path: string; file: HostFile; mode: number }[] = [];
  const addHost = async (guestPath: string, source: string, mode = 0o644): Promise<HostFile> => {
    const file = await hostFile(source);
    hostFiles.push({ path: guestPath, file, mode });
    return file;
  };

  hostFiles.push({ path: "bin/busybox", file: busybox, mode: 0o755 });
  for (const applet of busyboxApplets(busybox.source)) files.push({ path: `bin/${applet}`, type: "symlink", target: "busybox" });
  files.push({ path: "dev/console", type: "chardev", major: 5, minor: 1, mode: 0o600 });
  for (const d of ["proc", "sys", "tmp", "root", "data", "etc/airlock", "lib/modules"]) files.push({ path: d, type: "dir" });

  const readRepo = (rel: string): Buffer => readFileSync(path.join(root, rel));
  files.push({ path: "init", type: "file", mode: 0o755, data: readRepo(`images/${recipe.name}/init`) });
  files.push({ path: "etc/airlock/common-init.sh", type: "file", data: readRepo("images/common-init.sh") });

  const modules: Record<string, string> = {};
  const moduleOrder = resolveModules(kernel.modulesDir, recipe.modules);
  for (const m of moduleOrder) {
    const f = await addHost(`lib/modules/${path.basename(m)}`, path.join(kernel.modulesDir, m));
    modules[path.basename(m)] = f.sha256;
  }
  files.push({ path: "etc/airlock/modules", type: "file", data: Buffer.from(moduleOrder.map((m) => `${path.basename(m)}\n`).join("")) });

  const users = [{ name: "root", uid: 0 }, ...(recipe.users ?? [])];
  files.push({ path: "etc/passwd", type: "file", data: Buffer.from(users.map((u) => `${u.name}:x:${u.uid}:${u.uid}::/${u.uid === 0 ? "root" : "tmp"}:/bin/sh\n`).join("")) });
  files.push({ path: "etc/group", type: "file", data: Buffer.from(users.map((u) => `${u.name}:x:${u.uid}:\n`).join("")) });

  const inputs: Record<string, unknown> = {
    kernelPackage: { name: path.basename(deb.source), sha256: deb.sha256 },
    busybox: busybox.sha256,
    modules,
    scripts: createHash("sha256").update(readRepo(`images/${recipe.name}/init`)).update(readRepo("images/common-init.sh")).digest("hex"),
  };

  if (recipe.program) {
    progress("collecting node and the program bundle");
    const node = await addHost("bin/node", process.execPath, 0o755);
    const libs: Record<string, string> = {};
    const binaries = [process.execPath];
    if (recipe.vsockAddon) {
      const addonDir = path.join(root, "node_modules/node-vsock-linux-x64-gnu");
      const addon = path.join(addonDir, "node-vsock.linux-x64-gnu.node");
      if (!existsSync(addon)) throw new AirlockError("IMAGE_MISSING", `${addon} is missing`, { hint: "run `npm ci` in the airlock checkout" });
      await addHost("opt/airlock/node_modules/node-vsock-linux-x64-gnu/node-vsock.linux-x64-gnu.node", addon, 0o755);
      files.push({ path: "opt/airlock/node_modules/node-vsock-linux-x64-gnu/package.json", type: "file", data: Buffer.from('{"name":"node-vsock-linux-x64-gnu","main":"node-vsock.linux-x64-gnu.node"}\n') });
      binaries.push(addon);
      // airlock's own shim: the guests listen on vsock through it (proto/src/vsock-stream.ts).
      const shim = path.join(root, "host-tools/native/build/Release/airlock_fabric.node");
      if (!existsSync(shim)) throw new AirlockError("IMAGE_MISSING", `${shim} is not built`, { hint: "run `npm run build` in the airlock checkout" });
      const shimFile = await addHost("opt/airlock/node_modules/airlock-native/airlock_fabric.node", shim, 0o755);
      files.push({ path: "opt/airlock/node_modules/airlock-native/package.json", type: "file", data: Buffer.from('{"name":"airlock-native","main":"airlock_fabric.node"}\n') });
      binaries.push(shim);
      inputs.nativeShim = shimFile.sha256;
    }
    for (const lib of [...new Set(binaries.flatMap(sharedLibraries))].sort()) {
      libs[lib] = (await addHost(lib.slice(1), lib, 0o755)).sha256;
    }
    const bundle = path.join(root, "dist", recipe.program);
    if (!existsSync(bundle)) throw new AirlockError("IMAGE_MISSING", `${bundle} is not built`, { hint: "run `npm run build` in the airlock checkout" });
    const program = await addHost(`opt/airlock/${recipe.program}`, bundle);
    // The program's chunks (images/build-bundles.mjs: code it imports only when needed), every one.
    const chunkDir = bundle.replace(/\.mjs$/, "-chunks");
    const chunks: Record<string, string> = {};
    for (const f of existsSync(chunkDir) ? readdirSync(chunkDir).sort() : []) chunks[f] = (await addHost(`opt/airlock/${path.basename(chunkDir)}/${f}`, path.join(chunkDir, f))).sha256;
    Object.assign(inputs, { node: { version: process.version, sha256: node.sha256 }, libraries: libs, program: program.sha256, ...(Object.keys(chunks).length > 0 ? { programChunks: chunks } : {}) });
  }

  if (recipe.workload) {
    files.push({ path: "workload", type: "dir" });
    if (options.workloadDir) {
      const tree = listTree(options.workloadDir);
      for (const e of tree) {
        const p = `workload/${e.path}`;
        if (e.type === "dir") files.push({ path: p, type: "dir" });
        else if (e.type === "symlink") files.push({ path: p, type: "symlink", target: readlinkSync(path.join(options.workloadDir, e.path)) });
        else hostFiles.push({ path: p, file: { source: path.join(options.workloadDir, e.path), size: e.size, sha256: e.sha256 }, mode: e.mode });
      }
      inputs.workloadTree = createHash("sha256").update(canonicalJson(tree)).digest("hex");
    } else {
      inputs.workloadTree = null;
    }
  }

  for (const h of hostFiles) files.push({ path: h.path, type: "hostfile", source: h.file.source, size: h.file.size, mode: h.mode });
  const present = new Set(files.map((f) => f.path));
  const entries = [...files, ...dirsFor(files.map((f) => f.path)).filter((d) => !present.has(d.path) && (present.add(d.path), true))];
  return { entries, kernel: { vmlinuz: kernel.vmlinuz, release: kernel.release }, inputs };
}

export async function digestFile(file: string): Promise<FileDigest> {
  const a = createHash("sha256");
  const b = createHash("sha384");
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    a.update(chunk as Buffer);
    b.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { file: path.basename(file), size, sha256: a.digest("hex"), sha384: b.digest("hex") };
}

/** Builds (or reuses from the cache) one image and returns its folder in the cache. */
export async function buildImage(name: ImageName, options: BuildOptions = {}): Promise<BuiltImage> {
  const recipe = RECIPES[name];
  const compression = options.compression ?? "none";
  const g = await gather(recipe, options);
  const key = createHash("sha256").update(canonicalJson({ BUILDER_VERSION, recipe, compression, inputs: g.inputs })).digest("hex");
  const dir = path.join(cacheDir(), "images", `${name}-${key.slice(0, 24)}`);
  const infoFile = path.join(dir, "image.json");
  if (existsSync(infoFile)) {
    options.onProgress?.({ image: name, step: "cached" });
    return { dir, info: JSON.parse(readFileSync(infoFile, "utf8")) as ImageInfo, cached: true };
  }

  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    copyFileSync(g.kernel.vmlinuz, path.join(tmp, "vmlinuz"));
    writeFileSync(path.join(tmp, "cmdline"), recipe.cmdline);
    writeFileSync(path.join(tmp, "declared-firmware.fd"), declaredFirmware());
    const total = g.entries.reduce((n, e) => n + (e.type === "hostfile" ? e.size : e.type === "file" ? e.data.length : 0), 0);
    let done = 0;
    let lastReport = -1;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        done += chunk.length;
        const pct = Math.floor((done / total) * 10);
        if (pct !== lastReport) {
          lastReport = pct;
          options.onProgress?.({ image: name, step: "writing initrd", fraction: Math.min(1, done / total) });
        }
        cb(null, chunk);
      },
    });
    const sink = createWriteStream(path.join(tmp, "initrd.img"));
    const written = compression === "gzip" ? pipeline(counter, createGzip({ level: 6 }), sink) : pipeline(counter, sink);
    try {
      await writeCpio(counter, g.entries);
      counter.end();
    } catch (err) {
      counter.destroy(err as Error);
      await written.catch(() => {});
      throw err;
    }
    await written;

    const info: ImageInfo = {
      format: "airlock-image/v1",
      name,
      kernelRelease: g.kernel.release,
      cmdline: recipe.cmdline,
      compression,
      ovmf: "declared-firmware.fd",
      vcpuType: DECLARED_VCPU_TYPE,
      files: {
        kernel: await digestFile(path.join(tmp, "vmlinuz")),
        initrd: await digestFile(path.join(tmp, "initrd.img")),
        cmdline: await digestFile(path.join(tmp, "cmdline")),
        firmware: await digestFile(path.join(tmp, "declared-firmware.fd")),
      },
      inputs: g.inputs,
      key,
    };
    writeFileSync(path.join(tmp, "image.json"), `${JSON.stringify(info, null, 2)}\n`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw AirlockError.from(err, "IMAGE_BUILD");
  }
  options.onProgress?.({ image: name, step: "done" });
  return { dir, info: JSON.parse(readFileSync(infoFile, "utf8")) as ImageInfo, cached: false };
}

export const IMAGE_FILES = ["vmlinuz", "initrd.img", "cmdline", "declared-firmware.fd", "image.json"] as const;

export type PairImages = Record<"firewall" | "sandbox", BuiltImage>;

/** Builds (or reuses) both images of a pair; the sandbox's carries the workload bundle. */
export async function buildPairImages(options: BuildOptions = {}): Promise<PairImages> {
  // One after the other: both read the same large inputs, and progress stays readable.
  const firewall = await buildImage("firewall", options);
  const sandbox = await buildImage("sandbox", options);
  return { firewall, sandbox };
}

/** Copies a built image into `out/<name>/` (for `airlock images build --out`). */
export function exportImage(image: BuiltImage, out: string): string {
  const dest = path.join(out, image.info.name);
  mkdirSync(dest, { recursive: true });
  for (const f of IMAGE_FILES) copyFileSync(path.join(image.dir, f), path.join(dest, f));
  return dest;
}
