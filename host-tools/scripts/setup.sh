#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for airlock, idempotently: system packages (QEMU, busybox,
# socat, age, ...), Debian's kernel package for the guest images, the npm dependencies, and the
# build (native fabric addon + bundled programs). Run as root (it uses apt-get).
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(uname -m)" = x86_64 ] || die "airlock needs an x86_64 host (found $(uname -m))"
command -v apt-get >/dev/null || die "this script needs Debian's apt-get (Debian 12 is what airlock is tested on)"
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "run as root (apt-get installs system packages)"
  SUDO=sudo
else
  SUDO=
fi

# What the project needs from Debian, and why:
#   qemu-system-x86   runs the VMs (TCG here; KVM if a probe boot works)
#   busybox-static    the guests' userland (static: the minimal image has no libc)
#   socat             a third-party vsock client for fabric tests
#   age               the age CLI that data owners use; tests check compatibility both ways
#   cpio              tests unpack our initrds with GNU cpio to check them
#   ovmf              firmware for `airlock measure` examples and tests
#   build-essential python3  node-gyp builds the fabric's native shim
#   util-linux procps        setpriv (QEMU dies with its supervisor) and pgrep
PACKAGES=(qemu-system-x86 qemu-utils busybox-static socat age cpio ovmf build-essential python3 util-linux procps ca-certificates)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "system packages present"
fi

# Debian's kernel for the guests: downloaded as a package (not installed on the host) into the
# cache the image builder reads. AIRLOCK_KERNEL_PACKAGE pins another one.
DEB_DIR=/var/cache/airlock/debs
$SUDO mkdir -p "$DEB_DIR"
kpkg="${AIRLOCK_KERNEL_PACKAGE:-}"
if [ -z "$kpkg" ]; then
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$kpkg" ]; then
    $SUDO apt-get update -qq
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
fi
[ -n "$kpkg" ] || die "cannot find Debian's linux-image-amd64 package"
if ls "$DEB_DIR/${kpkg}"_*.deb >/dev/null 2>&1; then
  say "kernel package $kpkg present in $DEB_DIR"
else
  say "downloading kernel package $kpkg into $DEB_DIR"
  (cd "$DEB_DIR" && $SUDO apt-get download -qq "$kpkg" 2>/dev/null) || {
    $SUDO apt-get update -qq
    (cd "$DEB_DIR" && $SUDO apt-get download -qq "$kpkg")
  }
fi

command -v node >/dev/null || die "Node.js 20.19 or later is needed (not found)"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' ||
  die "Node.js 20.19 or later is needed (found $(node --version))"

if [ -n "${CI:-}" ] || [ ! -d node_modules ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
else
  say "npm dependencies present (run npm ci to refresh)"
fi

say "building (native fabric shim, bundled programs)"
npm run --silent build

say "ready: try \`npx airlock run examples/hello/room.yaml --out out/hello\`"
