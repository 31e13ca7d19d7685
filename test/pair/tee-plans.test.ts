// --tee snp is built and tested up to the command line: the plan carries the room's digest as
// host_data and kernel hashes on, and this host's QEMU 7.2 is refused naming the version needed.
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadManifest } from "../../proto/src/manifest/index.ts";
import { roomIdentity } from "../../host-tools/src/launch/room-digest.ts";
import { airlock, repoRoot, testStateDir } from "../helpers.ts";

const hello = path.join(repoRoot, "examples/hello/room.yaml");
const env = { AIRLOCK_STATE: testStateDir() };

describe("TEE launch plans from the CLI", () => {
  it("prints SNP command lines bound to the room, and refuses to launch them on an old QEMU", async () => {
    const plan = await airlock(["up", hello, "--tee", "snp", "--print-plan"], env);
    expect(plan.code, plan.stderr).toBe(0);
    // host_data is the room's digest with its pins (the images' measurements, the broker), as for --tee emulated.
    const saved = process.env.AIRLOCK_STATE;
    process.env.AIRLOCK_STATE = env.AIRLOCK_STATE;
    const hostData = (await roomIdentity(loadManifest(hello))).digest.toString("base64");
    process.env.AIRLOCK_STATE = saved;
    expect(plan.stdout).toContain("# firewall (SNP, needs QEMU ≥ 9.1.0)");
    expect(plan.stdout).toMatch(new RegExp(`sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30000,kernel-hashes=on,host-data=${hostData.replace(/[+/]/g, "\\$&")}`));
    expect(plan.stdout).toContain("vhost-user-vsock-pci");
    expect(plan.stdout).not.toMatch(/-netdev|virtio-net/);

    const run = await airlock(["run", hello, "--out", "/nonexistent", "--tee", "snp"], env);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/QEMU 7\.2\.\d+ cannot launch an SEV-SNP guest \(sev-snp-guest\): it needs QEMU 9\.1 or later \[TEE_UNSUPPORTED\]/);
  });

  it("prints the emulated command lines, paused and without a NIC", async () => {
    const r = await airlock(["up", hello, "--print-plan", "--accel", "tcg"], env);
    expect(r.code, r.stderr).toBe(0);
    const sandbox = r.stdout.split("# sandbox (emulated TEE)\n")[1]!;
    expect(sandbox).toMatch(/-nodefaults .* -S .* -serial none/);
    expect(sandbox).not.toMatch(/-netdev|-nic|virtio-net/);
  });
});
