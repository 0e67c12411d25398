"""Hooks the pytest plugin calls, for a conftest.py to implement (e.g. to probe the network while
a fault holds, or to log what was injected)."""

from typing import Any


def pytest_faultd_fault_applied(fault: Any, item: Any) -> None:
    """A block of `network_fault_injector` applied `fault` (an `ActiveFault`) for test `item`;
    the block's body has not run yet."""


def pytest_faultd_fault_ended(fault: Any, item: Any) -> None:
    """`fault` ended as its block exited; its view holds the final counters."""
