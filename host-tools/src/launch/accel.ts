// Chooses the accelerator. KVM is used only after a short, bounded probe boot proves it works:
// some hosts have a /dev/kvm that hangs ordinary guests (a paravirtual flavour), and a hung
// accelerator must never hang a launch. The verdict is cached per host boot.
import { spawn } from "node:child_process";
import { constants, accessSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { buildImage } from "../images/build.ts";
import { stateDir } from "../paths.ts";
import { QEMU_BINARY, type Accel } from "./qemu-args.ts";

export type AccelChoice = "auto" | Accel;
/**
 * A working KVM typically brings the minimal image to init in 1-2 s; TCG takes ~4 s on the 2-core
 * development host. A KVM that has not done it within 6 s is no faster than emulation even if it
 * would get there, so the launch takes TCG; a host whose KVM hangs guests pays 6 s once per boot.
 */
export const KVM_PROBE_TIMEOUT_MS = 6_000;
const PROBE_MARKER = "airlock-guest: minimal init";

interface ProbeVerdict {
  bootId: string;
  kvm: boolean;
  reason: string;
}

function bootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "unknown";
  }
}

/** Boots the minimal image under KVM and waits, within a bound, for its init to speak. */
export async function probeKvm(timeoutMs = KVM_PROBE_TIMEOUT_MS): Promise<{ ok: boolean; reason: string }> {
  if (!existsSync("/dev/kvm")) return { ok: false, reason: "/dev/kvm does not exist" };
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
  } catch {
    return { ok: false, reason: "/dev/kvm is not readable and writable by this user" };
  }
  const image = await buildImage("minimal");
  const cmdline = readFileSync(path.join(image.dir, "cmdline"), "utf8");
  const args = ["-nodefaults", "-no-user-config", "-display", "none", "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "256M", "-no-reboot", "-serial", "stdio", "-kernel", path.join(image.dir, "vmlinuz"), "-initrd", path.join(image.dir, "initrd.img"), "-append", cmdline];
  return new Promise((resolve) => {
    const child = spawn(QEMU_BINARY, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let settled = false;
    const finish = (ok: boolean, reason: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill("SIGKILL");
      resolve({ ok, reason });
    };
    const timer = setTimeout(() => finish(false, `a KVM guest did not reach init within ${timeoutMs} ms (the accelerator hangs guests)`), timeoutMs);
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes(PROBE_MARKER)) finish(true, "a probe guest booted under KVM");
    });
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    child.on("error", (err) => finish(false, `cannot start QEMU: ${err.message}`));
    child.on("exit", (code) => finish(out.includes(PROBE_MARKER), `QEMU exited (${code}) before the probe guest reached init: ${out.trim().split("\n").pop() ?? ""}`));
  });
}

/**
 * Resolves --accel: kvm and tcg are taken at their word (kvm is still probed, to fail clearly).
 * `progress` tells the user why the launch waits while the probe boots.
 */
export async function chooseAccel(choice: AccelChoice, log: Logger, progress?: (step: string) => void): Promise<Accel> {
  if (choice === "tcg") return "tcg";
  const cacheFile = path.join(stateDir(), "kvm-probe.json");
  let verdict: ProbeVerdict | undefined;
  try {
    const cached = JSON.parse(readFileSync(cacheFile, "utf8")) as ProbeVerdict;
    if (cached.bootId === bootId()) verdict = cached;
  } catch {
    // no verdict yet for this boot
  }
  if (!verdict) {
    const step = `probing KVM with a short test boot (at most ${KVM_PROBE_TIMEOUT_MS / 1000} s, once per host boot)`;
    if (progress) progress(step);
    else log.info(step);
    const r = await probeKvm();
    verdict = { bootId: bootId(), kvm: r.ok, reason: r.reason };
    mkdirSync(path.dirname(cacheFile), { recursive: true });
    writeFileSync(cacheFile, JSON.stringify(verdict));
  }
  if (choice === "kvm" && !verdict.kvm) {
    throw new AirlockError("ACCEL_UNAVAILABLE", `KVM does not work here: ${verdict.reason}`, { hint: "use --accel tcg (or auto)" });
  }
  log.info({ accel: verdict.kvm ? "kvm" : "tcg", reason: verdict.reason }, "accelerator chosen");
  return verdict.kvm ? "kvm" : "tcg";
}
