#!/usr/bin/env bash
# Boots the cached Debian kernel under qemu (software emulation) and runs SCRIPT (an absolute path on this
# machine, visible read-only inside the VM) as root. RESULTS (created here) is the only writable share; the
# VM writes RESULTS/exit-status when the script finished. The serial console goes to stdout.
# Usage: test/vm/run.sh SCRIPT RESULTS [TIMEOUT_SECONDS]
set -euo pipefail
script=${1:?script}; results=${2:?results folder}; tmo=${3:-600}
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../.." && pwd)
C=$(bash "$here/setup.sh")
kv=$(cat "$C/KV")
mkdir -p "$results"; rm -f "$results/exit-status"
command -v qemu-system-x86_64 >/dev/null || { echo "vm-run: qemu-system-x86_64 not found" >&2; exit 127; }
# KVM on this kind of machine cannot boot a stock kernel; TCG always can. timeout wraps qemu itself so
# qemu never outlives the run.
exec timeout --kill-after=10 "$tmo" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -M q35 -m "${VM_MEM:-2048}" -smp 2 \
  -nographic -nodefaults -no-reboot -serial stdio \
  -kernel "$C/kernel/boot/vmlinuz-$kv" -initrd "$C/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 loglevel=4 testscript=$script resultsdir=$results kdir=$(readlink -f "$C/kernel") projectdir=$project" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
  -virtfs "local,path=$project,mount_tag=project,security_model=passthrough,readonly=on,multidevs=remap" \
  -virtfs "local,path=$results,mount_tag=results,security_model=passthrough"
