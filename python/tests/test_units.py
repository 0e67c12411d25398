"""Parsing and logic, no faultd: durations, the wire mapping, errors, reports, the timer."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

import faultd_client as fc
from faultd_client.errors import ERRORS, error_from_wire
from faultd_client.recovery import RecoveryTimer, observe_timers, set_default_rto
from faultd_client.report import drill_summary, faultctl_args, iso

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("given, text", [
    (5.0, "5s"), (0.5, "500ms"), (1.5, "1500ms"), (120, "2m"), (90, "90s"), (3600, "1h"),
    (0.0000015, "2us"), (datetime.timedelta(minutes=1, seconds=30), "90s"), ("1m30s", "1m30s"),
])
def test_durations_take_faultds_shortest_exact_form(given: Any, text: str) -> None:
    assert fc.format_duration(given) == text


def test_durations_parse_and_refuse() -> None:
    assert fc.to_seconds("1m30s") == 90.0
    assert fc.to_seconds("1.5s") == 1.5
    assert fc.to_seconds("250us") == 0.00025
    for bad in ("", "30", "-1s", "1e3s", "1 s"):
        with pytest.raises(ValueError):
            fc.to_seconds(bad)
    for bad in (0, -1.0):
        with pytest.raises(ValueError):
            fc.format_duration(bad)
    with pytest.raises(TypeError):
        fc.format_duration(True)


def test_builders_produce_exactly_the_wire_json() -> None:
    target = fc.Target("veth0", netns="lab-a",
                       match=fc.Match(proto="tcp", dst=["10.0.0.2"], dport=[5432, "9000-9100"]),
                       flows=0.5)
    assert fc.loss_fault(target, 20, "1m30s").to_wire() == {
        "target": {"netns": "lab-a", "dev": "veth0", "flows": 0.5,
                   "match": {"proto": "tcp", "dst": ["10.0.0.2"], "dport": [5432, "9000-9100"]}},
        "loss": {"percent": 20}, "duration": "1m30s"}
    assert fc.partition_fault(fc.Target("eth0", match=fc.Match(dst=["10.0.0.2"])), 30,
                              label="cut A from B").to_wire() == {
        "target": {"dev": "eth0", "match": {"dst": ["10.0.0.2"]}}, "partition": {},
        "duration": "30s", "label": "cut A from B"}
    assert fc.burst_loss_fault(fc.Target("eth0"), fc.Burst(p=1, r=25), "2m").to_wire() == {
        "target": {"dev": "eth0"}, "loss": {"burst": {"p": 1, "r": 25}}, "duration": "2m"}
    assert fc.delay_fault(fc.Target("eth0"), 0.1, jitter=0.01, duration=30).to_wire() == {
        "target": {"dev": "eth0"}, "netem": {"delay": "100ms", "jitter": "10ms"},
        "duration": "30s"}


def test_unknown_fields_survive_a_round_trip() -> None:
    wire = {"target": {"dev": "eth0", "colour": "red", "match": {"dst": ["10.0.0.2"], "vlan": 7}},
            "partition": {"soft": True}, "duration": "30s", "priority": 3}
    fault = fc.Fault.from_wire(wire)
    assert fault.extra == {"priority": 3}
    assert fault.target.extra == {"colour": "red"}
    assert fault.to_wire() == wire
    view = fc.FaultView.from_wire({
        "id": "f00000001", "state": "active", "fault": wire, "applied_at_unix_ms": 1,
        "expires_at_unix_ms": 2, "remaining_ms": 1, "owner": "ci",
        "counters": {"egress": {"matched_packets": 1, "matched_bytes": 2, "dropped_packets": 3,
                                "dropped_bytes": 4, "marked": 5},
                     "ingress": {"matched_packets": 0, "matched_bytes": 0, "dropped_packets": 6,
                                 "dropped_bytes": 0}}})
    assert view.extra == {"owner": "ci"}
    assert view.counters.egress.extra == {"marked": 5}
    assert view.counters.dropped_packets == 9
    assert view.to_wire()["counters"]["egress"]["marked"] == 5


def test_a_view_missing_a_required_field_is_a_protocol_violation() -> None:
    with pytest.raises(fc.ProtocolViolationError, match="applied_at_unix_ms"):
        fc.FaultView.from_wire({"id": "f1", "state": "active",
                                "fault": {"target": {"dev": "e"}, "partition": {}}})
    with pytest.raises(fc.ProtocolViolationError):
        fc.Hello.from_wire(["not", "an", "object"])


def test_every_error_code_has_its_class() -> None:
    # docs/protocol.md §7, in its order.
    section = (REPO / "docs/protocol.md").read_text().split("## 7. Error codes")[1]
    section = section.split("\n## ")[0]
    codes = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert len(codes) == 15 and set(codes) == set(ERRORS)
    for code in codes:
        error = error_from_wire({"code": code, "message": "m", "field": "f"}, "apply")
        assert type(error) is ERRORS[code] and isinstance(error, fc.FaultdError)
        assert (error.code, error.message, error.field, error.op) == (code, "m", "f", "apply")
        assert error.to_wire() == {"code": code, "message": "m", "field": "f"}
    newer = error_from_wire({"code": "rate_limited", "message": "slow down"})
    assert type(newer) is fc.FaultdError and newer.code == "rate_limited"
    unsupported = error_from_wire({"code": "unsupported", "message":
                                   "this kernel lacks ingress_delay: no ifb"})
    assert isinstance(unsupported, fc.UnsupportedError)
    assert unsupported.capability == "ingress_delay"


def test_faultctl_args_mirror_the_spec() -> None:
    fault = fc.Fault.from_wire({
        "target": {"netns": "lab-a", "dev": "veth0", "direction": "egress", "flows": 0.25,
                   "match": {"proto": "udp", "src": ["10.0.0.0/24"], "dst": ["10.0.0.2"],
                             "sport": [53], "dport": ["9000-9100"]}},
        "loss": {"burst": {"p": 1, "r": 25, "loss_good": 0.5}}, "duration": "30s",
        "label": "drill"})
    assert faultctl_args(fault) == [
        "--json", "loss", "--burst", "1,25,100,0.5", "--netns", "lab-a", "--dev", "veth0",
        "--direction", "egress", "--proto", "udp", "--src", "10.0.0.0/24", "--dst", "10.0.0.2",
        "--sport", "53", "--dport", "9000-9100", "--flows", "0.25", "--for", "30s",
        "--label", "drill"]
    netem = fc.Fault.from_wire({"target": {"dev": "eth0"}, "duration": "1m", "netem": {
        "rate": {"rate": "10mbit", "packet_overhead": 4}, "duplicate": {"percent": 1},
        "reorder": {"percent": 5, "correlation": 10, "gap": 3}, "limit": 100}})
    assert faultctl_args(netem) == [
        "--json", "netem", "--duplicate", "1", "--reorder", "5,10", "--gap", "3",
        "--rate", "10mbit,4", "--limit", "100", "--dev", "eth0", "--for", "1m"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_recovery_timer_measures_as_a_drill_judges() -> None:
    clock = Clock()
    seen: List[RecoveryTimer] = []
    with observe_timers(seen.append):
        timer = RecoveryTimer(clock=clock)
        with timer:
            clock.now += 1.25
            timer.mark_detected()
            clock.now += 3
            timer.mark_detected()  # the first mark stands
            timer.mark_recovery_started()
            clock.now += 2.5
            timer.mark_recovery_completed()
    assert seen == [timer]
    m = timer.metrics
    assert (m.detection_s, m.recovery_s, m.rto_s, m.meets_rto) == (1.25, 2.5, 30.0, True)
    assert m.reason == "recovered within the RTO"

    slow = RecoveryTimer(2.0, clock=clock)
    with slow:
        slow.mark_recovery_started()
        clock.now += 2.001
        slow.mark_recovery_completed()
    assert not slow.metrics.meets_rto and slow.metrics.verdict == "fail"
    assert slow.metrics.reason == "recovered in 2.001s, beyond the RTO of 2s"

    never = RecoveryTimer(clock=clock)
    assert not never.metrics.meets_rto and never.metrics.recovery_s is None
    with pytest.raises(RuntimeError, match="mark_recovery_started"):
        never.mark_recovery_completed()

    previous = set_default_rto(5.0)
    try:
        assert RecoveryTimer().rto_s == 5.0
    finally:
        set_default_rto(previous)


def drills_report_example() -> Dict[str, Any]:
    """The scenario report docs/drills.md shows, as scripts/drill.sh writes it."""
    text = (REPO / "docs/drills.md").read_text()
    block = re.search(r"```json\n(\{\n  \"scenario\".*?)```", text, flags=re.S)
    assert block, "docs/drills.md has no report example"
    return dict(json.loads(block.group(1)))


def shape(value: Any) -> Any:
    """Keys and JSON types; null stands for any scalar (drill.sh writes null for no value)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else type(value).__name__


