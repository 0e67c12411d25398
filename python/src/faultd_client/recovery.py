"""Detection and recovery times against a recovery time objective (RTO), as drills judge them.

    timer = RecoveryTimer()          # RTO 30 s (the pytest plugin's --faultd-rto changes it)
    with timer:                      # the clock starts: the fault is being injected
        inject_failure(); timer.mark_detected()
        timer.mark_recovery_started(); perform_recovery(); timer.mark_recovery_completed()
    timer.metrics.detection_s, timer.metrics.recovery_s, timer.metrics.meets_rto

detection_s is from the start (entering the block) to `mark_detected`; recovery_s from
`mark_recovery_started` to `mark_recovery_completed`; meets_rto is recovery_s <= rto_s, as
scripts/drill.sh judges a scenario. A mark made twice keeps its first time. `report()` is the
JSON report scripts/drill.sh writes per scenario (docs/drills.md), so both feed one scorecard.
"""

from __future__ import annotations

import datetime
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from .report import drill_report, utc_now

DEFAULT_RTO_S = 30.0

_defaults_lock = threading.Lock()
_default_rto_s = DEFAULT_RTO_S
_observers: List[Callable[[RecoveryTimer], None]] = []


def set_default_rto(rto_s: float) -> float:
    """The RTO of timers made without one from now on; returns the one it replaces."""
    global _default_rto_s
    with _defaults_lock:
        previous, _default_rto_s = _default_rto_s, rto_s
    return previous


@contextmanager
def observe_timers(callback: Callable[[RecoveryTimer], None]) -> Iterator[None]:
    """Calls `callback` with every timer whose block ends while this one runs (the pytest
    plugin records the timers a test made, whoever made them)."""
    with _defaults_lock:
        _observers.append(callback)
    try:
        yield
    finally:
        with _defaults_lock:
            _observers.remove(callback)


@dataclass(frozen=True)
class RecoveryMetrics:
    detection_s: Optional[float]
    recovery_s: Optional[float]
    rto_s: float

    @property
    def meets_rto(self) -> bool:
        return self.recovery_s is not None and self.recovery_s <= self.rto_s

    @property
    def verdict(self) -> str:
        """`pass` or `fail`, as a drill's verdict."""
        return "pass" if self.meets_rto else "fail"

    @property
    def reason(self) -> str:
        """Why, in the words scripts/drill.sh uses."""
        if self.recovery_s is None:
            return "the steady state did not come back within the RTO"
        if not self.meets_rto:
            return f"recovered in {self.recovery_s:.3f}s, beyond the RTO of {self.rto_s:g}s"
        if self.detection_s is None:
            return "recovered within the RTO (no probe failed: the fault was not detected)"
        return "recovered within the RTO"


class RecoveryTimer:
    def __init__(self, rto_s: Optional[float] = None, *, scenario: Optional[str] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rto_s = _default_rto_s if rto_s is None else rto_s
        self.scenario = scenario
        self._clock = clock
        self.started_at: datetime.datetime = utc_now()
        self.ended_at: Optional[datetime.datetime] = None
        self._t0 = clock()
        self._detected: Optional[float] = None
        self._recovery_started: Optional[float] = None
        self._recovered: Optional[float] = None

    def __enter__(self) -> RecoveryTimer:
        # The clock starts here: a timer made ahead of time measures from its block.
        self.started_at = utc_now()
        self._t0 = self._clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended_at = utc_now()
        with _defaults_lock:
            observers = list(_observers)
        for observe in observers:
            observe(self)

    def mark_detected(self) -> None:
        """The failure was noticed (the first failing probe, an alert)."""
        if self._detected is None:
            self._detected = self._clock()

    def mark_recovery_started(self) -> None:
        """The heal began (the fault was removed, a failover triggered)."""
        if self._recovery_started is None:
            self._recovery_started = self._clock()

    def mark_recovery_completed(self) -> None:
        """The steady state is back (the first passing probe)."""
        if self._recovery_started is None:
            raise RuntimeError("mark_recovery_started() first: recovery is timed from it")
        if self._recovered is None:
            self._recovered = self._clock()

    @property
    def metrics(self) -> RecoveryMetrics:
        detection = None if self._detected is None else self._detected - self._t0
        recovery = None
        if self._recovered is not None and self._recovery_started is not None:
            recovery = self._recovered - self._recovery_started
        return RecoveryMetrics(detection, recovery, self.rto_s)

    @property
    def used(self) -> bool:
        """Whether anything was marked."""
        return self._detected is not None or self._recovery_started is not None

    def report(self, scenario: Optional[str] = None, *, kind: str = "", target: str = "",
               faults: Sequence[Any] = (), duration_s: float = 0.0) -> Dict[str, Any]:
        """This timer as a drill's scenario report (docs/drills.md). `faults` are the views
        (or injector handles) of what was injected, for `execution`."""
        return drill_report(scenario=scenario or self.scenario or "recovery", kind=kind,
                            started_at=self.started_at, ended_at=self.ended_at or utc_now(),
                            duration_s=duration_s, target=target, faults=faults,
                            metrics=self.metrics)
