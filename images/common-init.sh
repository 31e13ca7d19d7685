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
