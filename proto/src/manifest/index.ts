export * from "./schema.ts";
export { loadManifest, validateManifest } from "./load.ts";
export { canonicalJson, canonicalManifest, listTree, manifestDigest, treeDigest, type TreeEntry } from "./digest.ts";
