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
#   qemu-system-x86   runs the VMs (TCG here; KVM if a probe boot works); --tee snp uses
#                     Debian's QEMU 10 from bookworm-backports, unpacked beside it (below)
#   busybox-static    the guests' userland (static: the minimal image has no libc)
#   socat             a third-party vsock client for fabric tests
#   age               the age CLI that data owners use; tests check compatibility both ways
#   cpio              tests unpack our initrds with GNU cpio to check them
#   ovmf              firmware for `airlock measure` examples and tests
#   build-essential python3  node-gyp builds the fabric's native shim
#   util-linux procps        setpriv (QEMU dies with its supervisor) and pgrep
#   openssh-client openssh-server  `--host` drives remote hosts over SSH; the tests start a
#                     throwaway sshd on loopback (never the system's service) as the remote host
PACKAGES=(qemu-system-x86 qemu-utils busybox-static socat age cpio ovmf build-essential python3 util-linux procps ca-certificates openssh-client openssh-server)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Installing openssh-server enables and starts the system's sshd on port 22: airlock needs only
  # its binary (the tests start their own on loopback), so a server this script brought in is
  # stopped and disabled again. One the host already had is left alone.
  if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null; then
    $SUDO systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    say "openssh-server installed for its sshd binary; its system service is left disabled"
  fi
else
  say "system packages present"
fi

# QEMU for --tee snp. Debian 12's QEMU (7.2, above) runs the emulated pairs but predates
# sev-snp-guest (QEMU 9.1), so Debian's QEMU 10.0 from bookworm-backports is unpacked (dpkg -x, not
# installed: nothing else on the host changes) into $SNP_QEMU_PREFIX, where host-tools looks for it
# (launch/snp-qemu.ts; AIRLOCK_SNP_QEMU overrides). Its shared libraries are those QEMU 7.2 already
# pulled in; ldd proves it. AIRLOCK_SNP_QEMU_VERSION pins another backports version.
SNP_QEMU_PREFIX=/opt/airlock/qemu-10
SNP_QEMU="$SNP_QEMU_PREFIX/usr/bin/qemu-system-x86_64"
BACKPORTS_LIST=/etc/apt/sources.list.d/airlock-bookworm-backports.sources
snp_qemu_ok() { [ -x "$SNP_QEMU" ] && "$SNP_QEMU" --version 2>/dev/null | grep -Eq 'version (9\.[1-9]|[1-9][0-9])'; }
if snp_qemu_ok; then
  say "SNP-capable QEMU present: $("$SNP_QEMU" --version | head -1) in $SNP_QEMU_PREFIX"
else
  if ! apt-cache policy 2>/dev/null | grep -q 'bookworm-backports'; then
    say "adding Debian's bookworm-backports to apt's sources ($BACKPORTS_LIST; nothing is installed from it)"
    printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' 'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' | $SUDO tee "$BACKPORTS_LIST" >/dev/null
    $SUDO apt-get update -qq
  fi
  qver="${AIRLOCK_SNP_QEMU_VERSION:-$(apt-cache madison qemu-system-x86 | awk '$3 ~ /bpo12/ && $3 ~ /^1:(9\.[1-9]|[1-9][0-9])/ {print $3; exit}')}"
  [ -n "$qver" ] || die "bookworm-backports offers no qemu-system-x86 of version 9.1 or later (needed for --tee snp)"
  say "unpacking Debian's QEMU $qver (bookworm-backports) into $SNP_QEMU_PREFIX"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq "qemu-system-x86=$qver" "qemu-system-common=$qver" "qemu-system-data=$qver" 2>/dev/null) ||
    die "cannot download qemu-system-x86=$qver from bookworm-backports"
  $SUDO rm -rf "$SNP_QEMU_PREFIX.new"
  $SUDO mkdir -p "$SNP_QEMU_PREFIX.new"
  for deb in "$tmp"/*.deb; do $SUDO dpkg -x "$deb" "$SNP_QEMU_PREFIX.new"; done
  rm -rf "$tmp"
  if ldd "$SNP_QEMU_PREFIX.new/usr/bin/qemu-system-x86_64" | grep -q 'not found'; then
    die "QEMU $qver lacks shared libraries on this host: $(ldd "$SNP_QEMU_PREFIX.new/usr/bin/qemu-system-x86_64" | grep 'not found' | tr -s ' \t\n' ' ')"
  fi
  $SUDO rm -rf "$SNP_QEMU_PREFIX"
  $SUDO mv "$SNP_QEMU_PREFIX.new" "$SNP_QEMU_PREFIX"
  snp_qemu_ok || die "the unpacked QEMU in $SNP_QEMU_PREFIX does not run"
  say "SNP-capable QEMU ready: $("$SNP_QEMU" --version | head -1)"
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
