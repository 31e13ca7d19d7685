// A tiny QEMU test guest for the fabric's integration tests, self-contained: Debian's kernel (the
// package linux-image-amd64 depends on, fetched with apt-get download), and an initrd of
// busybox-static + socat (a third-party vsock client) + the virtio/vsock modules. Each guest runs
// a shell on its serial port (QEMU's stdio), which the test drives line by line.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync, chmodSync, symlinkSync } from "node:fs";
import path from "node:path";

const CACHE = process.env.AIRLOCK_FABRIC_GUEST_CACHE ?? "/tmp/airlock-fabric-guest";

// Load order (Debian builds all of these as modules; busybox insmod does not resolve deps).
const MODULES = [
  "drivers/virtio/virtio_ring.ko",
  "drivers/virtio/virtio.ko",
  "drivers/virtio/virtio_pci_modern_dev.ko",
  "drivers/virtio/virtio_pci_legacy_dev.ko",
  "drivers/virtio/virtio_pci.ko",
  "net/vmw_vsock/vsock.ko",
  "net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
  "net/vmw_vsock/vmw_vsock_virtio_transport.ko",
];

function sh(cmd: string, args: string[], cwd?: string): string {
  return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 300_000 });
}

export interface GuestImage {
  kernel: string;
  initrd: string;
}

/** Builds (or reuses from the cache) the test guest's kernel and initrd. */
export function buildTestGuest(): GuestImage {
  const depends = sh("apt-cache", ["depends", "linux-image-amd64"]);
  const pkg = /Depends: (linux-image-[0-9][^\s]*-amd64)/.exec(depends)?.[1];
  if (!pkg) throw new Error(`cannot find the kernel package in: ${depends}`);
  const dir = path.join(CACHE, pkg);
  const kernel = path.join(dir, "vmlinuz");
  const initrd = path.join(dir, "initrd.cpio");
  if (existsSync(kernel) && existsSync(initrd)) return { kernel, initrd };
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  sh("apt-get", ["download", pkg], dir);
  const deb = readdirSync(dir).find((f) => f.endsWith(".deb"))!;
  const kroot = path.join(dir, "kroot");
  sh("dpkg-deb", ["-x", deb, kroot], dir);
  const boot = readdirSync(path.join(kroot, "boot")).find((f) => f.startsWith("vmlinuz-"))!;
  const kver = boot.slice("vmlinuz-".length);

  const root = path.join(dir, "initrd-root");
  for (const d of ["bin", "lib/modules", "lib64", "lib/x86_64-linux-gnu", "usr/bin", "proc", "sys", "dev", "tmp"]) mkdirSync(path.join(root, d), { recursive: true });
  copyFileSync("/bin/busybox", path.join(root, "bin/busybox"));
  chmodSync(path.join(root, "bin/busybox"), 0o755);
  symlinkSync("busybox", path.join(root, "bin/sh"));
  copyFileSync("/usr/bin/socat", path.join(root, "usr/bin/socat"));
  chmodSync(path.join(root, "usr/bin/socat"), 0o755);
  const libs = sh("ldd", ["/usr/bin/socat"])
    .split("\n")
    .map((l) => /(\/\S+) \(0x/.exec(l)?.[1])
    .filter((l): l is string => !!l);
  for (const lib of libs) {
    mkdirSync(path.join(root, path.dirname(lib)), { recursive: true });
    copyFileSync(lib, path.join(root, lib));
  }
  const mods = MODULES.map((m) => path.basename(m));
  for (const m of MODULES) copyFileSync(path.join(kroot, "lib/modules", kver, "kernel", m), path.join(root, "lib/modules", path.basename(m)));
  writeFileSync(
    path.join(root, "init"),
    `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${mods.join(" ")}; do insmod /lib/modules/$m || echo "insmod $m failed"; done
stty -echo 2>/dev/null
echo AIRLOCK_GUEST_READY cid=$(cat /sys/class/vsock/* 2>/dev/null)
# A program that leaves the console non-blocking makes ash see EOF: start a new shell then.
while :; do sh; done
`,
  );
  chmodSync(path.join(root, "init"), 0o755);
  const files = sh("find", [".", "-mindepth", "1"], root).trim().split("\n").sort().join("\n") + "\n";
  const cpio = execFileSync("cpio", ["-o", "-H", "newc", "--quiet"], { cwd: root, input: files, maxBuffer: 1 << 30 });
  writeFileSync(initrd, cpio);
  copyFileSync(path.join(kroot, "boot", boot), kernel);
  rmSync(kroot, { recursive: true, force: true });
  return { kernel, initrd };
}

/** One running QEMU guest whose shell is on stdio. */
export class TestGuest {
  private readonly proc: ChildProcess;
  private out = "";
  private seq = 0;
  private exited = false;

  /** `iommuPlatform`: the device offers VIRTIO_F_ACCESS_PLATFORM (bit 33), as an SNP plan's does. */
  constructor(image: GuestImage, vhostSocket: string, memMiB = 256, opts: { iommuPlatform?: boolean } = {}) {
    this.proc = spawn(
      "qemu-system-x86_64",
      [
        "-machine", "q35,memory-backend=mem",
        "-object", `memory-backend-memfd,id=mem,size=${memMiB}M,share=on`,
        "-m", `${memMiB}M`,
        "-accel", "tcg",
        "-smp", "1",
        "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", "stdio",
        "-kernel", image.kernel,
        "-initrd", image.initrd,
        "-append", "console=ttyS0 quiet loglevel=1 panic=-1",
        "-chardev", `socket,id=vsock,path=${vhostSocket}`,
        "-device", `vhost-user-vsock-pci,chardev=vsock${opts.iommuPlatform ? ",iommu_platform=on" : ""}`,
      ],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    const collect = (d: Buffer): void => {
      this.out += d.toString("latin1");
      if (this.out.length > 4 << 20) this.out = this.out.slice(-(1 << 20));
    };
    this.proc.stdout!.on("data", collect);
    this.proc.stderr!.on("data", collect);
    this.proc.on("exit", () => (this.exited = true));
  }

  get output(): string {
    return this.out;
  }

  /** Waits until `re` appears in the output after position `from`. */
  async waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.out.slice(from));
      if (m) return m;
      if (this.exited) throw new Error(`guest exited; output:\n${this.out.slice(-3000)}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}; output:\n${this.out.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async booted(timeoutMs = 120_000): Promise<void> {
    await this.waitFor(/AIRLOCK_GUEST_READY/, timeoutMs);
  }

  /** Runs a shell line and returns what it printed and its exit status. */
  async run(cmd: string, timeoutMs = 60_000): Promise<{ out: string; status: number }> {
    const id = ++this.seq;
    const from = this.out.length;
    // The marker is computed by the shell so an echoed command line never matches it.
    this.proc.stdin!.write(`${cmd}; echo "__DONE_$((${id}*1))_$?__"\n`);
    const m = await this.waitFor(new RegExp(`([\\s\\S]*?)__DONE_${id}_(\\d+)__`), timeoutMs, from);
    return { out: m[1]!, status: Number(m[2]) };
  }

  /** Starts a shell line in the background (its output lands in `output`). */
  start(cmd: string): void {
    this.proc.stdin!.write(`(${cmd}) </dev/null &\n`);
  }

  async kill(): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((r) => this.proc.once("exit", () => r()));
    this.proc.kill("SIGKILL");
    await Promise.race([done, new Promise((r) => setTimeout(r, 5000))]);
  }
}
