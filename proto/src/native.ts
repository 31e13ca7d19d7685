// airlock's native addon (host-tools/native, built by `npm run build`), loaded in one place for
// everything that runs on it: the guests' vsock streams (vsock-stream.ts), the secure channel's
// cipher (channel/protocol.ts) and the host's vsock fabric (host-tools/src/fabric/native.ts). The
// guest images carry it as the package `airlock-native` (opt/airlock/node_modules); on the host it
// is the repository's build, found from this file (or the bundle it is in) upwards;
// $AIRLOCK_NATIVE_ADDON names another file.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { AirlockError } from "./errors.ts";

const BUILT = "host-tools/native/build/Release/airlock_fabric.node";
const requireAddon = createRequire(import.meta.url);
let loaded: unknown;

function locate(): string | undefined {
  if (process.env.AIRLOCK_NATIVE_ADDON) return process.env.AIRLOCK_NATIVE_ADDON;
  try {
    return requireAddon.resolve("airlock-native");
  } catch {
    // not in an image: the repository's build
  }
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, BUILT))) return path.join(dir, BUILT);
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** The addon's exports, typed by the caller (each user declares the functions it calls). */
export function nativeAddon<T>(): T {
  if (loaded === undefined) {
    const file = locate();
    if (!file) throw new AirlockError("IMAGE_MISSING", "airlock's native addon (airlock-native) is not built", { hint: "run `npm run build` (needs g++, make and python3)" });
    loaded = requireAddon(file);
  }
  return loaded as T;
}
