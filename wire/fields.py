"""The scalar fields of a message: declared once on its dataclass, checked both ways.

A message's fields travel in the header's ``meta`` map under their own names.
Each field's type comes from its annotation (``str``, ``int``, ``float``, or
one of them ``| None``); its range, where it has one, from :func:`at_least`.
The same check runs on what is sent and on what is received: a field of the
wrong type or out of range is a :class:`FieldError` (a ``HeaderError``) that
names the kind and the field. A key a kind does not declare is ignored (its
size is bounded by ``Limits`` all the same); a declared key that is missing
takes the field's default; ``None`` is never sent.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgesplit.errors import HeaderError
from wire.header import MetaValue

_INT64_MIN = -(2**63)
_UINT64_END = 2**64


class FieldError(HeaderError):
    """A field of a message that has the wrong type or is out of range.

    Attributes:
        kind: the message's kind (``infer``, ``hello``...).
        field: the field's name, which is also its key in the header's ``meta``.
    """

    def __init__(self, kind: str, field: str, problem: str) -> None:
        super().__init__(f"{kind} field {field!r}: {problem}")
        self.kind = kind
        self.field = field


def at_least(minimum: float, default: Any = None, *, finite: bool = False) -> Any:
    """A dataclass field whose value is ``>= minimum`` (``finite``: and not inf).

    ``None`` is allowed only where the annotation says so.
    """
    return dataclasses.field(default=default, metadata={"minimum": minimum, "finite": finite})


@dataclass(frozen=True)
class FieldSpec:
    """How one field is checked: its name (and key), type, whether ``None`` is allowed, range."""

    name: str
    type: type
    optional: bool
    default: Any
    minimum: float | None = None
    finite: bool = False

    def check(self, kind: str, value: object) -> Any:
        """``value`` as this field holds it (an int as a float where a float is declared).

        Raises:
            FieldError: the wrong type, or out of range.
        """
        if value is None:
            if self.optional:
                return None
            raise FieldError(kind, self.name, f"must be {_NAMES[self.type]}, got None")
        if self.type is str:
            if not isinstance(value, str):
                raise self._wrong_type(kind, value)
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong_type(kind, value)
        if self.type is int:
            if not isinstance(value, int):
                raise self._wrong_type(kind, value)
            if not _INT64_MIN <= value < _UINT64_END:
                raise FieldError(kind, self.name, f"int value={value} does not fit in 64 bits")
            number: int | float = value
        else:
            number = float(value)
            if self.finite and not math.isfinite(number):
                raise FieldError(kind, self.name, f"must be finite, got {number}")
        if self.minimum is not None and not number >= self.minimum:
            raise FieldError(kind, self.name, f"must be >= {self.minimum:g}, got {number}")
        return number

    def _wrong_type(self, kind: str, value: object) -> FieldError:
        text = repr(value)
        shown = f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
        return FieldError(kind, self.name, f"must be {_NAMES[self.type]}, got {shown}")


_NAMES: dict[type, str] = {str: "a str", int: "an int", float: "a float"}


def field_specs(cls: type, skip: frozenset[str]) -> tuple[FieldSpec, ...]:
    """The specs of ``cls``'s dataclass fields, in declaration order, but those in ``skip``.

    Raises:
        TypeError: a field whose annotation is not ``str``, ``int``, ``float``,
            or one of them ``| None`` (a mistake in this package, found at import).
    """
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        optional = isinstance(hint, types.UnionType) and type(None) in hint.__args__
        if optional:
            (hint,) = (arg for arg in hint.__args__ if arg is not type(None))
        if hint not in _NAMES:
            raise TypeError(f"{cls.__name__}.{f.name}: a wire field is str, int or float")
        default = None if f.default is dataclasses.MISSING else f.default
        minimum = f.metadata.get("minimum")
        finite = bool(f.metadata.get("finite", False))
        specs.append(FieldSpec(f.name, hint, optional, default, minimum, finite))
    return tuple(specs)


def read_fields(
    kind: str, specs: tuple[FieldSpec, ...], meta: Mapping[str, MetaValue]
) -> dict[str, Any]:
    """The declared fields of a received ``meta`` map, checked; a missing one its default.

    Raises:
        FieldError: a field of the wrong type or out of range.
    """
    values: dict[str, Any] = {}
    for spec in specs:
        value = meta.get(spec.name)
        values[spec.name] = spec.default if value is None else spec.check(kind, value)
    return values


def write_fields(kind: str, specs: tuple[FieldSpec, ...], message: object) -> dict[str, MetaValue]:
    """The ``meta`` map of an outgoing message, checked; fields that are ``None`` left out.

    Raises:
        FieldError: a field of the wrong type or out of range.
    """
    meta: dict[str, MetaValue] = {}
    for spec in specs:
        value = spec.check(kind, getattr(message, spec.name))
        if value is not None:
            meta[spec.name] = value
    return meta
