// airlock's version identity: the package version and a hash of the built bundles (the host
// tooling and both guest programs), so two checkouts agree only when they would build, launch and
// measure the same pair. `airlock version --json` prints it; `--host` compares the remote's with it.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { projectRoot } from "../paths.ts";

export interface VersionIdentity {
  name: "airlock";
  version: string;
  /** SHA-256 over dist/'s bundles (names and contents, sorted). */
  build: string;
}

export function versionIdentity(): VersionIdentity {
  const root = projectRoot();
  const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { version?: string };
  const dist = path.join(root, "dist");
  const h = createHash("sha256");
  const files = existsSync(dist) ? walk(dist).sort() : [];
  for (const f of files) h.update(`${f}\0`).update(readFileSync(path.join(dist, f))).update("\0");
  return { name: "airlock", version: pkg.version ?? "0.0.0", build: files.length ? h.digest("hex") : "unbuilt" };
}

function walk(dir: string, rel = ""): string[] {
  return readdirSync(path.join(dir, rel), { withFileTypes: true }).flatMap((e) => {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) return walk(dir, r);
    return e.isFile() && /\.(m?js|node)$/.test(e.name) ? [r] : [];
  });
}
