# Shared helpers; source this file, don't execute it.

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

die() {
    log "error: $*"
    exit 1
}

# Run a command as root: directly when we already are, via sudo when it exists.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for '$*': run as root (sudo is not installed)"
    fi
}

# A lab of two network namespaces joined by a veth pair: $1 (10.0.0.1, fd00::1, device $3)
# and $2 (10.0.0.2, fd00::2, device $4). lab_delete removes it (the pair goes with them).
lab_create() {
    local ns_a=$1 ns_b=$2 dev_a=$3 dev_b=$4
    ip netns add "$ns_a"
    ip netns add "$ns_b"
    ip link add "$dev_a" type veth peer name "$dev_b"
    ip link set "$dev_a" netns "$ns_a"
    ip link set "$dev_b" netns "$ns_b"
    ip -n "$ns_a" addr add 10.0.0.1/24 dev "$dev_a"
    ip -n "$ns_b" addr add 10.0.0.2/24 dev "$dev_b"
    ip -n "$ns_a" addr add fd00::1/64 dev "$dev_a" nodad
    ip -n "$ns_b" addr add fd00::2/64 dev "$dev_b" nodad
    ip -n "$ns_a" link set lo up
    ip -n "$ns_b" link set lo up
    ip -n "$ns_a" link set "$dev_a" up
    ip -n "$ns_b" link set "$dev_b" up
}

lab_delete() {
    ip netns del "$1" 2>/dev/null || true
    ip netns del "$2" 2>/dev/null || true
}

# The faultline binary $1: from $FAULTLINE_BIN_DIR, this checkout's release or debug build,
# or PATH.
faultline_bin() {
    local root dir
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    for dir in "${FAULTLINE_BIN_DIR:-}" "$root/target/release" "$root/target/debug"; do
        if [ -n "$dir" ] && [ -x "$dir/$1" ]; then
            echo "$dir/$1"
            return
        fi
    done
    command -v "$1" || die "$1 not found: build it (cargo build --release --bins) or set FAULTLINE_BIN_DIR"
}
