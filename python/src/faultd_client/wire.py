"""The dataclass <-> JSON mapping every spec and view type shares.

Each type is a dataclass whose fields are its wire keys (`wire_field` renames or nests one) and
whose last field, `extra`, keeps the keys this client does not know: a newer faultd's fields
survive a decode and come back out of `to_wire()` unchanged. Values stay as JSON gave them
(an int stays an int), so decoding and re-encoding a line gives the same JSON.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Type, TypeVar

from .errors import ProtocolViolationError

W = TypeVar("W", bound="Wire")
Decoder = Callable[[Any], Any]


def wire_field(default: Any = dataclasses.MISSING, *, key: Optional[str] = None,
               of: Optional[Decoder] = None, nullable: bool = False,
               omit_empty: bool = False, factory: Any = dataclasses.MISSING) -> Any:
    """A field with wire metadata: `key` its JSON name when that is not a Python name,
    `of` how to decode a nested value, `nullable` to write None as null instead of leaving
    the key out, `omit_empty` to leave out an empty list (faultd omits them)."""
    metadata = {"key": key, "of": of, "nullable": nullable, "omit_empty": omit_empty}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def extra_field() -> Any:
    """The last field of every wire type: what the client does not know, kept."""
    return dataclasses.field(default_factory=dict, repr=False, compare=False)


class Wire:
    """Base of the wire dataclasses (see the module's comment)."""

    extra: Dict[str, Any]

    @classmethod
    def from_wire(cls: Type[W], data: Any) -> W:
        if not isinstance(data, Mapping):
            raise ProtocolViolationError(f"{cls.__name__}: expected a JSON object, got {data!r}")
        known: Dict[str, Any] = {}
        used = set()
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            key = f.metadata.get("key") or f.name
            if key not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ProtocolViolationError(f"{cls.__name__}: missing {key!r} in {data!r}")
                continue
            used.add(key)
            value = data[key]
            decode = f.metadata.get("of")
            known[f.name] = decode(value) if decode is not None and value is not None else value
        extra = {k: v for k, v in data.items() if k not in used}
        return cls(**known, extra=extra)  # type: ignore[call-arg]

    def to_wire(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and not f.metadata.get("nullable"):
                continue
            if f.metadata.get("omit_empty") and isinstance(value, (list, tuple)) and not value:
                continue
            out[f.metadata.get("key") or f.name] = encode(value)
        out.update(self.extra)
        return out


def encode(value: Any) -> Any:
    """Plain JSON values for wire objects, lists and dicts of them."""
    if isinstance(value, Wire):
        return value.to_wire()
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def list_of(decode: Decoder) -> Decoder:
    def decode_list(values: Any) -> List[Any]:
        if not isinstance(values, list):
            raise ProtocolViolationError(f"expected a JSON array, got {values!r}")
        return [decode(v) for v in values]
    return decode_list


def dict_of(decode: Decoder) -> Decoder:
    def decode_dict(values: Any) -> Dict[str, Any]:
        if not isinstance(values, Mapping):
            raise ProtocolViolationError(f"expected a JSON object, got {values!r}")
        return {k: decode(v) for k, v in values.items()}
    return decode_dict
