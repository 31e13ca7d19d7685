// The one home for tests' scratch folders: each is made under the system temp dir and removed when
// the test that made it finishes, or, when made outside a test, when its test file finishes; so a
// test run leaves nothing behind in /tmp.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, onTestFinished } from "vitest";

const untilFileEnds: string[] = [];
const removeUntilFileEnds = (): void => {
  for (const dir of untilFileEnds.splice(0)) rmSync(dir, { recursive: true, force: true });
};
try {
  // Registered as this module loads, that is while the importing test file is collected: an
  // afterAll added later, from a beforeAll, would never run. First registered, so (hooks run as a
  // stack) it runs after the file's own afterAll hooks have stopped what still uses the folders.
  afterAll(removeUntilFileEnds);
} catch {
  // Not under vitest (the benches, plain node): removal is the caller's; egress.bench keeps a
  // failed run's folders to read.
}

/** A fresh folder `<tmpdir>/<prefix>XXXXXX`, removed with everything in it once it is done with. */
export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  try {
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  } catch {
    // Not inside a test: module or describe level, or a beforeAll (or a bench).
    untilFileEnds.push(dir);
  }
  return dir;
}
