// Golden command lines for --tee snp (regenerate with UPDATE_GOLDEN=1 after a deliberate change,
// then review the diff), the ID block / ID auth layout and signatures, and the QEMU version gate
// against this machine's real QEMU.
import { createPrivateKey, createPublicKey, verify } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { AirlockError } from "../../../proto/src/errors.ts";
import { OVMF_AMDSEV_SUFFIX } from "../../../test/fixtures/index.ts";
import {
  buildIdBlock,
  checkQemuSupports,
  ID_AUTH_SIZE,
  localQemuVersion,
  parseQemuVersion,
  signIdBlock,
  snpKeyDigest,
  snpLaunchPlan,
  snpPlanMeasurement,
  snpPublicKey,
  type2LaunchPlan,
  type3LaunchPlan,
  type IgvmVmSpec,
  type QemuPlan,
  type SnpVmSpec,
} from "./snp-plan.ts";

const testdata = path.join(path.dirname(fileURLToPath(import.meta.url)), "testdata");
const idKey = createPrivateKey(readFileSync(path.join(testdata, "id-key-test.pem")));
const authorKey = createPrivateKey(readFileSync(path.join(testdata, "author-key-test.pem")));
const DIGEST = Buffer.from("6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa", "hex");
const HOST_DATA = Buffer.from("a1".repeat(32), "hex");

const firewall: SnpVmSpec = {
  name: "demo-firewall",
  memoryMiB: 1024,
  vcpus: 2,
  vcpuType: "EPYC-v4",
  ovmfPath: "/usr/share/airlock/OVMF.amdsev.fd",
  kernelPath: "/var/lib/airlock/images/firewall/vmlinuz",
  initrdPath: "/var/lib/airlock/images/firewall/initrd.img",
  append: "console=ttyS0 quiet airlock.role=firewall",
  qmpSocket: "/run/airlock/demo/firewall.qmp",
  extraDevices: [
    ["-chardev", "socket,id=vsock0,path=/run/airlock/demo/vsock.sock"],
    ["-device", "vhost-user-vsock-pci,chardev=vsock0,id=vsock0"],
  ],
};
const igvm = (over: Partial<IgvmVmSpec>): IgvmVmSpec => {
  const { ovmfPath: _ovmf, ...rest } = firewall;
  return { ...rest, igvmPath: "/usr/share/airlock/coconut-qemu.igvm", ...over };
};

/** id-auth holds a fresh ECDSA signature each run; the golden file keeps its place, not its bytes. */
function normalized(plans: QemuPlan[]): string {
  const argvs = plans.map((p) => ({ role: p.role, requires: p.requires, vmpls: p.vmpls, kernelMeasuredBy: p.kernelMeasuredBy, argv: p.argv.map((a) => a.replace(/id-auth=[A-Za-z0-9+/=]+/, "id-auth=<4096 bytes, signed>")) }));
  return `${JSON.stringify(argvs, null, 2)}\n`;
}

function golden(name: string, plans: QemuPlan[]): void {
  const file = path.join(testdata, name);
  const text = normalized(plans);
  if (process.env.UPDATE_GOLDEN) writeFileSync(file, text);
  expect(text).toBe(readFileSync(file, "utf8"));
}

