// The manifest's canonical digest: what collaborators sign and what the launch puts in SNP
// host_data, so an attestation report names the exact room. It covers every field that changes
// what the room does, with files replaced by the hashes of their contents (the workload bundle by
// a tree hash), and nothing that depends on where the files sit on one host.
import { createHash } from "node:crypto";
import { lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import { AirlockError } from "../errors.ts";
import type { Manifest, RoomPins } from "./schema.ts";

/** JSON with sorted object keys and no whitespace (RFC 8785's shape for the values used here). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") {
    if (typeof value === "number" && !Number.isFinite(value)) throw new TypeError("non-finite number in canonical JSON");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

export interface TreeEntry {
  path: string;
  type: "file" | "dir" | "symlink";
  /** Permission bits that matter in the guest: 0o755 for executables, 0o644 otherwise (dirs 0o755). */
  mode: number;
  size: number;
  sha256: string;
}

/**
 * Lists a directory tree in a canonical order with content hashes. Device files, sockets and
 * FIFOs are refused: a bundle is plain files.
 */
export function listTree(dir: string): TreeEntry[] {
  const out: TreeEntry[] = [];
  const walk = (rel: string): void => {
    const names = readdirSync(path.join(dir, rel)).sort();
    for (const name of names) {
      const relPath = rel ? `${rel}/${name}` : name;
      const abs = path.join(dir, relPath);
      const st = lstatSync(abs);
      if (st.isSymbolicLink()) {
        const target = readlinkSync(abs);
        out.push({ path: relPath, type: "symlink", mode: 0o777, size: target.length, sha256: sha256Hex(Buffer.from(target)) });
      } else if (st.isDirectory()) {
        out.push({ path: relPath, type: "dir", mode: 0o755, size: 0, sha256: "" });
        walk(relPath);
      } else if (st.isFile()) {
        const data = readFileSync(abs);
        out.push({ path: relPath, type: "file", mode: st.mode & 0o111 ? 0o755 : 0o644, size: data.length, sha256: sha256Hex(data) });
      } else {
        throw new AirlockError("MANIFEST_INVALID", `${abs}: not a regular file, directory or symlink`, { hint: "a workload bundle may hold only plain files" });
      }
    }
  };
  walk("");
  return out;
}

export function treeDigest(dir: string): string {
  return sha256Hex(Buffer.from(canonicalJson(listTree(dir))));
}

/** The manifest in the canonical form that is hashed; `pins` (schema.ts RoomPins) as `attestation`. */
export function canonicalManifest(m: Manifest, pins?: RoomPins): unknown {
  return {
    attestation: pins,
    apiVersion: m.apiVersion,
    name: m.name,
    workload: { bundleTree: treeDigest(m.workload.bundle), command: m.workload.command, env: m.workload.env, timeoutSeconds: m.workload.timeoutSeconds, padTo: m.workload.padToSeconds, service: m.workload.service },
    inputs: m.inputs.map(({ name, mount, mode, scope }) => ({ name, mount, mode, scope })),
    outputs: m.outputs,
    console: m.console,
    egress: m.egress,
    collaborators: m.collaborators.map((c) => ({ name: c.name, publicKeySha256: sha256Hex(Buffer.from(c.publicKeyPem)) })),
    governance: m.governance,
    resources: m.resources,
  };
}

/** SHA-256 of the canonical manifest: 32 bytes, the size of SNP host_data. */
export function manifestDigest(m: Manifest, pins?: RoomPins): Buffer {
  return createHash("sha256").update(canonicalJson(canonicalManifest(m, pins))).digest();
}

function sha256Hex(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}
