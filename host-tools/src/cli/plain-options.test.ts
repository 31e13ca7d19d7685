// parsePlainOptions reads `airlock measure`'s options without yargs (main.ts). Whatever it accepts
// it must read as yargs does, so each command line here is parsed by both: by it, with measure's
// option table, and by yargs, with the builder `airlock measure` declares from that same table.
// What it does not accept, yargs handles as before; the lists below say which is which.
import yargs from "yargs";
import { describe, expect, it } from "vitest";
import { MEASURE_OPTIONS, measureCommand } from "./commands/measure.ts";
import { parsePlainOptions } from "./plain-options.ts";

/** What yargs makes of `airlock measure ARGS`: the values of measure's options, or its error. */
async function yargsReads(args: string[]): Promise<Record<string, unknown>> {
  let argv: Record<string, unknown> | undefined;
  await yargs(["measure", ...args])
    .command({ command: "measure", describe: false, builder: measureCommand.builder, handler: (a) => void (argv = a) })
    .strict()
    .version(false)
    .fail((msg, err) => {
      throw err ?? new Error(msg);
    })
    .parseAsync();
  return Object.fromEntries(Object.keys(MEASURE_OPTIONS).flatMap((k) => (argv?.[k] === undefined ? [] : [[k, argv[k]]])));
}

const plain = (args: string[]): Record<string, unknown> | undefined => parsePlainOptions(MEASURE_OPTIONS, args);

describe("parsePlainOptions", () => {
  it("reads plain command lines as yargs does", async () => {
    const lines: string[][] = [
      [],
      ["--ovmf", "OVMF.fd", "--vcpus", "4", "--vcpu-type", "EPYC-Milan", "--kernel", "vmlinuz", "--initrd", "initrd.img", "--append", "console=ttyS0 quiet"],
      ["--ovmf=OVMF.fd", "--vcpus=4", "--vcpu-type=EPYC-v4", "--append=root=/dev/vda ro", "--output-format=base64"],
      ["--append=--not-an-option", "--kernel=", "--initrd", ""],
      ["--mode", "snp:ovmf-hash", "--ovmf", "f", "--json", "--explain"],
      ["--mode=snp", "--vcpus", "007", "--vcpu-family", "25", "--vcpu-model=1", "--vcpu-stepping", "0"],
      ["--vcpu-sig", "0xa00f11", "--guest-features", "0x21", "--vmm-type", "EC2", "--snp-ovmf-hash", "ab", "--image", "img", "--vcpus", "1"],
      ["--kernel", "123", "--append", "a\nb=c"],
    ];
    for (const args of lines) {
      const mine = plain(args);
      expect(mine, args.join(" ")).toBeDefined();
      expect(mine, args.join(" ")).toEqual(await yargsReads(args));
    }
    expect(plain(["--vcpus", "4", "--kernel", "k"])).toEqual({ vcpus: 4, kernel: "k", mode: "snp", "vmm-type": "qemu", "output-format": "hex", explain: false, json: false });
  });

  it("leaves everything else to yargs", () => {
    const lines: [string, string[]][] = [
      ["unknown option", ["--vcpus", "1", "--bogus"]],
      ["yargs' camel-case alias", ["--vcpuType", "EPYC"]],
      ["option in another case", ["--OVMF", "f"]],
      ["help", ["--vcpus", "1", "--help"]],
      ["short help", ["-h"]],
      ["short option", ["-v", "1"]],
      ["version (not an option of airlock)", ["--version"]],
      ["a word that is not an option", ["--vcpus", "1", "extra"]],
      ["end of options", ["--vcpus", "1", "--", "x"]],
      ["repeated option", ["--kernel", "a", "--kernel", "b"]],
      ["repeated in equals form", ["--vcpus=1", "--vcpus", "2"]],
      ["missing value at the end", ["--ovmf", "f", "--vcpus"]],
      ["missing value before an option", ["--kernel", "--initrd", "i"]],
      ["value that starts with a dash", ["--append", "-x"]],
      ["negative number", ["--vcpus", "-1"]],
      ["choice not offered", ["--mode", "sev"]],
      ["choice not offered, equals form", ["--output-format=HEX"]],
      ["empty choice", ["--mode="]],
      ["number with letters", ["--vcpus", "abc"]],
      ["hex number", ["--vcpus", "0x2"]],
      ["fraction", ["--vcpus", "1.5"]],
      ["exponent", ["--vcpus=1e3"]],
      ["empty number", ["--vcpus="]],
      ["number with spaces", ["--vcpus", " 4"]],
      ["boolean with a value", ["--json=false"]],
      ["boolean followed by true", ["--json", "true"]],
      ["negated boolean", ["--no-json"]],
      ["inherited property name", ["--constructor", "x"]],
    ];
    for (const [why, args] of lines) expect(plain(args), why).toBeUndefined();
  });

  it("agrees with yargs on what it leaves that yargs accepts", async () => {
    // Not a contract, a check that the examples above are real: yargs reads these differently
    // from a plain reading (an array, NaN, a camel-case alias), so a plain parser must not.
    expect(await yargsReads(["--kernel", "a", "--kernel", "b"])).toMatchObject({ kernel: ["a", "b"] });
    expect(await yargsReads(["--vcpus", "abc"])).toMatchObject({ vcpus: NaN });
    expect(await yargsReads(["--vcpus", "0x2"])).toMatchObject({ vcpus: 2 });
    expect(await yargsReads(["--vcpuType", "EPYC"])).toMatchObject({ "vcpu-type": "EPYC" });
    expect(await yargsReads(["--json", "false", "--no-explain"])).toMatchObject({ json: false, explain: false });
    await expect(yargsReads(["--vcpus", "1", "--bogus"])).rejects.toThrow(/Unknown argument: bogus/);
    await expect(yargsReads(["--mode", "sev"])).rejects.toThrow(/Invalid values/);
  });
});
