"""A Chaos Toolkit control that revokes the run's faults when the experiment ends, however it
ends: completed, failed, interrupted by Ctrl-C or SIGTERM (rollbacks or not). A SIGKILL skips
every control; the run's faults then end with its connections (leases).

    "controls": [{"name": "faultd", "provider": {"type": "python",
                                                 "module": "faultd_client.chaos.control"}}]
"""

from typing import Any

from .run import RUN


def after_experiment_control(context: Any, state: Any = None, **kwargs: Any) -> None:
    RUN.end()


def cleanup_control() -> None:
    # Called in a `finally` after the experiment: covers runs that never reached the end.
    RUN.end()
