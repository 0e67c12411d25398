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
