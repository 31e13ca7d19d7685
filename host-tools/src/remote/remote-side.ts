// What the remote host's airlock does for `--host` beyond the ordinary commands (the hidden
// `airlock remote-side`): tell its cache and state folders and its emulated PSP's root, build a
// staged room from uploaded blobs, and list a run's --out folder with hashes for the download.
import { createHash } from "node:crypto";
import { lstatSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import { EmulatedPsp } from "../attestation/index.ts";
import { embeddedBrokerDirs } from "../kbs/grant.ts";
import { cacheDir, stateDir } from "../paths.ts";
import { checkPlan, materialize } from "./stage.ts";

export interface RemoteInfo {
  cacheDir: string;
  stateDir: string;
  /** The emulated PSP's root certificate (public): the key policy the user's broker applies trusts it. */
  pspArkPem: string;
}

export function remoteInfo(): RemoteInfo {
  return { cacheDir: cacheDir(), stateDir: stateDir(), pspArkPem: EmulatedPsp.open(embeddedBrokerDirs().psp).arkPem };
}

export function stageFromStdin(text: string): { manifest: string; images: string[] } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new AirlockError("REMOTE", "stage: the plan on stdin is not JSON");
  }
  return materialize(checkPlan(raw));
}

export interface OutEntry {
  path: string;
  type: "file" | "dir";
  size: number;
  sha256: string;
}

/** Every file and folder under `dir` (no symlinks followed), with SHA-256s. */
export function listOut(dir: string): OutEntry[] {
  const out: OutEntry[] = [];
  const walk = (rel: string): void => {
    for (const name of readdirSync(path.join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path.join(dir, r));
      if (st.isDirectory()) {
        out.push({ path: r, type: "dir", size: 0, sha256: "" });
        walk(r);
      } else if (st.isFile()) {
        out.push({ path: r, type: "file", size: st.size, sha256: createHash("sha256").update(readFileSync(path.join(dir, r))).digest("hex") });
      }
    }
  };
  walk("");
  return out;
}
