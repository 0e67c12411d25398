#!/usr/bin/env bash
# Recovery drills from the runbooks: inject a fault with faultctl, probe the steady state,
# measure detection (first failing probe after the inject) and recovery (first passing probe
# after the heal), judge recovery against the RTO, and write one JSON report per scenario plus
# summary.json (docs/drills.md). Without --target it runs against a lab it makes itself: two
# network namespaces, a TCP service in one, its own faultd; all of it removed on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: scripts/drill.sh [options]
  --scenarios A,B,...   scenarios to run (default: all; --list shows them)
  --mode MODE           sequential (default) or random
  --seed N              order of --mode random (default: from the clock; reported)
  --duration D          fault duration for every scenario, e.g. 2s (default: each scenario's)
  --rto D               recovery time objective (default 30s)
  --target 'FLAGS'      faultctl target flags, e.g. '--dev eth0 --dst 10.1.2.3 --proto tcp'
                        (default: the built-in lab)
  --probe-tcp HOST:PORT steady-state probe: a TCP connect
  --probe-echo HOST:PORT steady-state probe: 1 KiB sent to an echo service comes back whole
                        (the built-in lab's default)
  --probe-http URL      steady-state probe: an HTTP GET that must succeed (curl -f)
  --probe-cmd 'CMD'     steady-state probe: a shell command that exits 0 when healthy
  --probe-interval S    seconds between probes (default 0.2)
  --probe-timeout S     a probe taking longer has failed (default 1)
  --socket PATH         faultd's socket (default: $FAULTLINE_SOCKET or /run/faultline/faultd.sock)
  --output-dir DIR      where reports go (default: drill-reports/<UTC time>)
  --list                list the scenarios and exit
exit codes: 0 every scenario passed; 1 a scenario failed its RTO or never recovered;
            2 usage; 3 none failed but some could not run (unsupported, steady state not
            established, refused); 4 setup failed (faultd unreachable, lab)
EOF
}

# name|kind|duration|faultctl action flags (kind: partition, latency, loss, combined, and the
# connection and payload faults: reset, stall, reset_after, corrupt)
SCENARIOS=(
    "partition-3s|partition|3s|partition"
    "partition-10s|partition|10s|partition"
    "partition-30s|partition|30s|partition"
    "latency-100ms|latency|30s|delay --delay 100ms"
    "latency-500ms|latency|30s|delay --delay 500ms"
    "latency-2s|latency|30s|delay --delay 2s"
    "latency-5s|latency|30s|delay --delay 5s"
    "loss-5|loss|30s|loss --percent 5"
    "loss-20|loss|30s|loss --percent 20"
    "loss-50|loss|30s|loss --percent 50"
    "combined|combined|30s|delay --delay 100ms;loss --percent 5"
    "exchange-reset|reset|10s|reset"
    "api-timeout|stall|10s|stall --bytes 512"
    "tls-handshake-failure|reset_after|10s|reset-after --bytes 512"
    "corrupt-feed|corrupt|10s|corrupt --percent 100"
)

scenarios="" mode=sequential seed="" duration="" rto=30s target="" probe_kind="" probe_arg=""
probe_interval=0.2 probe_timeout=1 output_dir="" socket="${FAULTLINE_SOCKET:-/run/faultline/faultd.sock}"
usage_error() {
    echo "drill.sh: $*" >&2
    usage >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || case $1 in --list | -h | --help) ;; *) usage_error "$1 needs a value" ;; esac
    case $1 in
    --scenarios) scenarios=$2 ;;
    --mode) mode=$2 ;;
    --seed) seed=$2 ;;
    --duration) duration=$2 ;;
    --rto) rto=$2 ;;
    --target) target=$2 ;;
    --probe-tcp | --probe-echo | --probe-http | --probe-cmd) probe_kind=${1#--probe-} probe_arg=$2 ;;
    --probe-interval) probe_interval=$2 ;;
    --probe-timeout) probe_timeout=$2 ;;
    --socket) socket=$2 ;;
    --output-dir) output_dir=$2 ;;
    --list)
        for s in "${SCENARIOS[@]}"; do IFS='|' read -r name _ dur flags <<<"$s" && printf '%-15s %-5s %s\n' "$name" "$dur" "$flags"; done
        exit 0
        ;;
    -h | --help) usage && exit 0 ;;
    *) usage_error "unknown option $1" ;;
    esac
    shift 2
