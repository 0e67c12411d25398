"""What faultd answers (docs/protocol.md §3): fault views, hello, plans, metrics, events.

Each keeps the fields this client does not know in `extra` (see `wire.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .spec import Fault
from .wire import Wire, dict_of, extra_field, list_of, wire_field


@dataclass
class DirectionCounters(Wire):
    """Wire packets (a GSO packet counts as its segments) and bytes at one hook."""

    matched_packets: int = 0
    matched_bytes: int = 0
    dropped_packets: int = 0
    dropped_bytes: int = 0
    extra: Dict[str, Any] = extra_field()


@dataclass
class Counters(Wire):
    egress: DirectionCounters = wire_field(of=DirectionCounters.from_wire,
                                           factory=DirectionCounters)
    ingress: DirectionCounters = wire_field(of=DirectionCounters.from_wire,
                                            factory=DirectionCounters)
    extra: Dict[str, Any] = extra_field()

    @property
    def dropped_packets(self) -> int:
        """Both directions."""
        return self.egress.dropped_packets + self.ingress.dropped_packets

    @property
    def matched_packets(self) -> int:
        """Both directions."""
        return self.egress.matched_packets + self.ingress.matched_packets


@dataclass
class FaultView(Wire):
    """A fault as faultd reports it; `fault` is the spec in faultd's normalized form."""

    id: str
    state: str
    fault: Fault = wire_field(of=Fault.from_wire)
    applied_at_unix_ms: int
    expires_at_unix_ms: int
    remaining_ms: int
    counters: Counters = wire_field(of=Counters.from_wire)
    key: Optional[str] = None
    lease: Optional[str] = None
    extra: Dict[str, Any] = extra_field()

    @property
    def active(self) -> bool:
        return self.state == "active"


@dataclass
class Capability(Wire):
    available: bool
    missing: Optional[str] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class Limits(Wire):
    """faultd's limits, combined with the policy's; null where nothing limits."""

    default_duration: Optional[str] = wire_field(None, nullable=True)
    max_duration: Optional[str] = wire_field(None, nullable=True)
    max_faults: Optional[int] = wire_field(None, nullable=True)
    max_line_bytes: Optional[int] = wire_field(None, nullable=True)
    extra: Dict[str, Any] = extra_field()


@dataclass
class Hello(Wire):
    agent: str
    version: str
    protocol: int
    kernel: str = ""
    active_faults: int = 0
    capabilities: Dict[str, Capability] = wire_field(of=dict_of(Capability.from_wire),
                                                     factory=dict)
    features: Dict[str, bool] = wire_field(factory=dict)
    limits: Limits = wire_field(of=Limits.from_wire, factory=Limits)
    #: The policy in force, as policy.md's Status section describes it (kept as JSON).
    policy: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = extra_field()

    def missing(self, capability: str) -> Optional[str]:
        """Why this kernel lacks `capability`, or None if it has it."""
        found = self.capabilities.get(capability)
        if found is None:
            return f"faultd {self.version} does not report {capability}"
        return None if found.available else (found.missing or "unavailable")


@dataclass
class PlannedObject(Wire):
    kind: str
    name: str
    exists: bool
    extra: Dict[str, Any] = extra_field()


@dataclass
class Plan(Wire):
    """A dry run's answer: the fault as it would be applied and the kernel objects it would
    use, in the order an apply puts them in place."""

    dry_run: bool
    fault: Fault = wire_field(of=Fault.from_wire)
    objects: List[PlannedObject] = wire_field(of=list_of(PlannedObject.from_wire), factory=list)
    extra: Dict[str, Any] = extra_field()


@dataclass
class RequestCount(Wire):
    op: str
    code: str
    count: int
    extra: Dict[str, Any] = extra_field()


@dataclass
class Metrics(Wire):
    requests: List[RequestCount] = wire_field(of=list_of(RequestCount.from_wire), factory=list)
    faults: List[FaultView] = wire_field(of=list_of(FaultView.from_wire), factory=list)
    datapath_memory_bytes: Optional[int] = None
    datapath_per_cpu_bytes: Optional[int] = None
    possible_cpus: Optional[int] = None
    repairs: Optional[int] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class Event(Wire):
    """One line of a watch: `event` is applied, renewed, expired, revoked, lost, repaired or
    error with the fault's view; or `lagged`, with `missed` events and no fault."""

    event: str
    fault: Optional[FaultView] = wire_field(None, of=FaultView.from_wire)
    at_unix_ms: Optional[int] = None
    message: Optional[str] = None
    missed: Optional[int] = None
    extra: Dict[str, Any] = extra_field()
