"""The protocol client: one method per op of docs/protocol.md §3.

    with Client() as faultd:                      # $FAULTLINE_SOCKET or /run/faultline/faultd.sock
        faultd.hello().capabilities
        view = faultd.apply(partition_fault(Target("eth0", match=Match(dst=["10.0.0.2"])), 30))
        faultd.revoke(view.id).counters.dropped_packets

`Client(ssh="root@db1")` drives the faultd of another host through an ssh-forwarded socket.
"""

from __future__ import annotations

import os
import threading
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Union

from .connection import DEFAULT_SOCKET, Connection
from .durations import DurationLike, format_duration
from .errors import BusyError, ConnectionClosedError, FaultlineError, RequestTimeoutError
from .spec import Fault
from .ssh import SshTunnel
from .views import Event, FaultView, Hello, Metrics, Plan

#: How long a request waits for its answer, unless told otherwise.
DEFAULT_TIMEOUT_S = 10.0

FaultLike = Union[Fault, Mapping[str, Any]]


def default_socket() -> str:
    """faultd's socket as faultctl finds it: `$FAULTLINE_SOCKET`, else the default path."""
    return os.environ.get("FAULTLINE_SOCKET") or DEFAULT_SOCKET


class Endpoint:
    """Where a faultd is: its socket on this host, or its socket on another host reached
    through ssh (`ssh="[user@]host"`, the tunnel opened at the first connection and shared by
    all of them). Every `connect()` is a connection of its own, so each holds its own leases."""

    def __init__(self, socket: Optional[str] = None, *, ssh: Optional[str] = None,
                 timeout: Optional[float] = DEFAULT_TIMEOUT_S) -> None:
        self.socket = socket or default_socket()
        self.ssh = ssh
        self.timeout = timeout
        self._tunnel: Optional[SshTunnel] = None
        self._lock = threading.Lock()

    def connect(self) -> Client:
        return Client(endpoint=self)

    def open_connection(self) -> Connection:
        with self._lock:
            if self.ssh and self._tunnel is None:
                self._tunnel = SshTunnel(self.ssh, self.socket)
            path = self._tunnel.socket if self._tunnel else self.socket
        return Connection(path, self.timeout)

    def describe(self) -> str:
        return f"{self.ssh}:{self.socket}" if self.ssh else self.socket

    def close(self) -> None:
        """Ends the ssh tunnel, if any (and with it every connection through it)."""
        with self._lock:
            if self._tunnel is not None:
                self._tunnel.close()
                self._tunnel = None

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """One connection to faultd. Safe to share between threads (one request at a time).

    Faults applied with `lease=True` end when this connection closes: `close()`, the end of
    the process (SIGKILL included), or faultd's idle timeout (10 min without a request by
    default; `keep_alive` prevents it). A client that holds no lease reconnects once when it
    finds its connection closed; one that does cannot, since its faults went with it."""

    def __init__(self, socket: Optional[str] = None, *, ssh: Optional[str] = None,
                 timeout: Optional[float] = DEFAULT_TIMEOUT_S,
                 endpoint: Optional[Endpoint] = None) -> None:
        self._owns_endpoint = endpoint is None
        self.endpoint = endpoint or Endpoint(socket, ssh=ssh, timeout=timeout)
        try:
            self._conn = self.endpoint.open_connection()
        except BaseException:
            if self._owns_endpoint:
                self.endpoint.close()
            raise
        self._holds_leases = False

    # --- the ops ------------------------------------------------------------------------------

    def hello(self) -> Hello:
        return Hello.from_wire(self.request("hello"))

    def apply(self, fault: FaultLike, *, key: Optional[str] = None, lease: bool = False,
              retries: int = 2) -> FaultView:
        """Applies `fault`. Every apply carries a `key` (one is made up when none is given),
        so that after a timeout it is sent again up to `retries` times: faultd answers a
        repeat with the fault the first attempt made, not a second fault. `lease=True` ties
        the fault to this connection (`"lease":"connection"`)."""
        args: Dict[str, Any] = {"fault": fault_json(fault),
                                "key": key or f"faultd-client-{uuid.uuid4().hex[:12]}"}
        if lease:
            args["lease"] = "connection"
            # From here on a broken connection must not be silently replaced: the fault, if
            # it was made, went with it.
            self._holds_leases = True
        for attempt in range(retries + 1):
            try:
                return FaultView.from_wire(self.request("apply", **args))
            except RequestTimeoutError:
                # Sent again on this same connection (which holds the lease, if any); the late
                # answer to the first attempt is skipped when it comes.
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    def plan(self, fault: FaultLike) -> Plan:
        """A dry run: every check an apply makes, and the kernel objects the fault would use.
        Nothing changes."""
        return Plan.from_wire(self.request("apply", fault=fault_json(fault), dry_run=True))

    def renew(self, fault_id: str, duration: DurationLike) -> FaultView:
        """Gives an active fault `duration` from now."""
        return FaultView.from_wire(
            self.request("renew", fault_id=fault_id, duration=format_duration(duration)))

    def list(self) -> List[FaultView]:
        return [FaultView.from_wire(v) for v in self.request("list")["faults"]]

    def get(self, fault_id: str) -> FaultView:
        return FaultView.from_wire(self.request("get", fault_id=fault_id))

    def revoke(self, fault_id: str) -> FaultView:
        """Ends a fault now; the view has its final counters (`state: "revoked"`)."""
        return FaultView.from_wire(self.request("revoke", fault_id=fault_id))

    def clear(self) -> List[FaultView]:
        """The kill switch: revokes every active fault, whoever applied it."""
        return [FaultView.from_wire(v) for v in self.request("clear")["revoked"]]

    def metrics(self) -> Metrics:
        return Metrics.from_wire(self.request("metrics"))

    def watch(self) -> Watch:
        """The event stream, on a connection of its own (this one stays usable)."""
        return Watch(self.endpoint)

    def find(self, key: str) -> Optional[FaultView]:
        """The active fault applied with `key`, if any."""
        return next((v for v in self.list() if v.key == key), None)

    # --- plumbing -----------------------------------------------------------------------------

    def request(self, op: str, **args: Any) -> Any:
        """Any op, with its arguments as JSON values; returns the raw `result`."""
        try:
            return self._conn.request(op, args)
        except (ConnectionClosedError, BusyError):
            # An idle connection is closed by faultd with a `busy` line; a client without
            # leases loses nothing by reconnecting once. A second refusal stands.
            if self._holds_leases:
                raise
            self._conn.close()
            self._conn = self.endpoint.open_connection()
            return self._conn.request(op, args)

    @property
    def connection(self) -> Connection:
        return self._conn

    @contextmanager
    def keep_alive(self, ping: Optional[Callable[[], object]] = None,
                   interval_s: float = 60.0) -> Iterator[None]:
        """While the block runs, `ping` (default: hello) every `interval_s`, so that faultd's
        idle timeout does not close this connection and end its leases. A failing ping stops
        the pings; the block's own next request reports what went wrong."""
        stop = threading.Event()
        ping = ping or self.hello

        def run() -> None:
            while not stop.wait(interval_s):
                try:
                    ping()
                except FaultlineError:
                    return

        thread = threading.Thread(target=run, name="faultd-keepalive", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def close(self) -> None:
        """Closes the connection; faults leased to it end."""
        self._conn.close()
        if self._owns_endpoint:
            self.endpoint.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Watch:
    """faultd's events, on a connection of their own: iterate, or `next_event(timeout)`."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._conn = endpoint.open_connection()
        try:
            self._conn.request("watch", {})
        except BaseException:
            self._conn.close()
            raise

    def next_event(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event; None when faultd ended the stream. RequestTimeoutError if none
        came within `timeout` seconds (None: wait as long as it takes)."""
        message = self._conn.read_message(timeout)
        return None if message is None else Event.from_wire(message)

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.next_event()
            if event is None:
                return
            yield event

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fault_json(fault: FaultLike) -> Dict[str, Any]:
    """The wire JSON of a spec given typed or as JSON."""
    return fault.to_wire() if isinstance(fault, Fault) else dict(fault)