done

# "500ms", "2s", "1m" or plain seconds, as seconds (may be fractional).
seconds() {
    awk -v d="$1" 'BEGIN {
        if (d ~ /^[0-9.]+ms$/) { sub(/ms$/, "", d); print d / 1000; exit }
        if (d ~ /^[0-9.]+s$/) { sub(/s$/, "", d); print d + 0; exit }
        if (d ~ /^[0-9.]+m$/) { sub(/m$/, "", d); print d * 60; exit }
        if (d ~ /^[0-9.]+$/) { print d + 0; exit }
        exit 1 }'
}
rto_s=$(seconds "$rto") || usage_error "--rto $rto is not a duration like 30s"
[ -z "$duration" ] || seconds "$duration" >/dev/null || usage_error "--duration $duration is not a duration like 2s"
case $mode in sequential | random) ;; *) usage_error "--mode is sequential or random" ;; esac
[ -n "$seed" ] || seed=$(date +%s)
[[ $seed =~ ^[0-9]+$ ]] || usage_error "--seed must be a number"
[ -n "$probe_kind" ] || [ -z "$target" ] || usage_error "--target needs a probe (--probe-tcp, --probe-echo, --probe-http or --probe-cmd)"

selected=()
if [ -z "$scenarios" ]; then
    selected=("${SCENARIOS[@]}")
else
    IFS=',' read -ra wanted <<<"$scenarios"
    for w in "${wanted[@]}"; do
        found=""
        for s in "${SCENARIOS[@]}"; do [ "${s%%|*}" = "$w" ] && found=$s; done
        [ -n "$found" ] || usage_error "unknown scenario $w (see --list)"
        selected+=("$found")
    done
fi
if [ "$mode" = random ]; then
    # Fisher-Yates on bash's RANDOM, seeded: the same seed gives the same order.
    RANDOM=$seed
    for ((i = ${#selected[@]} - 1; i > 0; i--)); do
        j=$((RANDOM % (i + 1)))
        swap=${selected[i]} selected[i]=${selected[j]} selected[j]=$swap
    done
fi

command -v jq >/dev/null || die "jq is needed (scripts/setup.sh installs it)"
[ -n "$output_dir" ] || output_dir="drill-reports/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$output_dir"

# --- the lab, when no target is given ---------------------------------------------------
work="" faultd_pid="" service_pid="" ns_a="" ns_b=""
cleanup() {
    if [ -n "$faultd_pid" ]; then
        kill -TERM "$faultd_pid" 2>/dev/null || true
        wait "$faultd_pid" 2>/dev/null || true
    fi
    if [ -n "$service_pid" ]; then
        # Its connection handlers too: one a stall left hanging would outlive the lab.
        kill_tree "$service_pid"
        wait "$service_pid" 2>/dev/null || true
    fi
    [ -z "$ns_a" ] || lab_delete "$ns_a" "$ns_b"
    [ -z "$work" ] || rm -rf "$work"
}
# A process and its descendants, children first found through /proc.
kill_tree() {
    local child
    for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

probe_prefix=()
if [ -z "$target" ]; then
    [ "$(id -u)" -eq 0 ] || die "the built-in lab needs root"
    work=$(mktemp -d /tmp/faultline-drill.XXXXXX)
    ns_a="fl-drill-$$-a" ns_b="fl-drill-$$-b"
    lab_create "$ns_a" "$ns_b" "fldr$$a" "fldr$$b" || exit 4
    ip netns exec "$ns_b" socat TCP-LISTEN:7000,bind=10.0.0.2,fork,reuseaddr EXEC:cat &
    service_pid=$!
    socket="$work/faultd.sock"
    "$(faultline_bin faultd)" --socket "$socket" --state-dir "$work/state" \
        --pin-dir "/sys/fs/bpf/faultline-drill-$$" 2>"$work/faultd.log" &
    faultd_pid=$!
    target="--netns $ns_a --dev fldr$$a --dst 10.0.0.2"
    if [ -z "$probe_kind" ]; then probe_kind=echo probe_arg=10.0.0.2:7000; fi
    probe_prefix=(ip netns exec "$ns_a")
fi
faultctl_bin=$(faultline_bin faultctl)
faultctl() { "$faultctl_bin" --socket "$socket" "$@"; }
for _ in $(seq 100); do faultctl status >/dev/null 2>&1 && break; sleep 0.1; done
faultctl status >/dev/null 2>&1 || { [ -z "$work" ] || cat "$work/faultd.log" >&2; die "faultd is not reachable at $socket"; }
read -ra target_flags <<<"$target"

# The echo probe's request: 1 KiB with its newline, the size of a small API call, so a stall
# or reset after a few hundred bytes cuts it, and a corrupted echo differs.
echo_request=$(head -c 1023 /dev/zero | tr '\0' x)
probe() {
    case $probe_kind in
    tcp) "${probe_prefix[@]}" timeout "$probe_timeout" bash -c 'exec 3<>"/dev/tcp/${1%:*}/${1##*:}"' _ "$probe_arg" ;;
    echo) "${probe_prefix[@]}" timeout "$probe_timeout" bash -c \
        'exec 3<>"/dev/tcp/${1%:*}/${1##*:}" && printf "%s\n" "$2" >&3 && IFS= read -r back <&3 && [ "$back" = "$2" ]' \
        _ "$probe_arg" "$echo_request" ;;
    http) "${probe_prefix[@]}" curl -fsS -o /dev/null -m "$probe_timeout" "$probe_arg" ;;
    cmd) "${probe_prefix[@]}" timeout "$probe_timeout" bash -c "$probe_arg" ;;
    esac >/dev/null 2>&1
}
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
later_than() { awk -v t="$1" -v end="$2" 'BEGIN { exit !(t >= end) }'; }
plus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a + b }'; }
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%S.%3NZ; }

