#!/usr/bin/env bash
# Prepares everything needed to boot Debian bookworm's generic kernel under qemu with this machine's root
# filesystem shared read-only over 9p: Debian packages, the kernel package (downloaded and unpacked, never
# installed), and a tiny busybox initramfs. Output goes to the cache folder (default <repo>/.vm-cache);
# re-runs are quick: only what is missing or changed is rebuilt. Prints the cache folder on success.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
C=${VM_CACHE:-$repo/.vm-cache}
mkdir -p "$C"
exec 9>"$C/.lock"
flock -w 600 9   # parallel runs share one cache

pkgs=(qemu-system-x86 busybox-static kmod ipvsadm bpftool iproute2 nftables conntrack procps util-linux gzip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "vm-setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The generic flavour: the -cloud one has no 9p. The versioned package linux-image-amd64 points at.
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$pkg" ] || { echo "vm-setup: cannot tell which kernel package linux-image-amd64 depends on" >&2; exit 1; }
kv=${pkg#linux-image-}
kdir=$C/kernel-$kv
if [ ! -f "$kdir/.done" ]; then
  rm -rf "$kdir" "$C"/*.deb
  (cd "$C" && apt-get download -q "$pkg" >&2)
  dpkg -x "$C"/"${pkg}"_*.deb "$kdir"
  rm -f "$C"/*.deb
  depmod -b "$kdir" "$kv"   # the .deb has no modules.dep (its postinst would make it)
  touch "$kdir/.done"
fi

# initramfs: static busybox, /init, and the virtio + 9p modules needed to mount the host root.
initsum=$(cat "$here/init.sh" /bin/busybox "$kdir/.done" | sha256sum | cut -c1-16)
if [ "$(cat "$C/initramfs.sum" 2>/dev/null)" != "$initsum" ] || [ ! -f "$C/initramfs.cpio.gz" ]; then
  m=$kdir/lib/modules/$kv/kernel
  t=$C/initramfs.tmp
  rm -rf "$t"; mkdir -p "$t"/{bin,dev,proc,sys,newroot,modules}
  cp /bin/busybox "$t/bin/"
  for f in drivers/virtio/{virtio_ring,virtio,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio_pci} \
           fs/netfs/netfs fs/fscache/fscache net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p; do
    src=$m/$f.ko
    [ -f "$src" ] || src=$(ls "$m/$f".ko* 2>/dev/null | head -1)
    [ -f "$src" ] || continue   # built in on some kernels
    cp "$src" "$t/modules/"
  done
  install -m 0755 "$here/init.sh" "$t/init"
  (cd "$t" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$C/initramfs.cpio.gz"
  rm -rf "$t"
  echo "$initsum" > "$C/initramfs.sum"
fi
ln -sfn "kernel-$kv" "$C/kernel"
echo "$kv" > "$C/KV"
echo "$C"
