// The host's writer of released outputs, on a real folder: names it chose, per-file refusals that
// never throw, and staging that only a completed run puts in place (cli/out-dir.ts checks --out).
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AirlockError } from "../../../proto/src/errors.ts";
import { OutputWriter } from "./output-writer.ts";

const root = mkdtempSync(path.join(tmpdir(), "airlock-writer-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => {
  const d = path.join(root, `out-${n++}`);
  mkdirSync(d, { recursive: true, mode: 0o700 });
  return d;
};

describe("OutputWriter", () => {
  it("writes a sealed output under a name it chooses and open files under their output, once committed", () => {
    const out = fresh();
    const w = new OutputWriter(out, new Set(["console", "counts", "leak"]));
    w.sealedBegin("counts");
    w.sealedData("counts", Buffer.from("abc"));
    w.sealedEnd("counts", 3);
    expect(w.openBegin("leak", "dir/a.txt", 2)).toBe(true);
    w.openData(Buffer.from("hi"));
    expect(readdirSync(out)).toEqual([".airlock-incoming"]); // nothing in place before the commit
    w.commit();
    expect(readdirSync(out).sort()).toEqual(["counts.tar.age", "leak"]);
    expect(readFileSync(path.join(out, "leak/dir/a.txt"), "utf8")).toBe("hi");
    expect(w.result.written.map((f) => f.file)).toEqual(["counts.tar.age", "leak/dir/a.txt"]);
  });

  it("refuses a colliding or unsafe file on its own, drops its data, and goes on", () => {
    const out = fresh();
    const w = new OutputWriter(out, new Set(["leak"]));
    expect(w.openBegin("leak", "x", 1)).toBe(true);
    w.openData(Buffer.from("1"));
    for (const bad of ["x/y", "x", "\u001b[2J", "a/../b", ".hidden"]) {
      expect(w.openBegin("leak", bad, 3), bad).toBe(false);
      w.openData(Buffer.from("zzz")); // consumed, not written
    }
    expect(w.openBegin("leak", "z/w", 0)).toBe(true);
    expect(w.openBegin("leak", "z", 0)).toBe(false); // a folder already
    w.commit();
    expect(w.result.refused).toEqual({ leak: 6 });
    expect(readdirSync(path.join(out, "leak")).sort()).toEqual(["x", "z"]);
  });

  it("refuses outputs the manifest does not declare and sizes that do not add up, as protocol errors", () => {
    const w = new OutputWriter(fresh(), new Set(["counts"]));
    expect(() => w.sealedBegin("other")).toThrow(AirlockError);
    w.sealedBegin("counts");
    w.sealedData("counts", Buffer.from("ab"));
    expect(() => w.sealedEnd("counts", 3)).toThrow(/another size/);
  });

  it("discards everything staged when the run did not complete", () => {
    const out = fresh();
    const w = new OutputWriter(out, new Set(["counts"]));
    w.sealedBegin("counts");
    w.sealedData("counts", Buffer.from("abc"));
    w.discard();
    expect(readdirSync(out)).toEqual([]);
  });
});
