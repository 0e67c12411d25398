#!/usr/bin/env bash
# Sets up a fresh machine and runs every check and test: formatting, lints, unit tests, the
# privileged suite on this host's kernel (network namespaces made and removed by the tests),
# then the VM stage: the same suite on each kernel of the matrix (cargo xtask vm-test).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "the privileged tests need root (sudo is not installed)"
    exec sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME "$0" "$@"
fi

./scripts/setup.sh

log "formatting"
cargo fmt --all --check
log "lints"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "build"
cargo build --workspace --bins --quiet
log "host stage: tests on kernel $(uname -r)"
host_start=$SECONDS
# faultd mounts bpffs for its pins when it is missing; the run puts the machine back as it was.
bpffs_before=$(findmnt -n -t bpf /sys/fs/bpf >/dev/null && echo mounted || echo absent)
cargo test --workspace --quiet
log "host stage took $((SECONDS - host_start)) s"

log "VM stage: the suite on the kernel matrix, under qemu"
vm_start=$SECONDS
cargo xtask vm-test
log "VM stage took $((SECONDS - vm_start)) s"

# The suite must leave the machine as it found it: no namespaces, veths, agents (or their
# reapers, also named faultd), qemu, or pins.
leaks=$(ip netns list | awk '$1 ~ /^fl-/ {print $1}'; ip -o link show | awk -F': ' '$2 ~ /^fl/ {print $2}'; pgrep -x faultd; pgrep -f '^qemu-system'; ls -d /sys/fs/bpf/faultline* 2>/dev/null || true)
[ -z "$leaks" ] || die "the tests left behind: $leaks"
if [ "$bpffs_before" = absent ] && findmnt -n -t bpf /sys/fs/bpf >/dev/null; then
    umount /sys/fs/bpf
fi
log "all tests passed; nothing left behind"