# One scenario: prints its verdict; writes <output-dir>/<name>.json.
run_scenario() {
    local name=$1 kind=$2 dur=$3 flags=$4
    local dur_s started ended verdict="" reason="" detection=null recovery=null
    local probes=0 failures=0 t0 heal_at="" ids=() args_json="[]"
    dur_s=$(seconds "$dur")
    started=$(now)

    # The steady state must hold before anything is injected: 3 passing probes in a row.
    local in_a_row=0
    for _ in $(seq 20); do
        if probe; then in_a_row=$((in_a_row + 1)); else in_a_row=0; fi
        [ "$in_a_row" -lt 3 ] || break
        sleep "$probe_interval"
    done
    if [ "$in_a_row" -lt 3 ]; then
        verdict=aborted reason="steady state not established before the inject"
    fi

    if [ -z "$verdict" ]; then
        local action out code
        IFS=';' read -ra actions <<<"$flags"
        for action in "${actions[@]}"; do
            read -ra action_args <<<"$action"
            local cmd=(--json "${action_args[@]}" "${target_flags[@]}" --for "$dur" --label "drill:$name")
            args_json=$(jq -c --argjson cmd "$(printf '%s\n' "${cmd[@]}" | jq -R . | jq -sc .)" '. + [$cmd]' <<<"$args_json")
            set +e
            # With --json, a refusal is a JSON object on stdout too; stderr repeats it for people.
            out=$(faultctl "${cmd[@]}" 2>/dev/null)
            code=$?
            set -e
            if [ "$code" -ne 0 ]; then
                local error
                error=$(jq -r '.error.code // empty' <<<"$out" 2>/dev/null || true)
                if [ "$error" = unsupported ]; then
                    verdict=unsupported reason=$(jq -r '.error.message' <<<"$out")
                else
                    verdict=aborted reason="faultctl ${action_args[0]} exited $code: $(jq -r '.error.message // empty' <<<"$out" 2>/dev/null || true)"
                fi
                break
            fi
            ids+=("$(jq -r .id <<<"$out")")
        done
    fi

    if [ -z "$verdict" ]; then
        t0=$(now)
        local heal_due
        heal_due=$(plus "$t0" "$dur_s")
        while ! later_than "$(now)" "$heal_due"; do
            probes=$((probes + 1))
            if ! probe; then
                failures=$((failures + 1))
                [ "$detection" != null ] || detection=$(elapsed "$t0" "$(now)")
            fi
            sleep "$probe_interval"
        done
    fi
    # Heal: every fault goes now, even if its deadline would take it a moment later.
    for id in "${ids[@]}"; do faultctl rm "$id" >/dev/null 2>&1 || true; done

    if [ -z "$verdict" ]; then
        heal_at=$(now)
        local give_up
        give_up=$(plus "$heal_at" "$(awk -v r="$rto_s" 'BEGIN { print r + 5 }')")
        while ! later_than "$(now)" "$give_up"; do
            probes=$((probes + 1))
            if probe; then
                recovery=$(elapsed "$heal_at" "$(now)")
                break
            fi
            failures=$((failures + 1))
            sleep "$probe_interval"
        done
        if [ "$recovery" = null ]; then
            verdict=fail reason="the steady state did not come back within the RTO"
        elif awk -v r="$recovery" -v o="$rto_s" 'BEGIN { exit !(r <= o) }'; then
            verdict=pass
            if [ "$detection" = null ]; then
                reason="recovered within the RTO (no probe failed: the fault was not detected)"
            else
                reason="recovered within the RTO"
            fi
        else
            verdict=fail reason="recovered in ${recovery}s, beyond the RTO of ${rto_s}s"
        fi
    fi
    ended=$(now)

    jq -n --arg scenario "$name" --arg kind "$kind" \
        --arg started "$(iso "$started")" --arg ended "$(iso "$ended")" \
        --argjson duration "$dur_s" --arg target "$target" --argjson commands "$args_json" \
        --argjson ids "$(printf '%s\n' "${ids[@]}" | jq -R . | jq -sc 'map(select(. != ""))')" \
        --argjson detection "$detection" --argjson recovery "$recovery" \
        --argjson probes "$probes" --argjson failures "$failures" \
        --arg probe "$probe_kind $probe_arg" --argjson interval "$probe_interval" \
        --argjson rto "$rto_s" --arg verdict "$verdict" --arg reason "$reason" \
        '{scenario: $scenario, kind: $kind,
          execution: {started_at: $started, ended_at: $ended, duration_s: $duration,
                      target: $target, fault_ids: $ids, faultctl_args: $commands},
          metrics: {detection_s: $detection, recovery_s: $recovery, probes_total: $probes,
                    probes_failed: $failures, probe: $probe, probe_interval_s: $interval},
          validation: {rto_s: $rto, verdict: $verdict, reason: $reason}}' >"$output_dir/$name.json"
    printf '%-15s %-10s %-10s %-6s %s\n' "$name" \
        "$([ "$detection" = null ] && echo - || echo "${detection}s")" \
        "$([ "$recovery" = null ] && echo - || echo "${recovery}s")" "${rto_s}s" "$verdict" >&2
}

