#!/bin/busybox sh
# /init of the test VM: mount the host root (read-only) and the results folder over 9p, chroot, run the
# script named by testscript= on the kernel command line, record its exit status, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
arg() { sed -n "s/.*[ ^]$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p; do
  [ -f /modules/$m.ko ] && { insmod /modules/$m.ko || echo "VMINIT: insmod $m failed"; }
done
R=/newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot $R || { echo "VMINIT: mount hostroot failed"; poweroff -f; }
mount -t proc proc $R/proc; mount -t sysfs sys $R/sys; mount -t devtmpfs dev $R/dev
mount -t tmpfs tmpfs $R/run; mount -t tmpfs tmpfs $R/tmp
mkdir -p $R/dev/pts $R/dev/shm; mount -t devpts devpts $R/dev/pts; mount -t tmpfs tmpfs $R/dev/shm
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
mount -t bpf bpf $R/sys/fs/bpf 2>/dev/null
RESULTS=$(arg resultsdir); KDIR=$(arg kdir); SCRIPT=$(arg testscript); PROJECT=$(arg projectdir)
# The checkout has its own share: under /tmp or /run (the tmpfs mounts above) it would be hidden otherwise.
mkdir -p "$R$PROJECT" 2>/dev/null  # exists already unless it lies under /tmp or /run
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose project "$R$PROJECT" || { echo "VMINIT: mount project failed"; poweroff -f; }
mkdir -p "$R$RESULTS" 2>/dev/null  # exists already unless it lies under /tmp or /run
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=262144 results "$R$RESULTS" || { echo "VMINIT: mount results failed"; poweroff -f; }
# The host root has no modules for this kernel: point the kernel's module autoloader at the unpacked package,
# so IPVS schedulers, nftables expressions etc. load on demand as on a normal install. The kernel runs the
# helper from this initramfs's root, hence the chroot. Inside, /run/modprobe does the same for scripts.
printf '#!/bin/sh\nexec /bin/chroot %s /sbin/modprobe -d %s "$@"\n' "$R" "$KDIR" > /bin/vm-modprobe; chmod 755 /bin/vm-modprobe
echo /bin/vm-modprobe > /proc/sys/kernel/modprobe
printf '#!/bin/sh\nexec /sbin/modprobe -d %s "$@"\n' "$KDIR" > $R/run/modprobe; chmod 755 $R/run/modprobe
echo "VMINIT: running $SCRIPT uptime=$(cut -d' ' -f1 /proc/uptime)"
PATH=/run:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp VM_KDIR=$KDIR VM_RESULTS=$RESULTS \
  chroot $R /bin/sh -c "cd $(dirname "$SCRIPT") && $SCRIPT" 2>&1
rc=$?
echo "$rc" > "$R$RESULTS/exit-status"
echo "VMINIT: script rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
