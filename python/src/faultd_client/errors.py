"""Errors: one class per stable error code of faultd (docs/protocol.md §7), and the client's own.

Match on the class (or on `code`), never on `message`, which is for people.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Type


class FaultlineError(Exception):
    """Base of every error this package raises."""


class FaultdError(FaultlineError):
    """faultd refused a request. `code` is the stable code, `field` the offending input's path
    (e.g. ``fault.target.match.dst[0]``) when faultd could point at one, `op` the refused op.
    Any refusal means the request changed nothing."""

    code = "unknown"

    def __init__(self, message: str, field: Optional[str] = None, op: Optional[str] = None,
                 code: Optional[str] = None) -> None:
        self.message = message
        self.field = field
        self.op = op
        if code is not None:
            # A code this client does not know yet (a newer faultd): kept as faultd sent it.
            self.code = code
        where = f" (field {field})" if field else ""
        refused = f"faultd refused {op}" if op else "faultd refused the request"
        super().__init__(f"{refused}: {self.code}: {message}{where}")

    def to_wire(self) -> Dict[str, Any]:
        """The protocol's error object."""
        error: Dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return error


class ParseError(FaultdError):
    code = "parse_error"


class InvalidRequestError(FaultdError):
    code = "invalid_request"


class UnknownOpError(FaultdError):
    code = "unknown_op"


class InvalidValueError(FaultdError):
    code = "invalid_value"


class NotFoundError(FaultdError):
    code = "not_found"


class NetnsNotFoundError(FaultdError):
    code = "netns_not_found"


class DeviceNotFoundError(FaultdError):
    code = "device_not_found"


class UnsupportedError(FaultdError):
    """The kernel lacks a capability the fault needs; `capability` names it (as `hello`'s
    `capabilities` do), parsed from faultd's message "this kernel lacks NAME: why"."""

    code = "unsupported"

    @property
    def capability(self) -> Optional[str]:
        found = re.search(r"lacks (\w+)", self.message)
        return found.group(1) if found else None


class LimitExceededError(FaultdError):
    code = "limit_exceeded"


class ConflictError(FaultdError):
    code = "conflict"


class LineTooLongError(FaultdError):
    code = "line_too_long"


class ForbiddenError(FaultdError):
    code = "forbidden"


class BusyError(FaultdError):
    """A connection limit of faultd's: too many connections, or this one idled too long. The
    connection is closed; trying again later may succeed."""

    code = "busy"


class KernelError(FaultdError):
    code = "kernel_error"


class InternalError(FaultdError):
    code = "internal"


ERRORS: Mapping[str, Type[FaultdError]] = {
    cls.code: cls
    for cls in (ParseError, InvalidRequestError, UnknownOpError, InvalidValueError,
                NotFoundError, NetnsNotFoundError, DeviceNotFoundError, UnsupportedError,
                LimitExceededError, ConflictError, LineTooLongError, ForbiddenError, BusyError,
                KernelError, InternalError)
}


def error_from_wire(error: Any, op: Optional[str] = None) -> FaultdError:
    """The exception for a response's `error` object."""
    if not isinstance(error, Mapping):
        raise ProtocolViolationError(f"an error response without an error object: {error!r}")
    code = str(error.get("code"))
    message = str(error.get("message", ""))
    field = error.get("field")
    field = None if field is None else str(field)
    cls = ERRORS.get(code)
    if cls is None:
        return FaultdError(message, field, op, code=code)
    return cls(message, field, op)


class ClientError(FaultlineError):
    """Something went wrong on this side of the socket, not a refusal by faultd."""


class UnreachableError(ClientError):
    """faultd cannot be reached: no socket, permission denied, or the ssh forward failed."""


class ConnectionClosedError(ClientError):
    """faultd closed the connection (or it broke) before answering. Faults leased to the
    connection ended with it."""


class RequestTimeoutError(ClientError):
    """faultd did not answer in time. The request may still be carried out."""


class ProtocolViolationError(ClientError):
    """faultd sent something that is not a protocol response."""