describe("SNP launch plans (golden)", () => {
  it("plain SNP guest", () => golden("snp-basic.golden.json", [snpLaunchPlan(firewall)]));
  it("SNP guest with host data and a signed ID block", () =>
    golden("snp-hostdata-idblock.golden.json", [snpLaunchPlan({ ...firewall, hostData: HOST_DATA, policy: 0x30000, idKey: { privateKey: idKey, authorKey, launchDigest: DIGEST } })]));
  it("Type 2: sandbox nested in the firewall's TEE by VMPL", () => golden("igvm-type2.golden.json", type2LaunchPlan(igvm({ name: "demo", memoryMiB: 2048, vcpus: 3, hostData: HOST_DATA }))));
  it("Type 3: two SNP VMs with SVSMs", () =>
    golden(
      "igvm-type3.golden.json",
      type3LaunchPlan(igvm({ hostData: HOST_DATA }), igvm({ name: "demo-sandbox", memoryMiB: 2048, append: "console=ttyS0 quiet airlock.role=sandbox", qmpSocket: "/run/airlock/demo/sandbox.qmp", extraDevices: [firewall.extraDevices[0]!, firewall.extraDevices[1]!], console: "none" })),
    ));

  it("measures the kernel through kernel-hashes with -bios, and keeps -bios out of IGVM plans", () => {
    const [t2] = type2LaunchPlan(igvm({}));
    expect(t2!.argv).not.toContain("-bios");
    expect(t2!.argv.join(" ")).toContain("igvm-cfg=igvm0");
    expect(t2!.argv.find((a) => a.startsWith("sev-snp-guest"))).not.toContain("kernel-hashes");
    expect(t2!.kernelMeasuredBy).toBe("svsm-vtpm");
    const snp = snpLaunchPlan(firewall);
    expect(snp.argv.find((a) => a.startsWith("sev-snp-guest"))).toContain("kernel-hashes=on");
    expect(snp.kernelMeasuredBy).toBe("launch-digest");
  });

  it("refuses bad specs clearly", () => {
    const bad: [Partial<SnpVmSpec>, RegExp][] = [
      [{ hostData: Buffer.alloc(31) }, /host data must be 32 bytes/],
      [{ policy: 0x10000 }, /lacks bit 17/],
      [{ kernelPath: "/a,b" }, /contains a comma/],
      [{ vcpus: 0 }, /vCPUs 0/],
      [{ name: "bad name" }, /VM name/],
      [{ idKey: { privateKey: idKey, launchDigest: Buffer.alloc(32) } }, /48-byte launch digest/],
    ];
    for (const [over, msg] of bad) expect(() => snpLaunchPlan({ ...firewall, ...over })).toThrow(msg);
    expect(() => type3LaunchPlan(igvm({}), igvm({}))).toThrow(/different names/);
  });
});

describe("plan and measurement agree", () => {
  it("measures exactly what the plan launches", async () => {
    const spec: SnpVmSpec = {
      ...firewall,
      vcpus: 1,
      ovmfPath: OVMF_AMDSEV_SUFFIX,
      kernelPath: "/dev/null",
      initrdPath: "/dev/null",
      append: "console=ttyS0 loglevel=7",
    };
    const { digest } = await snpPlanMeasurement(spec);
    // sev-snp-measure's vector for these inputs.
    expect(digest.equals(DIGEST)).toBe(true);
    const plan = snpLaunchPlan({ ...spec, idKey: { privateKey: idKey, launchDigest: digest } });
    expect(plan.idBlock!.subarray(0, 48).equals(digest)).toBe(true);
    const argv = plan.argv.join(" ");
    expect(argv).toContain(`-bios ${spec.ovmfPath} -kernel /dev/null -initrd /dev/null -append console=ttyS0 loglevel=7`);
    expect(argv).toContain("-cpu EPYC-v4 -smp 1");
  });
});

