"""faultd_client: Python client of faultline's faultd (docs/protocol.md), standard library only.

- `Client`: one method per op (hello, apply, plan, renew, list, get, revoke, clear, metrics,
  watch), typed views, one exception class per error code.
- `NetworkFaultInjector`: faults for the length of a `with` block, leased to the block.
- `RecoveryTimer`: detection and recovery against an RTO, reported as drills report.
- The pytest plugin (`faultd_client.pytest_plugin`, loaded by pytest on its own) and the Chaos
  Toolkit extension (`faultd_client.chaos`) need pytest and chaostoolkit respectively.
"""

from typing import Any, Dict

from .client import DEFAULT_TIMEOUT_S, Client, Endpoint, Watch, default_socket
from .connection import DEFAULT_SOCKET
from .durations import format_duration, to_seconds
from .errors import (ERRORS, BusyError, ClientError, ConflictError, ConnectionClosedError,
                     DeviceNotFoundError, FaultdError, FaultlineError, ForbiddenError,
                     InternalError, InvalidRequestError, InvalidValueError, KernelError,
                     LimitExceededError, LineTooLongError, NetnsNotFoundError, NotFoundError,
                     ParseError, ProtocolViolationError, RequestTimeoutError, UnknownOpError,
                     UnreachableError, UnsupportedError)
from .injector import ActiveFault, NetworkFaultInjector
from .recovery import RecoveryMetrics, RecoveryTimer
from .spec import (Burst, Chance, Fault, FourState, Loss, Match, Netem, NetemLoss, Partition,
                   Rate, Reorder, Target, burst_loss_fault, delay_fault, loss_fault,
                   partition_fault)
from .views import (Capability, Counters, DirectionCounters, Event, FaultView, Hello, Limits,
                    Metrics, Plan, PlannedObject, RequestCount)

__version__ = "0.1.0"

#: The protocol version this client speaks (`hello` reports faultd's).
PROTOCOL = 1


def discover(discover_system: bool = True) -> Dict[str, Any]:
    """Chaos Toolkit's entry point (`chaos discover faultd-client`): the activities of
    `faultd_client.chaos`. Imported only here, so the core needs no chaostoolkit."""
    from .chaos import discover as discover_chaos

    return discover_chaos(discover_system)


__all__ = [
    "DEFAULT_SOCKET", "DEFAULT_TIMEOUT_S", "ERRORS", "PROTOCOL", "ActiveFault", "Burst",
    "BusyError", "Capability", "Chance", "Client", "ClientError", "ConflictError",
    "ConnectionClosedError", "Counters", "DeviceNotFoundError", "DirectionCounters", "Endpoint",
    "Event", "Fault", "FaultView", "FaultdError", "FaultlineError", "ForbiddenError",
    "FourState", "Hello", "InternalError", "InvalidRequestError", "InvalidValueError",
    "KernelError", "LimitExceededError", "Limits", "LineTooLongError", "Loss", "Match",
    "Metrics", "Netem", "NetemLoss", "NetnsNotFoundError", "NetworkFaultInjector",
    "NotFoundError", "ParseError", "Partition", "Plan", "PlannedObject",
    "ProtocolViolationError", "Rate", "RecoveryMetrics", "RecoveryTimer", "Reorder",
    "RequestCount", "RequestTimeoutError", "Target", "UnknownOpError", "UnreachableError",
    "UnsupportedError", "Watch", "burst_loss_fault", "default_socket", "delay_fault",
    "discover", "format_duration", "loss_fault", "partition_fault", "to_seconds",
]
