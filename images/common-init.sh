# Shared start of every airlock guest's /init (sourced). Busybox only; no udev, no systemd.
export PATH=/bin:/usr/bin
# The initramfs root is created by the kernel; make sure no unprivileged user can write to it.
chown 0:0 /
chmod 0755 /
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# tmpfs lives in RAM, and so does the initramfs root: each tmpfs is bounded from MemTotal (kB) so
# that, filled up, they leave the kernel and node room (/tmp 10% here, the sandbox's /data 40%).
# nr_inodes bounds the kernel memory that empty files take, which size= does not count.
while read -r key value _; do [ "$key" = MemTotal: ] && mem_kb=$value; done < /proc/meminfo
mount -t tmpfs -o mode=1777,nosuid,nodev,size=$((mem_kb / 10))k,nr_inodes=65536 tmpfs /tmp
# Kernel modules in dependency order (Debian builds virtio and vsock as modules).
while read -r m; do
  [ -n "$m" ] && insmod "/lib/modules/$m" || echo "airlock-guest: cannot load $m"
done < /etc/airlock/modules
# Under TCG (emulation: development and tests, never SEV-SNP), OpenSSL's AVX, AVX2 and SSSE3 code is
# emulated one instruction at a time and runs 2-4 times slower than its plain x86-64 code — in the
# sandbox ChaCha20-Poly1305 went from 16 to 61 MiB/s and SHA-256 from 28 to 101 MiB/s (issue 12).
# Only then are node's OpenSSL routines told to skip those extensions; AES keeps AES-NI (its bit is
# not masked), so AES never falls back to table lookups. The workload gets its own environment.
if grep -q '^model name.*QEMU TCG CPU' /proc/cpuinfo && grep -q '^flags.* aes ' /proc/cpuinfo; then
  export OPENSSL_ia32cap='~0x1000020000000000:~0x20'
fi
