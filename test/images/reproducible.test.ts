// `airlock images build` is bit-reproducible: two cold builds in two separate caches, exported to
// two folders, give identical files; the sandbox image carries the workload (so it is measured)
// and no network driver.
import { execFileSync } from "node:child_process";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { IMAGE_FILES } from "../../host-tools/src/images/build.ts";
import { airlock, repoRoot } from "../helpers.ts";
import { scratchDir } from "../scratch.ts";

const hello = path.join(repoRoot, "examples/hello/room.yaml");

interface Built {
  name: string;
  dir: string;
  cached: boolean;
  kernel: string;
  initrd: string;
  cmdline: string;
}

async function build(cache: string, out: string, manifest = hello): Promise<Built[]> {
  const r = await airlock(["images", "build", "--out", out, "--manifest", manifest, "--json"], { AIRLOCK_CACHE: cache });
  expect(r.code, r.stderr).toBe(0);
  expect(r.stderr).toMatch(/image firewall: writing initrd|image firewall: cached/);
  return JSON.parse(r.stdout) as Built[];
}

describe("airlock images build", () => {
  it("gives byte-identical images from two cold builds, reuses the cache, and bakes in the workload", async () => {
    const tmp = scratchDir("airlock-images-");
    const a = await build(path.join(tmp, "cache-a"), path.join(tmp, "out-a"));
    const b = await build(path.join(tmp, "cache-b"), path.join(tmp, "out-b"));
    expect(a.map((x) => x.cached)).toEqual([false, false]);
    for (const name of ["firewall", "sandbox"]) {
      for (const f of IMAGE_FILES) {
        const fa = readFileSync(path.join(tmp, "out-a", name, f));
        const fb = readFileSync(path.join(tmp, "out-b", name, f));
        expect(fa.equals(fb), `${name}/${f}`).toBe(true);
      }
    }
    expect(a.map(({ kernel, initrd, cmdline }) => [kernel, initrd, cmdline])).toEqual(b.map(({ kernel, initrd, cmdline }) => [kernel, initrd, cmdline]));

    const again = await build(path.join(tmp, "cache-a"), path.join(tmp, "out-c"));
    expect(again.map((x) => x.cached)).toEqual([true, true]);
    expect(again.map((x) => x.initrd)).toEqual(a.map((x) => x.initrd));

    const list = (name: string): string[] => execFileSync("cpio", ["-it", "--quiet"], { input: readFileSync(path.join(tmp, "out-a", name, "initrd.img")), maxBuffer: 1 << 24 }).toString().split("\n");
    const sandbox = list("sandbox");
    expect(sandbox).toContain("workload/run.sh");
    expect(sandbox).toContain("opt/airlock/sandbox-vm.mjs");
    expect(sandbox.filter((f) => /virtio_net|9p|virtiofs|e1000/.test(f))).toEqual([]);
    expect(list("firewall")).toContain("opt/airlock/firewall-vm.mjs");

    // A changed workload changes the sandbox image (and only it).
    const room = path.join(tmp, "room");
    cpSync(path.join(repoRoot, "examples/hello"), room, { recursive: true });
    writeFileSync(path.join(room, "workload/run.sh"), "#!/bin/sh\necho changed\n");
    const c = await build(path.join(tmp, "cache-a"), path.join(tmp, "out-d"), path.join(room, "room.yaml"));
    expect(c[0]!.initrd).toBe(a[0]!.initrd);
    expect(c[1]!.initrd).not.toBe(a[1]!.initrd);
  });
});
