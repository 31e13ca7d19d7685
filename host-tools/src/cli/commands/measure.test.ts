// `airlock measure` through the real CLI entry (runCli), as a user or script would call it, and
// through the entry main.ts takes for plain options without yargs: both must print the same.
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { runCli } from "../run-cli.ts";
import { measureWithPlainOptions } from "./measure.ts";
import { OVMF_AMDSEV_SUFFIX, OVMF_X64_SUFFIX } from "../../../../test/fixtures/index.ts";

const ovmf = OVMF_AMDSEV_SUFFIX;
const x64 = OVMF_X64_SUFFIX;
const dir = mkdtempSync(path.join(tmpdir(), "airlock-measure-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let out = "";
let err = "";
beforeEach(() => {
  out = "";
  err = "";
  vi.spyOn(process.stdout, "write").mockImplementation((s) => ((out += String(s)), true));
  vi.spyOn(process.stderr, "write").mockImplementation((s) => ((err += String(s)), true));
});
afterEach(() => vi.restoreAllMocks());

/** `airlock measure ARGS` through yargs, after checking that main.ts's way without yargs gives the same status and output. */
async function measure(args: string[]): Promise<{ rc: number; out: string; err: string }> {
  out = "";
  err = "";
  const rc = await runCli(["measure", ...args], 100);
  const viaYargs = { rc, out, err };
  out = "";
  err = "";
  const plain = await measureWithPlainOptions(args);
  expect({ rc: plain, out, err }, `${args.join(" ")}, without yargs`).toEqual(viaYargs);
  return viaYargs;
}

const KAT = "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa";

/** An airlock-image/v1 folder like the images builder writes, with an empty kernel and initrd. */
function makeImage(name: string): string {
  const img = path.join(dir, name);
  rmSync(img, { recursive: true, force: true });
  mkdirSync(img);
  const cmdline = "console=ttyS0 loglevel=7";
  const sha = (s: string): string => createHash("sha256").update(s).digest("hex");
  writeFileSync(path.join(img, "vmlinuz"), "");
  writeFileSync(path.join(img, "initrd.img"), "");
  writeFileSync(path.join(img, "cmdline"), cmdline);
  copyFileSync(ovmf, path.join(img, "OVMF.fd"));
  const files = { kernel: { file: "vmlinuz", sha256: sha("") }, initrd: { file: "initrd.img", sha256: sha("") }, cmdline: { file: "cmdline", sha256: sha(cmdline) } };
  writeFileSync(path.join(img, "image.json"), JSON.stringify({ format: "airlock-image/v1", cmdline, files, ovmf: "OVMF.fd", vcpus: 1, vcpuType: "EPYC-v4" }));
  return img;
}

describe("airlock measure", () => {
  it("prints the digest like sev-snp-measure", async () => {
    const { rc, out } = await measure(["--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf", ovmf, "--kernel", "/dev/null", "--initrd", "/dev/null", "--append", "console=ttyS0 loglevel=7"]);
    expect([rc, out]).toEqual([0, `${KAT}\n`]);
  });

  it("takes the signature as family/model/stepping and prints base64", async () => {
    const { rc, out } = await measure(["--vcpus=1", "--vcpu-family=23", "--vcpu-model=1", "--vcpu-stepping=2", `--ovmf=${ovmf}`, "--kernel=/dev/null", "--initrd=/dev/null", "--append=console=ttyS0 loglevel=7", "--output-format=base64"]);
    expect([rc, out]).toEqual([0, `${Buffer.from(KAT, "hex").toString("base64")}\n`]);
  });

  it("measures an image directory and explains it in JSON", async () => {
    const img = makeImage("img");
    const { rc, out } = await measure(["--image", img, "--explain", "--json"]);
    expect(rc).toBe(0);
    const j = JSON.parse(out) as { digest: string; components: { component: string; hash?: string }[] };
    expect(j.digest).toBe(KAT);
    expect(j.components.map((c) => c.component)).toContain("metadata[5] SNP_KERNEL_HASHES");
  });

  it("refuses an image whose files differ from image.json's records", async () => {
    const img = makeImage("tampered");
    writeFileSync(path.join(img, "initrd.img"), "swapped");
    const { rc, err } = await measure(["--image", img]);
    expect(rc).toBe(2);
    expect(err).toMatch(/the initrd does not match image.json \(SHA-256 [0-9a-f]{64}, recorded e3b0c442/);
  });

  it("exits 2 with a clear message on each input error", async () => {
    const cases: [string[], RegExp][] = [
      [["--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf", x64, "--kernel", "/dev/null"], /no SNP_KERNEL_HASHES section.*\[MEASURE\]/],
      [["--vcpus", "1", "--vcpu-type", "Zen9", "--ovmf", ovmf], /unknown vCPU type "Zen9" \[MEASURE\]/],
      [["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "/etc/hostname"], /not a multiple of 4096|no SEV metadata/],
      [["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", ovmf, "--initrd", "/dev/null"], /--initrd needs --kernel \[USAGE\]/],
      [["--vcpus", "1", "--vcpu-type", "EPYC", "--vcpu-sig", "0x1", "--ovmf", ovmf], /only one of --vcpu-type/],
      [["--vcpus", "1", "--vcpu-sig", "12z", "--ovmf", ovmf], /--vcpu-sig "12z" is not an integer/],
      [["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", ovmf, "--vmm-type", "xen"], /unknown --vmm-type "xen"/],
    ];
    for (const [args, msg] of cases) {
      const { rc, err } = await measure(args);
      expect(rc, args.join(" ")).toBe(2);
      expect(err).toMatch(msg);
    }
  });

  it("leaves to yargs what plain options do not cover, which yargs refuses as before", async () => {
    const cases: [string[], string][] = [
      [["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", ovmf, "--bogus"], "airlock: Unknown argument: bogus [USAGE]\n  hint: see `airlock --help`\n"],
      [["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", ovmf, "--mode=sev"], 'airlock: Invalid values:\n  Argument: mode, Given: "sev", Choices: "snp", "snp:ovmf-hash" [USAGE]\n  hint: see `airlock --help`\n'],
      [["--vcpu-type", "EPYC", "--ovmf", ovmf, "--vcpus"], "airlock: missing --vcpus N [USAGE]\n"],
      [["--vcpu-type", "EPYC", "--ovmf", ovmf, "--vcpus", "many"], "airlock: the number of vCPUs must be an integer from 1 to 4096, got NaN [MEASURE]\n"],
    ];
    for (const [args, message] of cases) {
      err = "";
      expect(await measureWithPlainOptions(args), args.join(" ")).toBeUndefined();
      expect(err).toBe("");
      expect(await runCli(["measure", ...args], 100)).toBe(2);
      expect(err).toBe(message);
    }
  });
});
