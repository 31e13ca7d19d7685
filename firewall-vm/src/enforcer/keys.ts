// Attestation and key release from inside the firewall VM. The firewall has no NIC: the emulated
// PSP and the key broker are reached over vsock to the host (CID 2), which relays them. The key
// broker client speaks HTTP on a Unix socket, so a small local relay carries each connection to
// the host's vsock port; the broker verifies the report itself, so the relay adds no trust.
import { createHash, generateKeyPairSync, type KeyObject } from "node:crypto";
import net from "node:net";
import { rmSync } from "node:fs";
import { EmulatedPspProvider, requestKey, type ReportProvider } from "../../../proto/src/attestation/index.ts";
import { PSP_VSOCK_PORT } from "../../../proto/src/attestation/psp-wire.ts";
import { KBS_VSOCK_PORT } from "../../../proto/src/control.ts";
import { connectVsock } from "../../../proto/src/vsock-stream.ts";

const HOST_CID = 2;

export function emulatedProvider(): ReportProvider {
  return new EmulatedPspProvider({ connect: () => connectVsock(HOST_CID, PSP_VSOCK_PORT, 10_000), timeoutMs: 20_000 });
}

/** A Unix socket inside the VM whose connections are carried to the host's key broker port. */
export async function kbsRelay(socketPath: string): Promise<{ endpoint: string; close(): void }> {
  rmSync(socketPath, { force: true });
  const server = net.createServer((local) => {
    local.on("error", () => {});
    connectVsock(HOST_CID, KBS_VSOCK_PORT, 10_000).then(
      (remote) => {
        remote.on("error", () => local.destroy());
        local.pipe(remote);
        remote.pipe(local);
      },
      () => local.destroy(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, resolve);
  });
  return { endpoint: `unix:${socketPath}`, close: () => server.close() };
}

/** The key the firewall signs its audit trail with; its report binds SHA-512 of its SPKI. */
export function auditKey(): { privateKey: KeyObject; reportData: Buffer; spkiSha256: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const spki = publicKey.export({ type: "spki", format: "der" });
  return {
    privateKey,
    reportData: createHash("sha512").update("airlock-audit-key-v1\0").update(spki).digest(),
    spkiSha256: createHash("sha256").update(spki).digest("hex"),
  };
}

export { requestKey };