describe("ID block and ID auth", () => {
  const policy = 0x30000n;
  const block = buildIdBlock({ launchDigest: DIGEST, familyId: Buffer.alloc(16, 0xf1), imageId: Buffer.alloc(16, 0x1d), guestSvn: 7, policy });

  it("lays out the ID block per the ABI", () => {
    expect(block.length).toBe(0x60);
    expect(block.subarray(0, 48).equals(DIGEST)).toBe(true);
    expect(block.subarray(0x30, 0x40).equals(Buffer.alloc(16, 0xf1))).toBe(true);
    expect(block.subarray(0x40, 0x50).equals(Buffer.alloc(16, 0x1d))).toBe(true);
    expect(block.subarray(0x50).toString("hex")).toBe("01000000" + "07000000" + "0000030000000000");
  });

  it("signs it with the ID key (r, s little-endian) and carries the keys", () => {
    const auth = signIdBlock(block, idKey, authorKey);
    expect(auth.length).toBe(ID_AUTH_SIZE);
    expect([auth.readUInt32LE(0), auth.readUInt32LE(4)]).toEqual([1, 1]);
    const p1363 = (sig: Buffer): Buffer => Buffer.concat([Buffer.from(sig.subarray(0, 48)).reverse(), Buffer.from(sig.subarray(72, 120)).reverse()]);
    const idSig = auth.subarray(0x40, 0x240);
    // r and s use 48 of their 72 bytes; the rest of the 512-byte signature is reserved (zero).
    expect(idSig.subarray(48, 72).equals(Buffer.alloc(24)) && idSig.subarray(120).equals(Buffer.alloc(0x200 - 120))).toBe(true);
    expect(verify("sha384", block, { key: createPublicKey(idKey), dsaEncoding: "ieee-p1363" }, p1363(idSig))).toBe(true);
    const idPub = auth.subarray(0x240, 0x644);
    expect(idPub.equals(snpPublicKey(idKey))).toBe(true);
    expect(verify("sha384", idPub, { key: createPublicKey(authorKey), dsaEncoding: "ieee-p1363" }, p1363(auth.subarray(0x680, 0x880)))).toBe(true);
    expect(auth.subarray(0x880, 0xc84).equals(snpPublicKey(authorKey))).toBe(true);
    // A flipped bit in the block breaks the signature.
    const tampered = Buffer.from(block);
    tampered[5]! ^= 1;
    expect(verify("sha384", tampered, { key: createPublicKey(idKey), dsaEncoding: "ieee-p1363" }, p1363(idSig))).toBe(false);
  });

  it("encodes the public key as curve 2 with little-endian coordinates", () => {
    const pub = snpPublicKey(idKey);
    const jwk = idKey.export({ format: "jwk" });
    expect(pub.readUInt32LE(0)).toBe(2);
    expect(Buffer.from(pub.subarray(4, 52)).reverse().toString("base64url")).toBe(jwk.x);
    expect(Buffer.from(pub.subarray(76, 124)).reverse().toString("base64url")).toBe(jwk.y);
    expect(snpKeyDigest(idKey).length).toBe(48);
  });

  it("leaves the author fields empty without an author key", () => {
    const auth = signIdBlock(block, idKey);
    expect(auth.readUInt32LE(4)).toBe(0);
    expect(auth.subarray(0x680).equals(Buffer.alloc(ID_AUTH_SIZE - 0x680))).toBe(true);
  });
});

describe("QEMU version gate", () => {
  it("parses versions and banners", () => {
    expect(parseQemuVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)")).toEqual([7, 2, 22]);
    expect(parseQemuVersion("10.1")).toEqual([10, 1, 0]);
  });

  it("accepts new enough QEMUs and refuses older ones, naming the version needed", () => {
    const snp = snpLaunchPlan(firewall);
    const [t2] = type2LaunchPlan(igvm({}));
    expect(() => checkQemuSupports(snp, "9.1.0")).not.toThrow();
    expect(() => checkQemuSupports(snp, "10.0.2")).not.toThrow();
    expect(() => checkQemuSupports(snp, "9.0.2")).toThrow(/QEMU 9\.0\.2 cannot launch an SEV-SNP guest \(sev-snp-guest\): it needs QEMU 9\.1 or later/);
    expect(() => checkQemuSupports(t2!, "10.1.0")).not.toThrow();
    expect(() => checkQemuSupports(t2!, "10.0.9")).toThrow(/it needs QEMU 10\.1 or later/);
  });

  it("refuses this machine's QEMU", async () => {
    const version = await localQemuVersion();
    expect(parseQemuVersion(version)[0]).toBeLessThan(9);
    try {
      checkQemuSupports(snpLaunchPlan(firewall), version);
      expect.unreachable("QEMU < 9.1 must be refused");
    } catch (err) {
      expect(err).toBeInstanceOf(AirlockError);
      expect((err as AirlockError).code).toBe("TEE_UNSUPPORTED");
      expect((err as AirlockError).message).toContain("needs QEMU 9.1 or later");
    }
  });
});
