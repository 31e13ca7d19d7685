export * from "./schema.ts";
export { loadManifest } from "./load.ts";
export { validateCanonical, validateManifest, type CanonicalManifest } from "./validate.ts";
export { canonicalJson, canonicalManifest, listTree, manifestDigest, treeDigest, type TreeEntry } from "./digest.ts";
