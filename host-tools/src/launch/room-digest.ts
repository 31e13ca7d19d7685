// A room's identity as the launch binds it: the canonical manifest with its pins (the firewall and
// sandbox images' launch measurements, the key broker's key hash), and its SHA-256 digest — what
// collaborators sign, what grants bind keys to, and the SNP host_data of both VMs. Computing it
// builds (or reuses) the reproducible images, so every command that names a room's digest
// (`manifest digest|sign|verify|grant`, `up`, `run`) agrees on it.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import { canonicalManifest, manifestDigest, type Manifest, type RoomPins } from "../../../proto/src/manifest/index.ts";
import { buildPairImages, type PairImages } from "../images/build.ts";
import { brokerPublicKey, loadMasterKey } from "../kbs/index.ts";
import { embeddedBrokerDirs } from "../kbs/grant.ts";
import { cmdlineHash, readImageDir, snpLaunchDigest } from "../measure/index.ts";
import { hostFile } from "../images/host-inputs.ts";
import { relayedBroker } from "../remote/broker-relay.ts";

export interface RoomIdentity {
  pins: RoomPins;
  /** The canonical manifest the firewall receives (pins included). */
  canonical: unknown;
  digest: Buffer;
  images: PairImages;
  /** The embedded broker's public key (base64 SPKI DER), whose hash is pinned. */
  brokerPublicKey: string;
}

/**
 * The launch measurement the emulated PSP reports for an image: the SNP launch digest of its
 * declared firmware, kernel, initrd and command line (the measure code, as `airlock measure
 * --image`), so a key policy names exactly this program.
 */
export async function imageMeasurement(imageDir: string, vcpus: number): Promise<Buffer> {
  const img = await readImageDir(imageDir);
  if (!img.ovmfPath) throw new AirlockError("MEASURE", `${imageDir}/image.json declares no firmware, so the emulated launch cannot be measured`, { hint: "rebuild the images (airlock images build)" });
  // The kernel's and initrd's SHA-256 as the image builder fingerprints host files (remembered
  // under each file's identity and change times): launching a cached image does not hash its
  // 100 MB again. `airlock measure --image` always hashes them.
  const digestOf = async (file: string): Promise<Buffer> => Buffer.from((await hostFile(file)).sha256, "hex");
  const kernelHashes = { kernel: await digestOf(img.kernelPath), initrd: img.initrdPath ? await digestOf(img.initrdPath) : createHash("sha256").digest(), cmdline: cmdlineHash(img.append) };
  const { digest } = await snpLaunchDigest({
    ovmf: readFileSync(img.ovmfPath),
    ovmfSource: img.ovmfPath,
    vcpus,
    vcpuType: img.vcpuType ?? "EPYC-v4",
    kernelHashes,
    ...(img.guestFeatures !== undefined ? { guestFeatures: img.guestFeatures } : {}),
  });
  return digest;
}

/**
 * The embedded key broker's public key (its identity follows from its master key); on a remote
 * host driven with --host, the user's broker's, relayed over SSH (remote/broker-relay.ts).
 */
export function embeddedBrokerKey(): string {
  const relayed = relayedBroker();
  if (relayed) return relayed.publicKey;
  const dirs = embeddedBrokerDirs();
  return brokerPublicKey(loadMasterKey(path.join(dirs.kbs, "master.key"), { create: true }));
}

export const brokerKeyHash = (spkiBase64: string): string => createHash("sha256").update(Buffer.from(spkiBase64, "base64")).digest("hex");

/**
 * How the pair's images are measured for the pins. By default as the emulated launch runs them
 * (imageMeasurement); `--tee snp` measures them as its plans launch them instead (the chosen
 * firmware, the SNP command line), since that is what the PSP will report.
 */
export type MeasurePair = (images: PairImages) => Promise<Record<"firewall" | "sandbox", Buffer>>;

export async function roomIdentity(manifest: Manifest, measure?: MeasurePair): Promise<RoomIdentity> {
  const images = await buildPairImages({ workloadDir: manifest.workload.bundle });
  const broker = embeddedBrokerKey();
  const measured = measure
    ? await measure(images)
    : { firewall: await imageMeasurement(images.firewall.dir, manifest.resources.firewall.vcpus), sandbox: await imageMeasurement(images.sandbox.dir, manifest.resources.sandbox.vcpus) };
  const pins: RoomPins = { firewall: measured.firewall.toString("hex"), sandbox: measured.sandbox.toString("hex"), broker: brokerKeyHash(broker) };
  return { pins, canonical: canonicalManifest(manifest, pins), digest: manifestDigest(manifest, pins), images, brokerPublicKey: broker };
}
