// Issue 12, point 2 with real QEMU guests: a 128 MiB input crosses host → firewall (age decrypt) →
// sandbox tmpfs whole, and the firewall's memory stays bounded while it does: the guests read their
// vsock sockets only as fast as they consume (proto/src/vsock-stream.ts), so the host, which can
// send far faster than the firewall decrypts under TCG, is held back by virtio-vsock's credit
// instead of filling the firewall's heap (before, its heap grew with the input until the guest ran
// out of memory). The firewall records its resident memory before the input and at its peak in
// the audit trail (input.served timing); the workload reports the SHA-256 of what it received.
// (An input larger than the firewall's RAM would need over 512 MiB, the smallest VM a room may
// ask for: minutes under TCG. The peak says the same: it does not grow with the input.)
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { killQemus } from "../helpers.ts";
import { prepareRoom, runRoom, type PreparedRoom } from "../bench/word-count-room.ts";
import { openSealed } from "./room-setup.ts";

const MIB = 128;
let room: PreparedRoom | undefined;

afterAll(() => {
  killQemus("bench-large-input");
  room?.remove();
});

describe("a large input", () => {
  it("arrives whole in the sandbox, with the firewall's memory bounded", async () => {
    room = await prepareRoom({ name: "large-input", inputsMiB: [MIB], workload: "sha256", resources: { firewallMiB: 512, sandboxMiB: 1024 } });
    const run = await runRoom(room);
    const hops = run.hops[0]!;
    expect(hops.bytes).toBeGreaterThanOrEqual(MIB * 1024 * 1024);
    const sealed = openSealed(path.join(run.outDir, "counts.tar.age"), room.analystKey);
    expect(sealed.get("counts.csv")?.toString()).toBe(`${room.inputSha256[0]}  /data/in/corpus.txt\n`);
    // Bounded: the input adds far less than its own size to the enforcer: its buffers are a few MiB,
    // the rest is garbage the collector has not returned yet (a 64 MiB input peaked at +39 MiB).
    expect(hops.rssPeakMiB - hops.rssMiB, JSON.stringify(hops)).toBeLessThan(MIB / 2);
  }, 600_000);
});
