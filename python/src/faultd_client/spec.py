"""The fault spec (docs/protocol.md §4) as typed builders that produce exactly its wire JSON.

    partition_fault(Target("eth0", match=Match(dst=["10.0.0.2"])), duration=30)
    loss_fault(Target("veth0", netns="lab-a"), percent=20, duration="1m30s")
    delay_fault(Target("eth0"), delay=0.1, jitter=0.01, duration=30)
    Fault(Target("eth0"), netem=Netem(delay="50ms", rate=Rate("10mbit")), duration="1m")

Durations are the protocol's text ("30s") or seconds or timedeltas (`durations.py`). Nothing
is validated here: faultd validates every spec and answers `invalid_value` with the field's
path, so the rules live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Union

from .durations import DurationLike, format_duration
from .wire import Wire, extra_field, wire_field

#: A port (80), its text ("80") or an inclusive range ("9000-9100").
Port = Union[int, str]


@dataclass
class Match(Wire):
    """Flows as this host sends them: `src`/`sport` are this host's side, `dst`/`dport`
    the peer's."""

    proto: Optional[str] = None
    src: List[str] = wire_field(factory=list, omit_empty=True)
    dst: List[str] = wire_field(factory=list, omit_empty=True)
    sport: List[Port] = wire_field(factory=list, omit_empty=True)
    dport: List[Port] = wire_field(factory=list, omit_empty=True)
    extra: Dict[str, Any] = extra_field()


@dataclass
class Target(Wire):
    dev: str
    netns: Optional[str] = None
    direction: Optional[str] = None
    match: Optional[Match] = wire_field(None, of=Match.from_wire)
    flows: Optional[float] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class Burst(Wire):
    """Gilbert-Elliott burst loss, netem's `loss gemodel p r 1-h 1-k`, all in percent."""

    p: float
    r: float
    loss_bad: Optional[float] = None
    loss_good: Optional[float] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class Loss(Wire):
    """`percent` or `burst`, not both."""

    percent: Optional[float] = None
    burst: Optional[Burst] = wire_field(None, of=Burst.from_wire)
    extra: Dict[str, Any] = extra_field()


@dataclass
class Partition(Wire):
    extra: Dict[str, Any] = extra_field()


@dataclass
class Chance(Wire):
    percent: float
    correlation: Optional[float] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class FourState(Wire):
    p13: float
    p31: Optional[float] = None
    p32: Optional[float] = None
    p23: Optional[float] = None
    p14: Optional[float] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class NetemLoss(Wire):
    percent: Optional[float] = None
    correlation: Optional[float] = None
    burst: Optional[Burst] = wire_field(None, of=Burst.from_wire)
    state4: Optional[FourState] = wire_field(None, of=FourState.from_wire)
    extra: Dict[str, Any] = extra_field()


@dataclass
class Reorder(Wire):
    percent: float
    correlation: Optional[float] = None
    gap: Optional[int] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class Rate(Wire):
    rate: str
    packet_overhead: Optional[int] = None
    cell_size: Optional[int] = None
    cell_overhead: Optional[int] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class Netem(Wire):
    """The netem model: delay and jitter are durations (text as on the wire)."""

    delay: Optional[str] = None
    jitter: Optional[str] = None
    delay_correlation: Optional[float] = None
    distribution: Optional[str] = None
    loss: Optional[NetemLoss] = wire_field(None, of=NetemLoss.from_wire)
    duplicate: Optional[Chance] = wire_field(None, of=Chance.from_wire)
    corrupt: Optional[Chance] = wire_field(None, of=Chance.from_wire)
    reorder: Optional[Reorder] = wire_field(None, of=Reorder.from_wire)
    rate: Optional[Rate] = wire_field(None, of=Rate.from_wire)
    limit: Optional[int] = None
    extra: Dict[str, Any] = extra_field()


@dataclass
class Fault(Wire):
    """A fault spec: a target, one action (`loss`, `partition` or `netem`), a duration."""

    target: Target = wire_field(of=Target.from_wire)
    loss: Optional[Loss] = wire_field(None, of=Loss.from_wire)
    partition: Optional[Partition] = wire_field(None, of=Partition.from_wire)
    netem: Optional[Netem] = wire_field(None, of=Netem.from_wire)
    duration: Optional[str] = None
    label: Optional[str] = None
    extra: Dict[str, Any] = extra_field()

    @property
    def kind(self) -> str:
        """`partition`, `loss`, `netem` (faultd's metrics label), or `unknown`."""
        for kind in ("partition", "loss", "netem"):
            if getattr(self, kind) is not None:
                return kind
        return "unknown"

    def with_duration(self, duration: DurationLike) -> Fault:
        return replace(self, duration=format_duration(duration))


def partition_fault(target: Target, duration: Optional[DurationLike] = None,
                    label: Optional[str] = None) -> Fault:
    """Drop every matching packet; both directions unless the target says otherwise."""
    return Fault(target, partition=Partition(), duration=_duration(duration), label=label)


def loss_fault(target: Target, percent: float, duration: Optional[DurationLike] = None,
               label: Optional[str] = None) -> Fault:
    """Drop each matching packet with probability `percent`, in (0, 100]; egress by default."""
    return Fault(target, loss=Loss(percent=percent), duration=_duration(duration), label=label)


def burst_loss_fault(target: Target, burst: Burst, duration: Optional[DurationLike] = None,
                     label: Optional[str] = None) -> Fault:
    """Gilbert-Elliott loss: mean burst 100/`burst.r` packets; egress by default."""
    return Fault(target, loss=Loss(burst=burst), duration=_duration(duration), label=label)


def delay_fault(target: Target, delay: DurationLike, jitter: Optional[DurationLike] = None,
                duration: Optional[DurationLike] = None, label: Optional[str] = None) -> Fault:
    """Delay matching packets by `delay` (+- `jitter`) in a netem; egress by default."""
    netem = Netem(delay=format_duration(delay), jitter=_duration(jitter))
    return Fault(target, netem=netem, duration=_duration(duration), label=label)


def _duration(duration: Optional[DurationLike]) -> Optional[str]:
    return None if duration is None else format_duration(duration)