def same_shape(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(same_shape(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return not ours or not theirs or same_shape(ours[0], theirs[0])
    return ours == theirs or "NoneType" in (ours, theirs)


def test_a_timers_report_has_the_drill_reports_shape() -> None:
    clock = Clock()
    timer = RecoveryTimer(clock=clock)
    with timer:
        clock.now += 1
        timer.mark_detected()
        timer.mark_recovery_started()
        clock.now += 0.006
        timer.mark_recovery_completed()
    fault = fc.FaultView.from_wire({
        "id": "f5a465324", "state": "revoked", "applied_at_unix_ms": 1, "expires_at_unix_ms": 2,
        "remaining_ms": 0, "counters": {"egress": {}, "ingress": {}},
        "fault": {"target": {"netns": "a", "dev": "d", "match": {"dst": ["10.0.0.2/32"]}},
                  "partition": {}, "duration": "2s"}})
    report = timer.report("partition-3s", kind="partition", target="--dev d", faults=[fault],
                          duration_s=2)
    assert same_shape(shape(report), shape(drills_report_example())), report
    assert report["metrics"]["recovery_s"] == 0.006
    assert report["execution"]["faultctl_args"] == [
        ["--json", "partition", "--netns", "a", "--dev", "d", "--dst", "10.0.0.2/32",
         "--for", "2s"]]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
                        report["execution"]["started_at"])
    summary = drill_summary([report], started_at=timer.started_at,
                            ended_at=timer.started_at, mode="pytest", rto_s=30, target="",
                            files=["/x/partition-3s.json"])
    assert summary["counts"] == {"pass": 1, "fail": 0, "unsupported": 0, "aborted": 0}
    assert summary["verdict"] == "pass"
    assert summary["scenarios"][0]["report"] == "partition-3s.json"
    assert iso(datetime.datetime(2026, 11, 24, 5, 14, 57, 295999,
                                 tzinfo=datetime.timezone.utc)) == "2026-11-24T05:14:57.295Z"


def test_injector_checks_its_arguments_before_calling_faultd() -> None:
    injector = fc.NetworkFaultInjector("eth0", peer=["10.0.0.2"],
                                       endpoint=fc.Endpoint("/nonexistent/faultd.sock"))
    for bad in (
        lambda: injector.inject_packet_loss(loss_probability=20),
        lambda: injector.inject_packet_loss(loss_probability=0),
        lambda: injector.inject_disconnect(duration_s=0),
        lambda: injector.inject_latency(latency_ms=-1),
    ):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(fc.UnreachableError, match="/nonexistent/faultd.sock"):
        with injector.inject_disconnect(duration_s=1):
            pass


def test_the_socket_is_found_as_faultctl_finds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAULTLINE_SOCKET", raising=False)
    assert fc.default_socket() == "/run/faultline/faultd.sock" == fc.DEFAULT_SOCKET
    monkeypatch.setenv("FAULTLINE_SOCKET", "/tmp/elsewhere.sock")
    assert fc.Endpoint().socket == "/tmp/elsewhere.sock"
    assert fc.Endpoint("/given.sock").socket == "/given.sock"
