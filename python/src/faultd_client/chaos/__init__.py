"""The Chaos Toolkit extension: actions (`faultd_client.chaos.actions`), probes
(`faultd_client.chaos.probes`) and a control (`faultd_client.chaos.control`) that revokes the
run's faults at its end. `chaos discover faultd-client` lists them (needs chaostoolkit-lib)."""

from typing import Any, Dict

from ..client import Client
from ..errors import FaultlineError


def discover(discover_system: bool = True) -> Dict[str, Any]:
    from chaoslib.discovery.discover import (discover_actions, discover_probes,
                                             initialize_discovery_result)

    from .. import __version__

    discovery: Dict[str, Any] = initialize_discovery_result("faultd-client", __version__,
                                                            "faultd")
    discovery["activities"].extend(discover_actions("faultd_client.chaos.actions"))
    discovery["activities"].extend(discover_probes("faultd_client.chaos.probes"))
    if discover_system:
        # The faultd this host's faultctl would reach ($FAULTLINE_SOCKET): its hello.
        try:
            with Client() as faultd:
                discovery["system"] = {"faultd": faultd.hello().to_wire()}
        except FaultlineError as e:
            discovery["system"] = {"faultd": None, "error": str(e)}
    return discovery
