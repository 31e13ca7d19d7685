// `airlock measure` on a realistic input: a 10 MB kernel-like and a 100 MB initrd-like random file
// with the AmdSev OVMF fixture. Reports the library and CLI wall times, the launch-digest hashing
// throughput as a ratio to plain SHA-384 over the same files in the same run, and the whole command
// against `openssl dgst -sha256` of the same two files, run alternately (with `node -e 0` beside
// them, since node's own start is a floor the command cannot go under).
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { snpLaunchDigest } from "../../host-tools/src/measure/index.ts";
import { alternatedMs, launcherEnv, medianMs, throughput, type Reporter } from "./harness.ts";
import { OVMF_AMDSEV_SUFFIX } from "../fixtures/index.ts";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const ovmfPath = OVMF_AMDSEV_SUFFIX;
const MB = 1_000_000;

function writeRandom(file: string, bytes: number): void {
  const chunk = 4 * MB;
  const parts: Buffer[] = [];
  for (let done = 0; done < bytes; done += chunk) parts.push(randomBytes(Math.min(chunk, bytes - done)));
  writeFileSync(file, Buffer.concat(parts));
}

async function sha384File(file: string): Promise<Buffer> {
  const h = createHash("sha384");
  for await (const c of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest();
}

export default async function bench(report: Reporter): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), "airlock-bench-measure-"));
  try {
    const kernel = path.join(dir, "vmlinuz");
    const initrd = path.join(dir, "initrd.img");
    writeRandom(kernel, 10 * MB);
    writeRandom(initrd, 100 * MB);
    const ovmf = readFileSync(ovmfPath);
    const bytes = statSync(kernel).size + statSync(initrd).size + ovmf.length;
    const inputs = { ovmf, vcpus: 4, vcpuType: "EPYC-Milan", kernel, initrd, append: "console=ttyS0 quiet" };

    const digestMs = await medianMs(() => snpLaunchDigest(inputs), 3, 1);
    const sha384Ms = await medianMs(() => Promise.all([sha384File(kernel), sha384File(initrd), createHash("sha384").update(ovmf).digest()]), 3, 1);
    report.figure("launch digest, 10 MB kernel + 100 MB initrd (library)", digestMs, "ms", "median of 3");
    report.figure("launch-digest hashing throughput", throughput(bytes, digestMs) / MB, "MB/s", "kernel+initrd+firmware bytes / time");
    report.figure("plain SHA-384 throughput, same files", throughput(bytes, sha384Ms) / MB, "MB/s", "streamed, median of 3");
    report.ratio("launch-digest / plain SHA-384 throughput", sha384Ms / digestMs, ">= 0.8 (the digest streams once; kernel hashes are SHA-256)");

    // The whole command as a user runs it (bundle built by `npm run bench`).
    const cli = path.join(repoRoot, "host-tools/bin/airlock");
    const args = ["measure", "--ovmf", ovmfPath, "--vcpus", "4", "--vcpu-type", "EPYC-Milan", "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0 quiet"];
    const RUNS = 9;
    const openssl = (): void => {
      const r = spawnSync("openssl", ["dgst", "-sha256", kernel, initrd], { stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 });
      if (r.status !== 0) throw new Error(`openssl dgst exited ${r.status ?? r.signal}: ${r.stderr.toString()}`);
    };
    // node's own start (`node -e 0`), in the same rounds: the part of the CLI's time that is not
    // airlock's. Started as the launcher starts node (launcherEnv).
    const [opensslMs, cliMs, nodeMs] = await alternatedMs([openssl, () => execFileSync(cli, args, { timeout: 60_000 }), () => execFileSync(process.execPath, ["-e", "0"], { env: launcherEnv() })], RUNS, 1);
    report.figure("airlock measure CLI, same input", cliMs!, "ms", `median of ${RUNS}, process start to exit, alternated with openssl and node -e 0`);
    report.figure("openssl dgst -sha256 kernel initrd", opensslMs!, "ms", `median of ${RUNS}`);
    report.figure("node -e 0 (node's start alone)", nodeMs!, "ms", `median of ${RUNS}`);
    report.ratio("airlock measure CLI / openssl dgst -sha256", cliMs! / opensslMs!, "<= 1.5");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
