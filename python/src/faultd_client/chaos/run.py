"""The faults one `chaos run` applied, held on connections the chaos process keeps open for the
run: every fault is leased to its connection, so whatever ends the process (Ctrl-C, SIGTERM,
SIGKILL, a crash) ends its faults, and each is keyed `<run id>/<name>`, so the control
(`faultd_client.chaos.control`) or the process's exit revokes exactly this run's faults.

faultd is found through the experiment's configuration (`faultd_socket`, and `faultd_ssh` for
another host's faultd through ssh), else as faultctl finds it ($FAULTLINE_SOCKET).
"""

import atexit
import logging
import os
import socket
import threading
import uuid
from contextlib import ExitStack
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..client import Client, Endpoint
from ..errors import FaultlineError, NotFoundError
from ..views import FaultView

logger = logging.getLogger("chaostoolkit")

#: faultd's idle timeout is 10 min by default; the run's connections never come near it.
KEEPALIVE_S = 60.0


class Run:
    def __init__(self) -> None:
        self.id = f"chaos-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._lock = threading.Lock()
        self._clients: Dict[Tuple[Optional[str], Optional[str]], Client] = {}
        self._stack = ExitStack()
        #: The last view seen of each fault by name: a probe after the revoke still answers.
        self.views: Dict[str, FaultView] = {}

    def key(self, name: str) -> str:
        return f"{self.id}/{name}"

    def client(self, configuration: Optional[Mapping[str, Any]]) -> Client:
        """The run's connection to the faultd the configuration names, opened at first use."""
        conf = configuration or {}
        where = (conf.get("faultd_socket") or None, conf.get("faultd_ssh") or None)
        with self._lock:
            client = self._clients.get(where)
            if client is None:
                client = Client(where[0], ssh=where[1])
                self._stack.callback(client.close)
                self._stack.enter_context(client.keep_alive(interval_s=KEEPALIVE_S))
                self._clients[where] = client
                logger.info(f"faultd-client: faults of this run are keyed {self.id}/NAME "
                            f"({client.endpoint.describe()})")
            return client

    def view(self, configuration: Optional[Mapping[str, Any]], name: str,
             fault_id: str) -> FaultView:
        """The current view of the run's fault `name` (or of `fault_id`); once it has ended,
        the last one seen. NotFoundError if there never was one."""
        client = self.client(configuration)
        wanted = fault_id or (self.views[name].id if name in self.views else "")
        try:
            if wanted:
                view = client.get(wanted)
            else:
                found = client.find(self.key(name))
                if found is None:
                    raise NotFoundError(f"no fault named {name!r} in run {self.id}", op="get")
                view = found
        except NotFoundError:
            last = next((v for v in self.views.values() if v.id == wanted), None)
            if last is None:
                raise
            return last
        self.remember(view)
        return view

    def remember(self, view: FaultView) -> None:
        if view.key and view.key.startswith(self.id + "/"):
            self.views[view.key[len(self.id) + 1:]] = view

    def end(self) -> List[FaultView]:
        """Revokes every fault of this run on every faultd it used and closes the connections.
        Errors are logged, not raised: this runs at the end, when nobody is left to catch."""
        revoked: List[FaultView] = []
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            stack, self._stack = self._stack, ExitStack()
        for client in clients:
            try:
                for view in client.list():
                    if view.key and view.key.startswith(self.id + "/"):
                        try:
                            final = client.revoke(view.id)
                        except NotFoundError:
                            continue  # ended at its deadline meanwhile
                        self.remember(final)
                        revoked.append(final)
            except FaultlineError as e:
                # The connection is gone, and with it the leases: faultd revoked them.
                logger.warning(f"faultd-client: cleanup through {client.endpoint.describe()}: "
                               f"{e}")
        stack.close()
        if revoked:
            logger.info(f"faultd-client: revoked {', '.join(v.id for v in revoked)}")
        return revoked


RUN = Run()
# A run that names no control still revokes its faults when the process exits normally.
atexit.register(RUN.end)
