#!/bb/busybox sh
# PID 1 of the test (or bench) VM, run by busybox. Only busybox's applets are on PATH here; the tests run
# later under the host's bash with the host's tools first on PATH.
export PATH=/bb

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=755 run /run
# /tmp stays on the root filesystem (already in RAM): a tmpfs there would hide a workspace
# that lives under /tmp on the host.
chmod 1777 /tmp
# faultd pins maps and programs on bpffs; cgroup2 for anything attaching to cgroups.
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup

echo "FAULTLINE-VM-BOOTED: $(uname -r), $(nproc) CPUs, $(cut -d' ' -f1 /proc/uptime)s after kernel start"

for ko in /faultline/modules/*.ko; do
    [ -e "$ko" ] || continue
    insmod "$ko" || echo "FAULTLINE-VM: insmod $ko failed"
done
echo "lsmod:"
lsmod

env -i PATH="$(cat /faultline/path)" HOME=/root TMPDIR=/tmp RUST_BACKTRACE=1 \
    /bin/bash /faultline/run.sh

# The host reads the verdict from the console. (If PID 1 exited instead, the kernel would
# panic, and panic=-1 with -no-reboot would end qemu too, without a verdict.)
poweroff -f
