# Shared start of every airlock guest's /init (sourced). Busybox only; no udev, no systemd.
export PATH=/bin:/usr/bin
# The initramfs root is created by the kernel; make sure no unprivileged user can write to it.
chown 0:0 /
chmod 0755 /
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
# Kernel modules in dependency order (Debian builds virtio and vsock as modules).
while read -r m; do
  [ -n "$m" ] && insmod "/lib/modules/$m" || echo "airlock-guest: cannot load $m"
done < /etc/airlock/modules
