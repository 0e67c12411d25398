"""One connection to faultd: JSON Lines over a unix stream socket (docs/protocol.md §1-2).

One request in flight at a time (a lock serializes callers on several threads); answers are
matched to requests by id, and a late answer to a request that timed out is skipped.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any, Dict, Mapping, Optional

from .errors import (ConnectionClosedError, ProtocolViolationError, RequestTimeoutError,
                     UnreachableError, error_from_wire)

#: Where faultd listens unless told otherwise (faultd --socket, FAULTLINE_SOCKET for clients).
DEFAULT_SOCKET = "/run/faultline/faultd.sock"


class Connection:
    def __init__(self, path: str, timeout: Optional[float]) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as e:
            self._sock.close()
            raise UnreachableError(f"cannot reach faultd at {path}: {e}") from e
        self._buf = b""
        self._next_id = 0
        self._lock = threading.Lock()

    def request(self, op: str, args: Mapping[str, Any]) -> Any:
        """Sends one request and returns its `result`; raises the FaultdError subclass of a
        refusal, RequestTimeoutError, ConnectionClosedError or ProtocolViolationError."""
        with self._lock:
            self._next_id += 1
            rid = self._next_id
            line = json.dumps({"id": rid, "op": op, **args}, separators=(",", ":")) + "\n"
            try:
                self._sock.sendall(line.encode())
                send_error: Optional[OSError] = None
            except socket.timeout as e:
                raise RequestTimeoutError(f"{op}: faultd did not take the request in time") from e
            except OSError as e:
                # faultd may have answered and closed before reading it (`busy`): that line says
                # why, so read before reporting the failed send.
                send_error = e
            while True:
                try:
                    response = self._read_message(op)
                except ConnectionClosedError as closed:
                    raise closed from send_error
                if response is None:
                    raise ConnectionClosedError(f"{op}: faultd closed the connection") \
                        from send_error
                answered = response.get("id")
                if answered is None and response.get("ok") is False:
                    # A connection-level refusal (busy, line_too_long): faultd closes after it.
                    raise error_from_wire(response.get("error"), op)
                if isinstance(answered, int) and not isinstance(answered, bool) and answered < rid:
                    continue  # the late answer to a request that timed out earlier
                if answered != rid:
                    raise ProtocolViolationError(f"{op}: an answer to another request: {response}")
                break
        if response.get("ok") is True:
            return response.get("result")
        if response.get("ok") is False:
            raise error_from_wire(response.get("error"), op)
        raise ProtocolViolationError(f"{op}: neither ok nor an error: {response}")

    def read_message(self, timeout: Optional[float]) -> Optional[Dict[str, Any]]:
        """The next line (after `watch`, an event) as a JSON object; None when faultd has
        closed the connection. RequestTimeoutError if nothing came within `timeout` seconds
        (None: wait as long as it takes)."""
        with self._lock:
            previous = self._sock.gettimeout()
            self._sock.settimeout(timeout)
            try:
                return self._read_message("watch")
            finally:
                self._sock.settimeout(previous)

    def _read_message(self, op: str) -> Optional[Dict[str, Any]]:
        line = self._read_line(op)
        if line is None:
            return None
        try:
            message = json.loads(line)
        except ValueError as e:
            raise ProtocolViolationError(f"{op}: not JSON: {line[:200]!r}") from e
        if not isinstance(message, dict):
            raise ProtocolViolationError(f"{op}: not a JSON object: {line[:200]!r}")
        return message

    def _read_line(self, op: str) -> Optional[bytes]:
        # Own buffering rather than makefile(): a timeout must leave a partial line intact.
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout as e:
                raise RequestTimeoutError(f"{op}: faultd did not answer in time") from e
            except OSError as e:
                raise ConnectionClosedError(f"{op}: the connection to faultd broke: {e}") from e
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def send_raw(self, data: bytes) -> None:
        """Writes bytes as they are (a malformed line, to see faultd's answer to it)."""
        with self._lock:
            self._sock.sendall(data)

    def close(self) -> None:
        self._sock.close()
