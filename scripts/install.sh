#!/usr/bin/env bash
# Installs faultd and faultctl on this host from this checkout: the binaries, the systemd unit,
# an example policy (only if none is there), bash completion and man pages (when this faultctl
# makes them). See docs/operations.md. As root, or through sudo for the steps that need it.
# --destdir stages everything under a directory instead (packaging, tests), touching nothing
# else; --dry-run prints the steps and does none of them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

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

# The prefix goes into the unit's ExecStart as it is.
case $prefix in
/*) prefix=${prefix%/} ;;
*) die "--prefix must be an absolute path: $prefix" ;;
esac
case $prefix in *[[:space:]'&|\']*) die "--prefix must not contain spaces, &, | or \\: $prefix" ;; esac
# Relative paths are the caller's, not the checkout's.
case $destdir in /* | "") ;; *) destdir=$PWD/$destdir ;; esac
bin_source=target/release
if [ -n "${FAULTLINE_BIN_DIR:-}" ]; then
    case $FAULTLINE_BIN_DIR in /*) bin_source=$FAULTLINE_BIN_DIR ;; *) bin_source=$PWD/$FAULTLINE_BIN_DIR ;; esac
fi
cd "$(dirname "$0")/.."

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Runs a step: as root where the target is the real system; only printed with --dry-run.
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
# bash-completion finds it there for /usr/local and /usr (XDG_DATA_DIRS).
completion="$destdir$prefix/share/bash-completion/completions/faultctl"
man_dir="$destdir$prefix/share/man/man1"
systemd_here() { [ -z "$destdir" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
was_running=""
if systemd_here && systemctl is-active --quiet faultd.service; then was_running=yes; fi

if [ -n "$uninstall" ]; then
    # Stopping faultd (SIGTERM) reverts every fault; its reaper then exits by itself.
    if systemd_here; then do_ systemctl disable --now faultd.service || true; fi
    do_ rm -f "$bin_dir/faultd" "$bin_dir/faultctl" "$unit" "$completion"
    do_ rm -f "$man_dir"/faultctl.1 "$man_dir"/faultctl-*.1
    if systemd_here; then do_ systemctl daemon-reload; fi
    log "removed faultd and faultctl; kept $policy and /var/lib/faultline"
    exit 0
fi

if [ -z "$build" ]; then
    built=$bin_source
elif [ -n "$dry_run" ]; then
    printf '+ ./scripts/setup.sh --build-only\n+ cargo build --release -p faultline --bins\n'
    built=target/release
else
    ./scripts/setup.sh --build-only
    log "building (release)"
    cargo build --release -p faultline --bins --quiet
    built=target/release
fi
if [ -z "$dry_run" ] || [ -z "$build" ]; then
    for b in faultd faultctl; do
        [ -x "$built/$b" ] || die "$built/$b is missing: build it, or drop --no-build"
    done
fi

do_ install -d -m 0755 "$bin_dir" "$(dirname "$unit")" "$(dirname "$policy")" "$(dirname "$completion")" "$man_dir"
do_ install -m 0755 "$built/faultd" "$built/faultctl" "$bin_dir/"

# The unit, naming the binary where this install puts it.
if [ -n "$dry_run" ]; then
    printf '+ install -m 0644 deploy/systemd/faultd.service %s (ExecStart=%s/bin/faultd)\n' "$unit" "$prefix"
else
    sed "s|/usr/local/bin/faultd|$prefix/bin/faultd|" deploy/systemd/faultd.service >"$scratch/faultd.service"
    do_ install -m 0644 "$scratch/faultd.service" "$unit"
fi

if [ -e "$policy" ]; then
    log "keeping the policy in place: $policy"
else
    do_ install -m 0644 deploy/faultd.toml "$policy"
fi

# Completion and man pages, if this faultctl makes them (`faultctl completions`, `faultctl man`).
if [ -n "$dry_run" ]; then
    printf '+ faultctl completions bash > %s (if this faultctl has it)\n' "$completion"
    printf '+ faultctl man %s (if this faultctl has it)\n' "$man_dir"
else
    if "$built/faultctl" completions bash >"$scratch/faultctl.bash" 2>/dev/null; then
        do_ install -m 0644 "$scratch/faultctl.bash" "$completion"
    else
        log "this faultctl has no 'completions' command: no bash completion installed"
    fi
    if "$built/faultctl" man --help >/dev/null 2>&1; then
        do_ "$built/faultctl" man "$man_dir"
    else
        log "this faultctl has no 'man' command: no man pages installed"
    fi
fi

if systemd_here; then
    do_ systemctl daemon-reload
    if [ -n "$enable" ]; then
        do_ systemctl enable --now faultd.service
    else
        log "start it with: systemctl enable --now faultd"
    fi
    if [ -n "$was_running" ]; then
        log "faultd is still running the binary it started with; 'systemctl restart faultd' runs the new one (a restart reverts every fault)"
    fi
elif [ -n "$enable" ]; then
    log "systemd is not running here (or --destdir was given): nothing enabled"
fi

if [ -n "$dry_run" ]; then
    log "dry run: nothing was changed"
else
    log "installed faultd and faultctl in $bin_dir"
fi
