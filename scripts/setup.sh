#!/usr/bin/env bash
# Idempotent: installs only what is missing, so re-running it is cheap.
# --build-only: just what building faultd needs, for a host that will run it
# (scripts/install.sh): no test tools, rustup components or Python packages.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build_only=""
case ${1:-} in
--build-only) build_only=yes ;;
"") ;;
*) die "usage: scripts/setup.sh [--build-only]" ;;
esac

export DEBIAN_FRONTEND=noninteractive
packages=(clang llvm libbpf-dev)
[ -n "$build_only" ] || packages+=(iproute2 iputils-ping socat openssl iperf3 jq procps bpftool python3-venv)

missing=()
for pkg in "${packages[@]}"; do
    # dpkg -s succeeds for removed-but-configured packages too; check the status field.
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: ${missing[*]}"
    log "installing: ${missing[*]}"
    # Keep apt's chatter out of the way but show it when something fails.
    aptlog=$(mktemp)
    trap 'rm -f "$aptlog"' EXIT
    as_root apt-get update -qq >"$aptlog" 2>&1 || { cat "$aptlog" >&2; die "apt-get update failed"; }
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >"$aptlog" 2>&1 || { cat "$aptlog" >&2; die "apt-get install failed"; }
else
    log "system packages: all present"
fi

command -v cargo >/dev/null 2>&1 ||
    die "cargo not found; install Rust with: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
if [ -n "$build_only" ]; then
    log "setup done (build only)"
    exit 0
fi

if command -v rustup >/dev/null 2>&1; then
    for comp in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
            log "installing rust component: $comp"
            rustup component add "$comp" >/dev/null
        fi
    done
else
    log "rustup not found; skipping rustfmt/clippy component check"
fi

# Python tooling for the tests (scripts/requirements.txt), in a virtual environment of its own:
# Debian's system pip refuses installs (PEP 668). The tests find it at the same path.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${FAULTLINE_VENV:-$root/target/venv}
if [ ! -x "$venv/bin/python" ]; then
    log "creating a Python virtual environment in $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
# What is pinned and not installed at that version (pip freeze writes names as pinned here;
# --all, since setuptools, pinned here, is one of the packages a plain freeze leaves out).
installed=$("$venv/bin/python" -m pip freeze --all --disable-pip-version-check 2>/dev/null)
wanted=()
while read -r requirement; do
    case $requirement in "" | "#"*) continue ;; esac
    grep -qixF -- "$requirement" <<<"$installed" || wanted+=("$requirement")
done <"$root/scripts/requirements.txt"
if [ "${#wanted[@]}" -gt 0 ]; then
    log "installing Python packages (PyPI): ${wanted[*]}"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wanted[@]}" ||
        die "pip install failed"
else
    log "Python packages: all present"
fi

# The Python client (python/, distribution faultd-client), editable: the tests run its sources
# as they are. Built with the pinned setuptools, without build isolation or an index, so this
# step needs no network. Installed again when pyproject.toml (its metadata: the pytest
# entry point) changes, or when the environment's copy points at another checkout.
stamp="$venv/faultd-client.pyproject.sha256"
want=$(sha256sum "$root/python/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] ||
    ! "$venv/bin/python" -c 'import sys, faultd_client; sys.exit(not faultd_client.__file__.startswith(sys.argv[1]))' \
        "$root/python/src/" 2>/dev/null; then
    log "installing faultd-client (python/) into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
        --no-deps --no-index --editable "$root/python" || die "pip install ./python failed"
    echo "$want" >"$stamp"
else
    log "faultd-client: installed"
fi

log "setup done"
