"""Chaos Toolkit probes: faultd's status, the run's faults (active? how many packets dropped?),
and a dry run's plan."""

# No `from __future__ import annotations`: `chaos discover` reads these annotations as types.
from typing import Any, Dict, Optional

from ..errors import NotFoundError
from ..spec import Fault
from .run import RUN

__all__ = ["faultd_status", "fault_active", "dropped_packets", "plan"]

Configuration = Dict[str, Any]


def faultd_status(*, configuration: Optional[Configuration] = None) -> Dict[str, Any]:
    """faultd's hello: version, protocol, kernel capabilities, limits and policy."""
    return RUN.client(configuration).hello().to_wire()


def fault_active(name: str = "", fault_id: str = "", *,
                 configuration: Optional[Configuration] = None) -> bool:
    """Whether the run's fault `name` (or `fault_id`) is active now."""
    try:
        return RUN.view(configuration, name, fault_id).active
    except NotFoundError:
        return False


def dropped_packets(name: str = "", fault_id: str = "", direction: str = "both", *,
                    configuration: Optional[Configuration] = None) -> int:
    """Packets the fault dropped so far (`egress`, `ingress` or `both`); after it ended, its
    final count."""
    counters = RUN.view(configuration, name, fault_id).counters
    if direction == "egress":
        return counters.egress.dropped_packets
    if direction == "ingress":
        return counters.ingress.dropped_packets
    return counters.dropped_packets


def plan(fault: Dict[str, Any], *,
         configuration: Optional[Configuration] = None) -> Dict[str, Any]:
    """A dry run of `fault` (the protocol's JSON): faultd's checks and the kernel objects it
    would use; nothing changes."""
    return RUN.client(configuration).plan(Fault.from_wire(fault)).to_wire()