drill_started=$(now)
log "drill: ${#selected[@]} scenario(s), $mode (seed $seed), RTO ${rto_s}s, probe $probe_kind $probe_arg; reports in $output_dir"
printf '%-15s %-10s %-10s %-6s %s\n' SCENARIO DETECTED RECOVERED RTO VERDICT >&2
for s in "${selected[@]}"; do
    IFS='|' read -r name kind dur flags <<<"$s"
    run_scenario "$name" "$kind" "${duration:-$dur}" "$flags"
done

jq -s --arg started "$(iso "$drill_started")" --arg ended "$(iso "$(now)")" --arg mode "$mode" \
    --argjson seed "$seed" --argjson rto "$rto_s" --arg target "$target" \
    --arg probe "$probe_kind $probe_arg" \
    '{drill: {started_at: $started, ended_at: $ended, mode: $mode, seed: $seed, rto_s: $rto,
              target: $target, probe: $probe},
      scenarios: map({scenario, verdict: .validation.verdict, detection_s: .metrics.detection_s,
                      recovery_s: .metrics.recovery_s, report: (.scenario + ".json")}),
      counts: (reduce .[] as $r ({pass: 0, fail: 0, unsupported: 0, aborted: 0};
                                 .[$r.validation.verdict] += 1)),
      verdict: (if any(.[]; .validation.verdict == "fail") then "fail"
                elif all(.[]; .validation.verdict == "pass") then "pass"
                else "incomplete" end)}' \
    $(for s in "${selected[@]}"; do echo "$output_dir/${s%%|*}.json"; done) >"$output_dir/summary.json"

overall=$(jq -r .verdict "$output_dir/summary.json")
log "drill: $overall; $(jq -c .counts "$output_dir/summary.json"); summary in $output_dir/summary.json"
case $overall in
pass) exit 0 ;;
fail) exit 1 ;;
*) exit 3 ;;
esac
