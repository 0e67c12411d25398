"""Faults for the length of a `with` block, aimed at a target configured once.

    injector = NetworkFaultInjector(dev="eth0", peer=["10.0.0.2"])
    with injector.inject_disconnect(duration_s=5.0) as f:
        ...                          # both directions to and from 10.0.0.2 dropped for 5 s
    f.counters.dropped_packets

Every block applies its fault with `"lease":"connection"` on a connection of its own, kept
open while the block runs: the fault ends when the block exits, when the process dies (SIGKILL
included: the kernel closes the socket and faultd revokes), or at its deadline, whichever is
first. A block whose fault has a duration lasts that long even if its body returns at once (the
rest is slept out on exit, unless the body raised) and then revokes the fault, whose deadline is
1 s later as a backstop; a fault without one (latency, loss) gets `hold_s` as its deadline and
ends with the block.
"""

from __future__ import annotations

import itertools
import os
import time
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, List, Optional, Sequence

from .client import Client, Endpoint, FaultLike, fault_json
from .durations import format_duration, to_seconds
from .errors import NotFoundError, UnsupportedError
from .spec import Fault, Loss, Match, Netem, Partition, Port, Target
from .views import Counters, FaultView

#: The deadline of a fault that names no duration (latency, loss): the block ends it sooner.
DEFAULT_HOLD_S = 600.0
#: How much later than its block's end a timed fault's deadline is (see `_block`).
DEADLINE_GRACE_S = 1.0
#: Requests on an otherwise quiet block's connection, so faultd's idle timeout (10 min by
#: default) never ends its lease.
DEFAULT_KEEPALIVE_S = 60.0


class ActiveFault:
    """The handle a block yields: the fault's id and, while it is active, live counters."""

    def __init__(self, view: FaultView, client: Client, started: float) -> None:
        #: As drill reports name kinds: partition, latency or loss (or netem: other netem).
        self.kind = drill_kind(view.fault)
        self.view = view
        self._client = client
        self.ended = False
        self._started = started
        self._ended_at: Optional[float] = None

    @property
    def held_s(self) -> float:
        """How long the block held the fault (so far)."""
        return (self._ended_at or time.monotonic()) - self._started

    @property
    def id(self) -> str:
        return self.view.id

    @property
    def key(self) -> Optional[str]:
        return self.view.key

    @property
    def fault(self) -> Fault:
        """The spec, normalized by faultd."""
        return self.view.fault

    def refresh(self) -> FaultView:
        """The current view (a `get`); once the fault has ended, the last one seen."""
        if not self.ended:
            try:
                self.view = self._client.get(self.id)
            except NotFoundError:
                self.ended = True  # its deadline passed, or someone revoked it
        return self.view

    def end(self) -> FaultView:
        """Revokes the fault, if it is still active; the final view."""
        if not self.ended:
            try:
                self.view = self._client.revoke(self.id)
            except NotFoundError:
                pass  # it ended first (its deadline, a revoke from elsewhere): the last view stands
            self.ended = True
        if self._ended_at is None:
            self._ended_at = time.monotonic()
        return self.view

    @property
    def counters(self) -> Counters:
        """Live while the fault is active; after the block, the final counters."""
        return self.refresh().counters

    def __repr__(self) -> str:
        return f"<ActiveFault {self.kind} {self.id} {'ended' if self.ended else 'active'}>"


