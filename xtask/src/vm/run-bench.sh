# The benchmark runner inside the VM (`cargo xtask bench --vm`), run by the host's bash. It
# prints the results file as one line for the host to keep.
set -uo pipefail

export FAULTLINE_BIN_DIR=$(</faultline/bin-dir)
# Per-fault logging would time the log, not faultd.
export FAULTD_LOG=warn
# faultline-bench's arguments, one per line.
mapfile -t args </faultline/test-args

ip link set lo up
out=/tmp/faultline-bench
if "$FAULTLINE_BIN_DIR/faultline-bench" --out "$out" "${args[@]}"; then
    echo "FAULTLINE-BENCH-RESULTS: $(tr -d '\n' <"$out/results.json")"
    echo "FAULTLINE-VM-RESULT: PASS"
else
    echo "FAULTLINE-VM-RESULT: FAIL 1"
fi
