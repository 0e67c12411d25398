#!/usr/bin/env bash
# The main job on an embedded default: builds faultline, starts faultd, makes a lab of two
# network namespaces joined by a veth pair, injects loss and a partition, and prints the
# effect measured by real traffic next to the fault's own counters. Cleans up on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "the demo needs root (sudo is not installed)"
    exec sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME "$0" "$@"
fi

./scripts/setup.sh
log "building (release)"
cargo build --release --bins --quiet

work=$(mktemp -d /tmp/faultline-demo.XXXXXX)
ns_a="fl-demo-$$-a"
ns_b="fl-demo-$$-b"
faultd_pid=""
listener_pids=()
cleanup() {
    for pid in "${listener_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "$faultd_pid" ]; then
        kill -TERM "$faultd_pid" 2>/dev/null || true
        wait "$faultd_pid" 2>/dev/null || true
    fi
    lab_delete "$ns_a" "$ns_b"
    rm -rf "$work"
}
trap cleanup EXIT

faultctl() { ./target/release/faultctl --socket "$work/faultd.sock" "$@"; }
in_a() { ip netns exec "$ns_a" "$@"; }

log "lab: $ns_a (10.0.0.1, fd00::1) <-veth-> $ns_b (10.0.0.2, fd00::2)"
dev_a="fld$$a"
dev_b="fld$$b"
lab_create "$ns_a" "$ns_b" "$dev_a" "$dev_b"

log "starting faultd"
./target/release/faultd --socket "$work/faultd.sock" --state-dir "$work/state" 2>"$work/faultd.log" &
faultd_pid=$!
for _ in $(seq 50); do faultctl status >/dev/null 2>&1 && break; sleep 0.1; done
faultctl status

ping_loss() { in_a ping -q -c "$1" -i 0.002 -W 1 "$2" | awk -F', ' '/packet loss/ {print $3}' | cut -d' ' -f1; }

echo
echo "== 1. loss: 30 % of packets leaving $ns_a =="
echo "baseline ping loss: $(ping_loss 500 10.0.0.2)"
id=$(faultctl --json loss --netns "$ns_a" --dev "$dev_a" --percent 30 --for 30s --label demo-loss | jq -r .id)
echo "applied $id; ping loss now: $(ping_loss 2000 10.0.0.2)"
faultctl show "$id"
faultctl rm "$id" >/dev/null
echo "revoked; ping loss: $(ping_loss 500 10.0.0.2)"

echo
echo "== 2. partition: tcp to 10.0.0.2:5201 from $ns_a, both directions; port 5202 untouched =="
for port in 5201 5202; do
    ip netns exec "$ns_b" socat TCP-LISTEN:$port,fork,reuseaddr EXEC:cat &
    listener_pids+=($!)
done
sleep 0.3
connects() { in_a timeout 2 bash -c "exec 3<>/dev/tcp/10.0.0.2/$1" 2>/dev/null && echo connects || echo "does not connect"; }
id=$(faultctl --json partition --netns "$ns_a" --dev "$dev_a" --proto tcp --dst 10.0.0.2 --dport 5201 --for 10s | jq -r .id)
echo "applied $id"
echo "tcp 5201: $(connects 5201); tcp 5202: $(connects 5202); ping: $(ping_loss 50 10.0.0.2) loss"
faultctl ls
echo "waiting for the 10 s deadline; faultd removes the fault by itself..."
while faultctl --json ls | jq -e '.faults | length > 0' >/dev/null; do sleep 0.5; done
echo "expired; tcp 5201: $(connects 5201)"

echo
echo "== 3. delay: 100 ms on packets from $ns_a to 10.0.0.2 =="
rtt() { in_a ping -q -c 20 -i 0.01 10.0.0.2 | awk -F'/' '/^rtt/ {print $5 " ms"}'; }
if [ "$(faultctl --json status | jq .features.netem)" = "true" ]; then
    echo "baseline median-ish RTT: $(rtt)"
    id=$(faultctl --json delay --netns "$ns_a" --dev "$dev_a" --dst 10.0.0.2 --delay 100ms --for 10s | jq -r .id)
    echo "applied $id; RTT now: $(rtt)"
    faultctl rm "$id" >/dev/null
    echo "revoked; RTT: $(rtt)"
else
    echo "this kernel has no netem qdisc (sch_netem), so delay faults are refused:"
    faultctl delay --netns "$ns_a" --dev "$dev_a" --dst 10.0.0.2 --delay 100ms --for 10s || true
    echo "(the VM stage of ./scripts/test.sh proves delay on a kernel that has netem)"
fi

echo
echo "== 4. what is left on the device: =="
tc -n "$ns_a" qdisc show dev "$dev_a"
tc -n "$ns_a" filter show dev "$dev_a" egress
echo "(no clsact, no filter: faultd removed everything it installed)"