class NetworkFaultInjector:
    """Injects faults on one target: `dev` (in `netns`, if given), the traffic to and from
    `peer` (addresses or CIDRs; none means every packet on the device), narrowed to `proto` and
    the peer's ports `peer_ports` if given.

    `on_applied` and `on_ended` are called with each block's handle (the pytest plugin turns
    them into hooks); `on_unsupported` with faultd's refusal when the kernel lacks what a fault
    needs, before it is raised (the pytest plugin skips the test there when asked to)."""

    def __init__(self, dev: str, *, peer: Sequence[str] = (), netns: Optional[str] = None,
                 proto: Optional[str] = None, peer_ports: Sequence[Port] = (),
                 endpoint: Optional[Endpoint] = None, label: str = "faultd_client",
                 hold_s: float = DEFAULT_HOLD_S, keepalive_s: float = DEFAULT_KEEPALIVE_S,
                 on_applied: Optional[Callable[[ActiveFault], None]] = None,
                 on_ended: Optional[Callable[[ActiveFault], None]] = None,
                 on_unsupported: Optional[Callable[[UnsupportedError], None]] = None) -> None:
        self.target = Target(dev, netns=netns)
        if peer or proto or peer_ports:
            self.target.match = Match(proto=proto, dst=list(peer), dport=list(peer_ports))
        self._owns_endpoint = endpoint is None
        self.endpoint = endpoint or Endpoint()
        self.label = label
        self.hold_s = hold_s
        self.keepalive_s = keepalive_s
        self.on_applied = on_applied
        self.on_ended = on_ended
        self.on_unsupported = on_unsupported
        #: Every block's handle, in order: what this injector did (reports read it).
        self.faults: List[ActiveFault] = []
        # Keys make an apply's retry idempotent; unique per process and block.
        self._keys = (f"faultd-client-{os.getpid()}-{time.time_ns():x}-{n}"
                      for n in itertools.count())

    def inject_disconnect(self, duration_s: float) -> ContextManager[ActiveFault]:
        """The peer cut off in both directions (a partition) for `duration_s` seconds; the
        block lasts at least that long."""
        if duration_s <= 0:
            raise ValueError(f"duration_s must be more than 0, not {duration_s!r}")
        return self._block("disconnect", Fault(self.target, partition=Partition(),
                                               duration=format_duration(duration_s)))

    def inject_latency(self, latency_ms: float, jitter_ms: float = 0
                       ) -> ContextManager[ActiveFault]:
        """Packets this host sends to the peer held back `latency_ms` (+- `jitter_ms`) in a
        netem: every round trip takes that much longer. Needs a kernel with netem."""
        if latency_ms <= 0 or jitter_ms < 0:
            raise ValueError(f"latency_ms must be more than 0 and jitter_ms not negative, not "
                             f"{latency_ms!r} and {jitter_ms!r}")
        netem = Netem(delay=format_duration(latency_ms / 1000),
                      jitter=format_duration(jitter_ms / 1000) if jitter_ms else None)
        return self._block("latency", Fault(self.target, netem=netem))

    def inject_packet_loss(self, loss_probability: float) -> ContextManager[ActiveFault]:
        """Each packet to or from the peer dropped with `loss_probability`, in (0, 1]: both
        directions, so a request and its answer are each lost that often."""
        if not 0 < loss_probability <= 1:
            raise ValueError(f"loss_probability is a fraction in (0, 1] (20 % is 0.2), not "
                             f"{loss_probability!r}")
        target = Target(self.target.dev, netns=self.target.netns, direction="both",
                        match=self.target.match)
        # round(): 0.2 * 100 is 20.000000000000004 in binary floating point.
        return self._block("loss", Fault(target, loss=Loss(percent=round(loss_probability * 100,
                                                                          9))))

    def inject(self, fault: FaultLike) -> ContextManager[ActiveFault]:
        """Any fault (a `Fault`, or its wire JSON), leased to the block like the others."""
        return self._block("fault", Fault.from_wire(fault_json(fault)))

    @contextmanager
    def _block(self, name: str, fault: Fault) -> Iterator[ActiveFault]:
        fault.label = fault.label or f"{self.label}: {name}"
        hold = to_seconds(fault.duration) if fault.duration else None
        # A timed block revokes its fault itself when the time is up, which gives the final
        # counters; the deadline, a moment later, is the backstop. A deadline of exactly the
        # duration would race the revoke and lose the counters to the expiry.
        fault.duration = format_duration(self.hold_s if hold is None else hold + DEADLINE_GRACE_S)
        client = self.endpoint.connect()
        try:
            started = time.monotonic()
            try:
                view = client.apply(fault, key=next(self._keys), lease=True)
            except UnsupportedError as refusal:
                if self.on_unsupported is not None:
                    self.on_unsupported(refusal)
                raise
            handle = ActiveFault(view, client, started)
            self.faults.append(handle)
            try:
                if self.on_applied is not None:
                    self.on_applied(handle)
                with client.keep_alive(handle.refresh, self.keepalive_s):
                    yield handle
                    if hold is not None:
                        time.sleep(max(0.0, started + hold - time.monotonic()))
            finally:
                handle.end()
                if self.on_ended is not None:
                    self.on_ended(handle)
        finally:
            client.close()

    def close(self) -> None:
        if self._owns_endpoint:
            self.endpoint.close()


def drill_kind(fault: Fault) -> str:
    """The kind a drill report gives the fault (docs/drills.md)."""
    if fault.partition is not None:
        return "partition"
    if fault.loss is not None:
        return "loss"
    if fault.netem is not None:
        return "latency" if fault.netem.delay else "netem"
    return fault.kind
