"""How a setting is declared: its type, default, unit, help, constraints and flag.

Every key of the configuration is one field of a frozen section dataclass in
:mod:`edgesplit.config`, made with :func:`setting`: the field's name is the TOML
key, its annotation the type, its default the default, and its :class:`Setting`
the help text (with the unit), the constraints and the commands that take it as
a flag. Everything else follows from that one declaration: the environment
variable (``EDGESPLIT_<SECTION>_<KEY>``), the loader's checks
(:mod:`edgesplit.config_load`), the commented default file and ``docs/config.md``
(:mod:`edgesplit.config_render`) and the CLI's flags (``edgesplit.app.flags``).

This module holds what those share: the declaration, the keys read off a section
(:func:`keys_of`) and the parsing and checking of one value.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TypeVar

Value = bool | int | float | str | Path | tuple[str, ...] | None
"""A setting's value once checked (its declared type); what comes in unchecked is ``object``."""

T = TypeVar("T")

ENV_PREFIX = "EDGESPLIT_"
OFF_WORDS = ("off", "none")
"""Strings that unset a key marked ``off=True`` (e.g. ``threshold = "off"``)."""


@dataclass(frozen=True)
class Setting:
    """The help text and constraints of one config key (kept in the field's metadata).

    Attributes:
        help: one sentence for the default file and the docs, units included.
        choices: the allowed values of a string key.
        minimum: the smallest allowed number (inclusive unless ``above``).
        maximum: the largest allowed number (inclusive).
        above: ``minimum`` is exclusive (``> 0`` rather than ``>= 0``).
        at_least: the name of a sibling key this one must not be below.
        off: the strings ``"off"``/``"none"`` unset this key (``None``).
        example: a value (as TOML) shown commented out for a key unset by default.
        cli: the commands (``edge``, ``cloud``) that take this key as a flag.
        flag: the flag's name where it is not ``--`` and the key with dashes (a boolean
            key's is ``--key/--no-key``), e.g. ``--offer-fraction`` for ``fleet.fraction``.
    """

    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    at_least: str | None = None
    off: bool = False
    example: str | None = None
    cli: tuple[str, ...] = ()
    flag: str | None = None


def setting(
    default: T,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    above: bool = False,
    at_least: str | None = None,
    off: bool = False,
    example: str | None = None,
    cli: tuple[str, ...] = (),
    flag: str | None = None,
) -> T:
    """A dataclass field carrying its :class:`Setting` (help text, constraints, flag)."""
    spec = Setting(help, choices, minimum, maximum, above, at_least, off, example, cli, flag)
    declared: T = field(default=default, metadata={"setting": spec})
    return declared


@dataclass(frozen=True)
class Key:
    """One key as parsing needs it: name, base type, whether it may be unset, constraints."""

    name: str
    kind: type
    optional: bool
    default: Value
    spec: Setting

    @property
    def flag(self) -> str | None:
        """The flag that sets this key on the commands of ``spec.cli``; None if there is none."""
        if not self.spec.cli:
            return None
        if self.spec.flag:
            return self.spec.flag
        name = "--" + self.name.replace("_", "-")
        return f"{name}/--no-{name[2:]}" if self.kind is bool else name

    @property
    def expectation(self) -> str:
        """What a valid value looks like, for error messages and docs."""
        s = self.spec
        if s.choices:
            text = "one of " + ", ".join(s.choices)
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is Path:
            text = "a path"
        elif self.kind is tuple:
            text = "a non-empty list of strings"
        elif self.kind is str:
            text = "a non-empty string"
        else:
            text = ("an integer" if self.kind is int else "a number") + _range(s)
        if s.at_least:
            text += f" and >= {s.at_least}"
        return text + (', or "off"' if s.off else "")


def _range(s: Setting) -> str:
    if s.minimum is None and s.maximum is None:
        return ""
    lo, hi = _num(s.minimum), _num(s.maximum)
    if s.maximum is None:
        return f" {'>' if s.above else '>='} {lo}"
    if s.minimum is None:
        return f" <= {hi}"
    return f" in {'(' if s.above else '['}{lo}, {hi}]"


def _num(x: float | None) -> str:
    return f"{x:g}" if x is not None else ""


def keys_of(cls: type) -> list[Key]:
    """The keys of a section dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in fields(cls):
        kind, args = hints[f.name], typing.get_args(hints[f.name])
        optional = type(None) in args
        if optional:
            kind = next(a for a in args if a is not type(None))
        base = typing.get_origin(kind) or kind
        default = f.default if f.default is not MISSING else None
        keys.append(Key(f.name, base, optional, default, f.metadata["setting"]))
    return keys


def suggest(word: str, known: Iterable[str]) -> str:
    """``; did you mean X?`` for the closest of ``known``, else the list of them."""
    names = list(known)
    close = difflib.get_close_matches(word, names, n=1)
    return f"; did you mean {close[0]}?" if close else f"; known: {', '.join(names)}"


def from_text(key: Key, text: str) -> Value:
    """A string from the environment or a flag, as ``key``'s type (else the text itself)."""
    raw = text.strip()
    if key.optional and (raw == "" or (key.spec.off and raw.lower() in OFF_WORDS)):
        return None
    if key.kind is bool:
        words = {
            "true": True,
            "1": True,
            "yes": True,
            "on": True,
            "false": False,
            "0": False,
            "no": False,
            "off": False,
        }
        return words.get(raw.lower(), text)
    if key.kind is int:
        try:
            return int(raw)
        except ValueError:
            return text
    if key.kind is float:
        try:
            return float(raw)
        except ValueError:
            return text
    if key.kind is tuple:
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return raw


def coerce(key: Key, value: object, base: Path | None) -> Value:
    """``value`` as ``key``'s type, checked; raises ValueError with the expectation.

    ``base`` is the directory relative paths are resolved against (the file's).
    """
    if key.optional and (
        value is None
        or (key.spec.off and isinstance(value, str) and value.strip().lower() in OFF_WORDS)
    ):
        return None
    s = key.spec
    converted = _CONVERTERS[key.kind](key, value)
    if converted is None:
        raise ValueError(f"expected {key.expectation}")
    if isinstance(converted, (int, float)) and not isinstance(converted, bool):
        low_ok = s.minimum is None or (
            converted > s.minimum if s.above else converted >= s.minimum
        )
        if not low_ok or (s.maximum is not None and converted > s.maximum):
            raise ValueError(f"expected {key.expectation}")
    if isinstance(converted, Path) and base is not None and not converted.is_absolute():
        converted = base / converted
    return converted


def _to_bool(key: Key, value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _to_int(key: Key, value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _to_float(key: Key, value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _to_tuple(key: Key, value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = from_text(key, value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    return None


def _to_path(key: Key, value: object) -> Path | None:
    if isinstance(value, (str, Path)) and str(value).strip():
        return Path(value).expanduser()
    return None


def _to_str(key: Key, value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    if key.spec.choices:
        value = value.strip().lower()
        return value if value in key.spec.choices else None
    return value


_CONVERTERS: dict[type, Callable[[Key, object], Value]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    tuple: _to_tuple,
    Path: _to_path,
    str: _to_str,
}
"""Base type -> ``(key, value) -> converted value, or None when it does not fit``."""


def toml_str(text: str) -> str:
    """A TOML basic string (JSON's escapes, which TOML shares, for the characters needing one)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def shown(value: object) -> str:
    """A value as it appears in an error message: TOML-like, strings quoted."""
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return str(value)
