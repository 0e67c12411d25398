"""The lab the tests run in, and real traffic across it, counted where it arrives.

The lab is made by the Rust driver (tests/tests/python_client.rs: two network namespaces joined
by a veth pair, a faultd of its own) and described in the environment: FAULTLINE_SOCKET, and for
each side X of A and B, FAULTLINE_LAB_X_NETNS, _DEV and _ADDR. Sockets are made inside a
namespace by a thread that joined it (setns changes only the calling thread's namespace, and a
socket stays in the namespace it was made in).
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, TypeVar

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
#: Silence the receiver must see once the sender is done before a burst counts as complete
#: (datagrams still in flight), as tests/src/traffic.rs waits.
DRAIN_QUIET_S = 0.3


@dataclass(frozen=True)
class Side:
    netns: str
    dev: str
    addr: str


@dataclass(frozen=True)
class Lab:
    socket: str
    a: Side
    b: Side
    #: A second faultd with a policy (max_loss_percent 50) and low connection limits.
    policy_socket: Optional[str]

    @staticmethod
    def from_env() -> Optional[Lab]:
        env = os.environ
        try:
            sides = [Side(env[f"FAULTLINE_LAB_{x}_NETNS"], env[f"FAULTLINE_LAB_{x}_DEV"],
                          env[f"FAULTLINE_LAB_{x}_ADDR"]) for x in "AB"]
            return Lab(env["FAULTLINE_SOCKET"], sides[0], sides[1],
                       env.get("FAULTLINE_POLICY_SOCKET"))
        except KeyError:
            return None


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """`fn()` on a thread that has joined network namespace `netns` (a name under /run/netns)."""
    out: List[T] = []
    failed: List[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns {netns}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            out.append(fn())
        except BaseException as e:  # handed to the caller's thread
            failed.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return out[0]


def udp_socket(netns: str, addr: str = "0.0.0.0", port: int = 0) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((addr, port))
        return s
    return in_netns(netns, make)


def udp_burst(sender: Side, receiver: Side, port: int, count: int,
              pace_s: float = 0.0) -> Tuple[int, int]:
    """Sends `count` datagrams from `sender` to `receiver`'s address and `port`; (sent, received).
    `pace_s` between datagrams, kept to a schedule."""
    sink = udp_socket(receiver.netns, receiver.addr, port)
    source = udp_socket(sender.netns)
    sent = 0
    try:
        due = time.monotonic()
        for seq in range(count):
            if pace_s:
                due += pace_s
                time.sleep(max(0.0, due - time.monotonic()))
            try:
                source.sendto(seq.to_bytes(8, "big"), (receiver.addr, port))
                sent += 1
            except OSError:
                pass
        return sent, drain(sink)
    finally:
        source.close()
        sink.close()


def drain(sink: socket.socket) -> int:
    """Datagrams that reach `sink` until it has been quiet for DRAIN_QUIET_S."""
    received = 0
    while select.select([sink], [], [], DRAIN_QUIET_S)[0]:
        sink.recv(64)
        received += 1
    return received


class TcpServer:
    """Accepts (and closes) connections on `side`'s address and `port` until closed."""

    def __init__(self, side: Side, port: int) -> None:
        def listen() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((side.addr, port))
            s.listen(64)
            return s
        self._sock = in_netns(side.netns, listen)
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
                conn.close()
            except (socket.timeout, OSError):
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def __enter__(self) -> TcpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tcp_connects(side: Side, addr: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection from `side` to `addr`:`port` is established within `timeout`."""
    def connect() -> bool:
        try:
            socket.create_connection((addr, port), timeout=timeout).close()
            return True
        except OSError:
            return False
    return in_netns(side.netns, connect)


def tcp_connect_seconds(side: Side, addr: str, port: int, timeout: float) -> Optional[float]:
    """How long a TCP connection from `side` to `addr`:`port` takes to be established (the
    SYN's and the SYN/ACK's trip), or None when it is not within `timeout`."""
    def connect() -> Optional[float]:
        started = time.monotonic()
        try:
            socket.create_connection((addr, port), timeout=timeout).close()
            return time.monotonic() - started
        except OSError:
            return None
    return in_netns(side.netns, connect)


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    """Polls `predicate` until it holds or `timeout` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def within_binomial(count: int, n: int, p: float) -> bool:
    """Whether `count` is a plausible Binomial(n, p) draw: within 4 standard deviations of the
    mean, where all but 6 in 100,000 draws land (the tests run several such checks a run)."""
    return abs(count - n * p) <= 4 * (n * p * (1 - p)) ** 0.5
