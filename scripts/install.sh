#!/usr/bin/env bash
# Installs faultd and faultctl on this host from this checkout: the binaries, the systemd
# unit, an example policy (only if none is there), bash completion and man pages. See
# docs/operations.md. --destdir stages everything under a directory instead (packaging, tests).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

usage() {
    cat <<'EOF'
usage: scripts/install.sh [options]
  --prefix DIR    where bin/ and share/ go (default /usr/local)
  --destdir DIR   stage the files under DIR; touches nothing else (no systemctl)
  --no-build      use binaries already built ($FAULTLINE_BIN_DIR, else target/release)
  --enable        also `systemctl enable --now faultd`
  --uninstall     remove what an install put in place (the policy and the state stay)
  --dry-run       print what would be done, do nothing
EOF
}

prefix=/usr/local destdir="" build=yes enable="" uninstall="" dry_run=""
while [ $# -gt 0 ]; do
    case $1 in
    --prefix) prefix=${2:?--prefix needs a directory} && shift ;;
    --destdir) destdir=${2:?--destdir needs a directory} && shift ;;
    --no-build) build="" ;;
    --enable) enable=yes ;;
    --uninstall) uninstall=yes ;;
    --dry-run) dry_run=yes ;;
    -h | --help) usage && exit 0 ;;
    *) usage >&2 && exit 2 ;;
    esac
    shift
done

# Runs a command, as root where the target is the real system; only prints it with --dry-run.
do_() {
    if [ -n "$dry_run" ]; then
        printf '+ %s\n' "$*"
    elif [ -n "$destdir" ]; then
        "$@"
    else
        as_root "$@"
    fi
}

bin_dir="$destdir$prefix/bin"
unit="$destdir/etc/systemd/system/faultd.service"
policy="$destdir/etc/faultline/faultd.toml"
completion="$destdir/usr/share/bash-completion/completions/faultctl"
man_dir="$destdir$prefix/share/man/man1"
systemd_here() { [ -z "$destdir" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

if [ -n "$uninstall" ]; then
    if systemd_here; then do_ systemctl disable --now faultd.service || true; fi
    do_ rm -f "$bin_dir/faultd" "$bin_dir/faultctl" "$unit" "$completion"
    do_ rm -f "$man_dir"/faultctl.1 "$man_dir"/faultctl-*.1
    if systemd_here; then do_ systemctl daemon-reload; fi
    log "removed faultd and faultctl; kept $policy and /var/lib/faultline"
    exit 0
fi

if [ -n "$build" ]; then
    ./scripts/setup.sh
    log "building (release)"
    cargo build --release --bins --quiet
    built=target/release
else
    built=${FAULTLINE_BIN_DIR:-target/release}
fi
for b in faultd faultctl; do [ -x "$built/$b" ] || die "$built/$b is missing: build it, or drop --no-build"; done

do_ install -d -m 0755 "$bin_dir" "$(dirname "$unit")" "$(dirname "$policy")" "$(dirname "$completion")" "$man_dir"
do_ install -m 0755 "$built/faultd" "$built/faultctl" "$bin_dir/"
# The unit names the binary where this install put it.
if [ -n "$dry_run" ]; then
    printf '+ install deploy/systemd/faultd.service %s (ExecStart=%s/bin/faultd)\n' "$unit" "$prefix"
else
    sed "s#/usr/local/bin/faultd#$prefix/bin/faultd#" deploy/systemd/faultd.service >"${TMPDIR:-/tmp}/faultd.service.$$"
    do_ install -m 0644 "${TMPDIR:-/tmp}/faultd.service.$$" "$unit"
    rm -f "${TMPDIR:-/tmp}/faultd.service.$$"
fi
if [ -e "$policy" ]; then
    log "keeping the policy in place: $policy"
else
    do_ install -m 0644 deploy/faultd.toml "$policy"
fi
if [ -n "$dry_run" ]; then
    printf '+ faultctl completions bash > %s\n+ faultctl man %s\n' "$completion" "$man_dir"
else
    "$built/faultctl" completions bash >"${TMPDIR:-/tmp}/faultctl.bash.$$"
    do_ install -m 0644 "${TMPDIR:-/tmp}/faultctl.bash.$$" "$completion"
    rm -f "${TMPDIR:-/tmp}/faultctl.bash.$$"
    do_ "$built/faultctl" man "$man_dir"
fi

if systemd_here; then
    do_ systemctl daemon-reload
    if [ -n "$enable" ]; then
        do_ systemctl enable --now faultd.service
    else
        log "start it with: systemctl enable --now faultd"
    fi
fi
if [ -n "$dry_run" ]; then
    log "dry run: nothing was changed"
else
    log "installed faultd and faultctl in $bin_dir"
fi
