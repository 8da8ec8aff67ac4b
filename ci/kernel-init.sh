#!/bin/bash
# The guest's init script, run by ci/kernel-init.c in the guest's root (the host's
# files read-only under a tmpfs overlay) when `python3 -m conformance kernel` boots
# another kernel (conformance/kernels.py). Its one argument is the run's folder on
# the host, shared read-write: it holds job.sh (what to run, written by the host)
# and receives everything the run writes (out/, pcaps/, rc). $tcc_root (from the
# kernel command line) says how the host's files are shared: 9p, virtiofs, hostfs.
# When this script ends, PID 1 powers the guest off.
set -u
run=$1
say() { echo "tcc-kernel: $*"; }
up() { cut -d' ' -f1 /proc/uptime; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run   # the host's /run (its netns, its locks) stays out of view
# /tmp stays the host's (read-only below the overlay): files a user names there are seen
case $tcc_root in
  9p) mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results "$run" ;;
  virtiofs) mount -t virtiofs results "$run" ;;
  hostfs) mount -t hostfs -o "$run" none "$run" ;;
esac || { say "FATAL: cannot mount the run's folder $run ($tcc_root)"; exit 1; }
say "mounted uptime=$(up)"
# shellcheck source=/dev/null
. "$run/job.sh" || { say "FATAL: cannot read $run/job.sh"; exit 1; }

# This kernel's modules, from the kernel cache (or user-mode-linux's package), seen at /lib/modules, where
# modprobe finds what the kernel asks for (PID 1 loaded the ones the cases need).
mkdir -p /lib/modules && mount --bind "$TCC_MODULES" /lib/modules || { say "FATAL: no modules at $TCC_MODULES"; exit 1; }
say "modules found uptime=$(up)"
# pcaps go to the run's pcaps/, seen at the folder the host will hold them in, so recorded paths are right.
mkdir -p "$TCC_PCAP_DIR" && mount --bind "$run/pcaps" "$TCC_PCAP_DIR"
hostname "tcc-$(uname -r)"
ip link set lo up
echo 1 > /proc/sys/kernel/printk   # only emergencies (a panic) on the console while pytest writes to it
cd "$TCC_CWD" || exit 1
say "ready $(uname -r) uptime=$(up)"
start=$(up)
if [ "$TCC_TTY" = 1 ]; then
  "${TCC_ARGV[@]}" < /dev/null
  rc=$?
else  # the host's output is no terminal: neither is pytest's (no colours, no progress redrawn with CR)
  "${TCC_ARGV[@]}" < /dev/null 2>&1 | cat
  rc=${PIPESTATUS[0]}
fi
end=$(up)
echo "$rc $start $end" > "$run/rc"
say "pytest exit $rc"
sync
