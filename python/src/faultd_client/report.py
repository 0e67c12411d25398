"""Drill reports, in the JSON shape scripts/drill.sh writes (docs/drills.md): one per scenario
and a summary.json, so that test runs and drills feed one scorecard.

A report written here has no probe of its own: `probes_total` and `probes_failed` are 0, and
`probe` and `probe_interval_s` are null. `faultctl_args` are the faultctl command lines that
apply the same faults (what a drill would have run).
"""

from __future__ import annotations

import datetime
import json
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .spec import Fault, Target

if TYPE_CHECKING:
    from .recovery import RecoveryMetrics

VERDICTS = ("pass", "fail", "unsupported", "aborted")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def iso(moment: datetime.datetime) -> str:
    """UTC, ISO 8601, milliseconds, as drill.sh writes times: 2026-11-24T05:14:57.295Z."""
    utc = moment.astimezone(datetime.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _seconds(value: Optional[float]) -> Optional[float]:
    # drill.sh prints milliseconds: "1.005".
    return None if value is None else round(value, 3)


def drill_report(*, scenario: str, kind: str, started_at: datetime.datetime,
                 ended_at: datetime.datetime, duration_s: float, target: str,
                 faults: Sequence[Any], metrics: RecoveryMetrics) -> Dict[str, Any]:
    """One scenario's report. `faults` are FaultViews or injector handles (anything with
    `id` and `fault`)."""
    return {
        "scenario": scenario,
        "kind": kind,
        "execution": {
            "started_at": iso(started_at),
            "ended_at": iso(ended_at),
            "duration_s": _seconds(duration_s),
            "target": target,
            "fault_ids": [f.id for f in faults],
            "faultctl_args": [faultctl_args(f.fault) for f in faults],
        },
        "metrics": {
            "detection_s": _seconds(metrics.detection_s),
            "recovery_s": _seconds(metrics.recovery_s),
            "probes_total": 0,
            "probes_failed": 0,
            "probe": None,
            "probe_interval_s": None,
        },
        "validation": {"rto_s": metrics.rto_s, "verdict": metrics.verdict,
                       "reason": metrics.reason},
    }


def drill_summary(reports: Sequence[Dict[str, Any]], *, started_at: datetime.datetime,
                  ended_at: datetime.datetime, mode: str, rto_s: float, target: str,
                  files: Sequence[str]) -> Dict[str, Any]:
    """summary.json over `reports`, each written to the file of the same index in `files`."""
    counts = {v: 0 for v in VERDICTS}
    for r in reports:
        counts[r["validation"]["verdict"]] += 1
    verdicts = [r["validation"]["verdict"] for r in reports]
    if "fail" in verdicts:
        verdict = "fail"
    elif all(v == "pass" for v in verdicts):
        verdict = "pass"
    else:
        verdict = "incomplete"
    return {
        "drill": {"started_at": iso(started_at), "ended_at": iso(ended_at), "mode": mode,
                  "seed": None, "rto_s": rto_s, "target": target, "probe": None},
        "scenarios": [{"scenario": r["scenario"], "verdict": r["validation"]["verdict"],
                       "detection_s": r["metrics"]["detection_s"],
                       "recovery_s": r["metrics"]["recovery_s"], "report": os.path.basename(f)}
                      for r, f in zip(reports, files)],
        "counts": counts,
        "verdict": verdict,
    }


def write_json(path: str, value: Any) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        json.dump(value, out, indent=2)
        out.write("\n")


def target_flags(target: Target) -> List[str]:
    """faultctl's target flags for `target`."""
    flags: List[str] = []
    for name, value in (("--netns", target.netns), ("--dev", target.dev),
                        ("--direction", target.direction)):
        if value is not None:
            flags += [name, value]
    match = target.match
    if match is not None:
        if match.proto is not None:
            flags += ["--proto", match.proto]
        for name, values in (("--src", match.src), ("--dst", match.dst),
                             ("--sport", match.sport), ("--dport", match.dport)):
            for value in values:
                flags += [name, str(value)]
    if target.flows is not None:
        flags += ["--flows", _num(target.flows)]
    return flags


def faultctl_args(fault: Fault) -> List[str]:
    """The faultctl command line (after `faultctl`) that applies `fault`."""
    args = ["--json"]
    if fault.partition is not None:
        args.append("partition")
    elif fault.loss is not None:
        args.append("loss")
        if fault.loss.percent is not None:
            args += ["--percent", _num(fault.loss.percent)]
        if fault.loss.burst is not None:
            args += ["--burst", _burst(fault.loss.burst)]
    elif fault.netem is not None:
        args += _netem_args(fault)
    args += target_flags(fault.target)
    if fault.duration is not None:
        args += ["--for", fault.duration]
    if fault.label is not None:
        args += ["--label", fault.label]
    return args


def _netem_args(fault: Fault) -> List[str]:
    n = fault.netem
    assert n is not None
    args = ["delay", "--delay", n.delay] if n.delay else ["netem"]
    if n.jitter:
        args += ["--jitter", n.jitter]
    if n.delay_correlation is not None:
        args += ["--correlation", _num(n.delay_correlation)]
    if n.distribution:
        args += ["--distribution", n.distribution]
    if n.loss is not None:
        if n.loss.percent is not None:
            args += ["--loss", _chance(n.loss.percent, n.loss.correlation)]
        if n.loss.burst is not None:
            args += ["--loss-burst", _burst(n.loss.burst)]
        if n.loss.state4 is not None:
            s = n.loss.state4
            given = [v for v in (s.p13, s.p31, s.p32, s.p23, s.p14) if v is not None]
            args += ["--loss-state", ",".join(_num(v) for v in given)]
    for flag, chance in (("--duplicate", n.duplicate), ("--corrupt", n.corrupt)):
        if chance is not None:
            args += [flag, _chance(chance.percent, chance.correlation)]
    if n.reorder is not None:
        args += ["--reorder", _chance(n.reorder.percent, n.reorder.correlation)]
        if n.reorder.gap is not None:
            args += ["--gap", str(n.reorder.gap)]
    if n.rate is not None:
        parts = [n.rate.rate] + [str(v) for v in (n.rate.packet_overhead, n.rate.cell_size,
                                                   n.rate.cell_overhead) if v is not None]
        args += ["--rate", ",".join(parts)]
    if n.limit is not None:
        args += ["--limit", str(n.limit)]
    return args


def _burst(b: Any) -> str:
    values = [b.p, b.r]
    if b.loss_bad is not None or b.loss_good is not None:
        values.append(100 if b.loss_bad is None else b.loss_bad)
    if b.loss_good is not None:
        values.append(b.loss_good)
    return ",".join(_num(v) for v in values)


def _chance(percent: float, correlation: Optional[float]) -> str:
    return _num(percent) if correlation is None else f"{_num(percent)},{_num(correlation)}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
