"""Chaos Toolkit actions: faults applied through faultd, each leased to the run's connection and
keyed by the run and its `name` (see `run.py`), so no fault outlives an interrupted run.

A `name` identifies a fault within the run: probes and revoke/renew find it by it. Targets are
given as strings (lists comma-separated): `dev`, `netns`, `peer` (the peer's addresses or
CIDRs), `peer_ports`, `proto`, `direction`. Each returns faultd's view of the fault, as JSON.
"""

# No `from __future__ import annotations`: `chaos discover` reads these annotations as types.
from typing import Any, Dict, List, Optional

from ..spec import Fault, Loss, Match, Netem, Partition, Target
from .run import RUN

__all__ = ["partition", "loss", "delay", "apply", "revoke", "renew", "clear"]

Configuration = Dict[str, Any]


def partition(dev: str, peer: str = "", duration: str = "30s", netns: str = "",
              proto: str = "", peer_ports: str = "", direction: str = "",
              name: str = "partition", *,
              configuration: Optional[Configuration] = None) -> Dict[str, Any]:
    """Cut `peer` off (both directions unless `direction` says otherwise) for `duration`."""
    target = _target(dev, netns, peer, proto, peer_ports, direction)
    return _apply(Fault(target, partition=Partition(), duration=duration), name, configuration)


def loss(dev: str, percent: float, peer: str = "", duration: str = "30s", netns: str = "",
         proto: str = "", peer_ports: str = "", direction: str = "", name: str = "loss", *,
         configuration: Optional[Configuration] = None) -> Dict[str, Any]:
    """Drop `percent` (0-100] of the matching packets (egress unless `direction` says)."""
    target = _target(dev, netns, peer, proto, peer_ports, direction)
    return _apply(Fault(target, loss=Loss(percent=percent), duration=duration), name,
                  configuration)


def delay(dev: str, delay: str = "100ms", jitter: str = "", peer: str = "",
          duration: str = "30s", netns: str = "", proto: str = "", peer_ports: str = "",
          direction: str = "", name: str = "delay", *,
          configuration: Optional[Configuration] = None) -> Dict[str, Any]:
    """Hold matching packets back by `delay` (+- `jitter`) in a netem (needs netem)."""
    target = _target(dev, netns, peer, proto, peer_ports, direction)
    netem = Netem(delay=delay, jitter=jitter or None)
    return _apply(Fault(target, netem=netem, duration=duration), name, configuration)


def apply(fault: Dict[str, Any], name: str = "fault", *,
          configuration: Optional[Configuration] = None) -> Dict[str, Any]:
    """Any fault spec, as the protocol's JSON (docs/protocol.md §4)."""
    return _apply(Fault.from_wire(fault), name, configuration)


def revoke(name: str = "", fault_id: str = "", *,
           configuration: Optional[Configuration] = None) -> Dict[str, Any]:
    """End the run's fault `name` (or any fault by `fault_id`) now; its final counters."""
    view = RUN.view(configuration, name, fault_id)
    if view.active:
        view = RUN.client(configuration).revoke(view.id)
        RUN.remember(view)
    return view.to_wire()


def renew(duration: str, name: str = "", fault_id: str = "", *,
          configuration: Optional[Configuration] = None) -> Dict[str, Any]:
    """Give the fault `duration` from now."""
    view = RUN.view(configuration, name, fault_id)
    view = RUN.client(configuration).renew(view.id, duration)
    RUN.remember(view)
    return view.to_wire()


def clear(everything: bool = False, *,
          configuration: Optional[Configuration] = None) -> List[Dict[str, Any]]:
    """Revoke this run's faults; with `everything`, every fault on that faultd (the protocol's
    clear, the kill switch)."""
    if everything:
        return [v.to_wire() for v in RUN.client(configuration).clear()]
    client = RUN.client(configuration)
    revoked = []
    for view in client.list():
        if view.key and view.key.startswith(RUN.id + "/"):
            final = client.revoke(view.id)
            RUN.remember(final)
            revoked.append(final.to_wire())
    return revoked


def _apply(fault: Fault, name: str, configuration: Optional[Configuration]) -> Dict[str, Any]:
    fault.label = fault.label or f"chaos: {name}"
    view = RUN.client(configuration).apply(fault, key=RUN.key(name), lease=True)
    RUN.remember(view)
    return view.to_wire()


def _target(dev: str, netns: str, peer: str, proto: str, peer_ports: str,
            direction: str) -> Target:
    target = Target(dev, netns=netns or None, direction=direction or None)
    peers, ports = _items(peer), _items(peer_ports)
    if peers or ports or proto:
        target.match = Match(proto=proto or None, dst=peers, dport=list(ports))
    return target


def _items(text: str) -> List[str]:
    return [v.strip() for v in text.split(",") if v.strip()]
