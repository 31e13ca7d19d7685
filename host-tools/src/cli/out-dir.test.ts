import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { prepareOutDir } from "./out-dir.ts";

const root = mkdtempSync(path.join(tmpdir(), "airlock-out-dir-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("prepareOutDir", () => {
  it("wants a new or empty folder; --force replaces only a run's own files", () => {
    const out = path.join(root, "reused");
    mkdirSync(out);
    writeFileSync(path.join(out, "summary.json"), "{}");
    expect(() => prepareOutDir(out, ["counts"], false)).toThrow(expect.objectContaining({ code: "USAGE", message: expect.stringMatching(/not empty/) }));
    prepareOutDir(out, ["counts"], true);
    expect(existsSync(path.join(out, "summary.json"))).toBe(false);
    writeFileSync(path.join(out, "thesis.pdf"), "mine");
    expect(() => prepareOutDir(out, ["counts"], true)).toThrow(/not this room's outputs/);
    expect(existsSync(path.join(out, "thesis.pdf"))).toBe(true);
  });

  it("makes a new folder", () => {
    const out = path.join(root, "new", "out");
    prepareOutDir(out, ["counts"], false);
    expect(existsSync(out)).toBe(true);
  });
});
