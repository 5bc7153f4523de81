"""Loading the config that :mod:`edgesplit.config` declares: file < env < flags.

The keys are read off the section dataclasses (:func:`keys_of`); values are
parsed from text (env, flags) or coerced from TOML, checked against each key's
:class:`~edgesplit.config.Setting`, and layered by :func:`load_config`.
:mod:`edgesplit.config_render` writes the same keys back out.

This module imports :mod:`edgesplit.config` (the declarations); that module
reaches back here only inside functions, so there is no import cycle.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgesplit.config import ENV_PREFIX, OFF_WORDS, SECTIONS, Config, Setting
from edgesplit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


# --- the keys, read from the dataclasses -------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One key as parsing needs it: name, base type, whether it may be unset, constraints."""

    name: str
    kind: type
    optional: bool
    default: Any
    spec: Setting

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


def declared_key(section: str, key: str, where: str) -> Key:
    """The declared key ``section.key``; ConfigError with a suggestion for an unknown one."""
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown section [{section}]{_suggest(section, SECTIONS)}")
    keys = {k.name: k for k in keys_of(SECTIONS[section])}
    if key not in keys:
        raise ConfigError(f"{where}: [{section}] has no key {key}{_suggest(key, keys)}")
    return keys[key]


def _suggest(word: str, known: Any) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"


# --- values: parsed from text (env, flags) or coerced from TOML/Python values -------------


def _from_text(key: Key, text: str) -> Any:
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


def _coerce(key: Key, value: Any, base: Path | None) -> Any:
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
    if key.kind in (int, float) and not (
        (s.minimum is None or (converted > s.minimum if s.above else converted >= s.minimum))
        and (s.maximum is None or converted <= s.maximum)
    ):
        raise ValueError(f"expected {key.expectation}")
    if key.kind is Path and base is not None and not converted.is_absolute():
        converted = base / converted
    return converted


def _to_bool(key: Key, value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _to_int(key: Key, value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _to_float(key: Key, value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _to_tuple(key: Key, value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = _from_text(key, value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    return None


def _to_path(key: Key, value: Any) -> Path | None:
    if isinstance(value, (str, Path)) and str(value).strip():
        return Path(value).expanduser()
    return None


def _to_str(key: Key, value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    if key.spec.choices:
        value = value.strip().lower()
        return value if value in key.spec.choices else None
    return value


_CONVERTERS: dict[type, Any] = {
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


def _shown(value: Any) -> str:
    """A value as it appears in an error message: TOML-like, strings quoted."""
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


# --- loading -----------------------------------------------------------------------------


@dataclass
class _Layer:
    """Values gathered so far: ``section -> key -> value``, with their source and label."""

    values: dict[str, dict[str, Any]] = field(default_factory=lambda: {s: {} for s in SECTIONS})
    sources: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def set(self, section: str, key: str, value: Any, source: str, label: str) -> None:
        self.values[section][key] = value
        self.sources[f"{section}.{key}"] = source
        self.labels[f"{section}.{key}"] = label


def load_config(
    path: Path | None,
    *,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read ``path`` (if any), then ``EDGESPLIT_<SECTION>_<KEY>`` from ``env``, then ``overrides``.

    Args:
        path: the TOML file; ``None`` for defaults, env and flags only.
        env: the environment (read at call time); variables named
            ``EDGESPLIT_<SECTION>_<KEY>`` of a known section are settings, and
            lists are comma-separated. Other variables are ignored.
        overrides: CLI flag values keyed ``"section.key"``; ``None`` values
            mean "not given" and are skipped.

    Raises:
        ConfigError: one line naming the source (file, variable or flag) and the
            key: a missing or malformed file, an unknown section or key (with a
            suggestion), or a value of the wrong type or out of range.
    """
    layer = _Layer()
    if path is not None:
        _read_file(path, layer)
    _read_env(env, layer)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, name = dotted.partition(".")
        key = declared_key(section, name, f"flag {dotted}")
        label = f"flag {dotted}={_shown(value)}"
        parsed = _from_text(key, value) if isinstance(value, str) else value
        layer.set(section, name, _checked(key, parsed, None, label), "flag", label)
    sections = {name: cls(**layer.values[name]) for name, cls in SECTIONS.items()}
    config = Config(**sections, sources=MappingProxyType(dict(layer.sources)))
    _check_relations(config, layer)
    return config


def _checked(key: Key, value: Any, base: Path | None, label: str) -> Any:
    try:
        return _coerce(key, value, base)
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def _read_file(path: Path, layer: _Layer) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    base = path.resolve().parent
    for section, table in data.items():
        if not isinstance(table, dict):
            owners = [s for s, cls in SECTIONS.items() if section in {f.name for f in fields(cls)}]
            hint = f"; put it under [{owners[0]}]" if owners else _suggest(section, SECTIONS)
            raise ConfigError(f"{path}: {section} is outside any section{hint}")
        for name, value in table.items():
            key = declared_key(section, name, str(path))
            label = f"{path}: [{section}] {name} = {_shown(value)}"
            layer.set(section, name, _checked(key, value, base, label), f"file {path}", label)


def _read_env(env: Mapping[str, str], layer: _Layer) -> None:
    for var, text in sorted(env.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :]
        section = next((s for s in SECTIONS if rest.startswith(s.upper() + "_")), None)
        if section is None:
            continue  # not a setting (EDGESPLIT_CACHE and the like)
        name = rest[len(section) + 1 :].lower()
        known = [f.name for f in fields(SECTIONS[section])]
        if name not in known:
            names = [f"{ENV_PREFIX}{section.upper()}_{k.upper()}" for k in known]
            raise ConfigError(f"{var}: no such setting{_suggest(var, names)}")
        key = declared_key(section, name, var)
        label = f"{var}={toml_str(text)}"
        layer.set(
            section, name, _checked(key, _from_text(key, text), None, label), f"env {var}", label
        )


def _check_relations(config: Config, layer: _Layer) -> None:
    """Keys constrained by a sibling (``at_least``), named by the source of either."""
    for name, cls in SECTIONS.items():
        section = getattr(config, name)
        for key in keys_of(cls):
            other = key.spec.at_least
            value = getattr(section, key.name)
            if other is None or value is None or value >= getattr(section, other):
                continue
            dotted = f"{name}.{key.name}"
            label = layer.labels.get(dotted) or layer.labels.get(f"{name}.{other}") or dotted
            raise ConfigError(
                f"{label}: {name}.{key.name}={_shown(value)} must be >= "
                f"{name}.{other}={_shown(getattr(section, other))}"
            )


__all__ = ["Key", "declared_key", "keys_of", "load_config", "toml_str"]
