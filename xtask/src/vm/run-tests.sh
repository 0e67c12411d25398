# The test runner inside the VM, run by the host's bash (/init starts it). PATH has the host's
# tools first, so ip and tc are iproute2's, not busybox's.
set -uo pipefail

export FAULTLINE_BIN_DIR=$(</faultline/bin-dir)
# The Python client's tests run with the host's venv, copied in at its path.
export FAULTLINE_VENV=$(</faultline/venv)
# Every kernel of the matrix has netem: the netem suite must run, not skip.
export FAULTLINE_EXPECT_NETEM=1
# --test-threads=N and the --filter string, one per line.
mapfile -t args </faultline/test-args

ip link set lo up

# A cheap check that latency tests can rely on netem in this kernel.
if err=$(tc qdisc add dev lo root netem delay 1ms 2>&1); then
    tc qdisc del dev lo root
    echo "FAULTLINE-VM-NETEM: yes"
else
    echo "FAULTLINE-VM-NETEM: no ($err)"
fi

failed=0
summary=()
while IFS=$'\t' read -r name dir exe; do
    echo "FAULTLINE-VM-RUN: $name"
    start=$EPOCHREALTIME
    # Run from the package directory with CARGO_MANIFEST_DIR set, as `cargo test` does.
    # --show-output: the suites print measurements (FAULTLINE-MEASURE lines) worth keeping.
    (cd "$dir" && CARGO_MANIFEST_DIR=$dir "$exe" "${args[@]}" --show-output)
    rc=$?
    secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    # The root filesystem is RAM: what the tests leave there, the next ones lack.
    free=$(df -m / | awk 'NR == 2 { print $4 }')
    if [ "$rc" -eq 0 ]; then
        summary+=("FAULTLINE-VM-BIN: ok   $name (${secs}s, ${free} MB free after)")
    else
        failed=$((failed + 1))
        summary+=("FAULTLINE-VM-BIN: FAIL $name (exit $rc, ${secs}s, ${free} MB free after)")
    fi
done </faultline/tests

printf '%s\n' "${summary[@]}"
if [ "$failed" -eq 0 ]; then
    echo "FAULTLINE-VM-RESULT: PASS"
else
    echo "FAULTLINE-VM-RESULT: FAIL $failed"
fi
