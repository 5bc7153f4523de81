"""Loading the configuration :mod:`edgesplit.config` declares: defaults < file < env < flags.

Values are parsed from text (env, flags) or coerced from TOML, checked against
each key's :class:`~edgesplit.settings.Setting` and layered by :func:`load_config`;
:func:`check_security` refuses plaintext ZeroMQ where it is not confined to this
machine.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType

from edgesplit.config import SECTIONS, Config, SecuritySection, declared_key
from edgesplit.errors import ConfigError
from edgesplit.settings import (
    ENV_PREFIX,
    Key,
    Value,
    coerce,
    from_text,
    keys_of,
    shown,
    suggest,
    toml_str,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass
class _Layer:
    """Values gathered so far: ``section -> key -> value``, with their source and label."""

    values: dict[str, dict[str, Value]] = field(
        default_factory=lambda: {s: {} for s in SECTIONS}
    )
    sources: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def set(self, section: str, key: str, value: Value, source: str, label: str) -> None:
        self.values[section][key] = value
        self.sources[f"{section}.{key}"] = source
        self.labels[f"{section}.{key}"] = label


def load_config(
    path: Path | None,
    *,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, object] | None = None,
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
        label = f"flag {dotted}={shown(value)}"
        parsed = from_text(key, value) if isinstance(value, str) else value
        layer.set(section, name, _checked(key, parsed, None, label), "flag", label)
    sections = {name: cls(**layer.values[name]) for name, cls in SECTIONS.items()}
    config = Config(**sections, sources=MappingProxyType(dict(layer.sources)))
    _check_relations(config, layer)
    return config


def _checked(key: Key, value: object, base: Path | None, label: str) -> Value:
    try:
        return coerce(key, value, base)
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
            hint = f"; put it under [{owners[0]}]" if owners else suggest(section, SECTIONS)
            raise ConfigError(f"{path}: {section} is outside any section{hint}")
        for name, value in table.items():
            key = declared_key(section, name, str(path))
            label = f"{path}: [{section}] {name} = {shown(value)}"
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
            raise ConfigError(f"{var}: no such setting{suggest(var, names)}")
        key = declared_key(section, name, var)
        label = f"{var}={toml_str(text)}"
        layer.set(
            section, name, _checked(key, from_text(key, text), None, label), f"env {var}", label
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
                f"{label}: {name}.{key.name}={shown(value)} must be >= "
                f"{name}.{other}={shown(getattr(section, other))}"
            )


def is_loopback(endpoint: str) -> bool:
    """Whether a ZeroMQ endpoint stays on this machine (ipc, inproc, or tcp to loopback)."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host, sep, port = endpoint[len("tcp://") :].rpartition(":")
    if not sep or not port:
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name, a wildcard, a source;destination pair


def check_security(endpoint: str, security: SecuritySection) -> None:
    """Refuse plaintext ZeroMQ unless asked for twice and confined to this machine.

    Raises:
        ConfigError: ``curve`` is off without ``insecure = true``, or off on an
            endpoint other machines can reach.
    """
    if security.curve:
        return
    if not security.insecure:
        raise ConfigError(
            f"{endpoint}: security.curve=false sends requests in plaintext; set "
            "security.insecure=true as well to confirm, or turn CURVE back on"
        )
    if not is_loopback(endpoint):
        raise ConfigError(
            f"{endpoint}: security.curve=false is allowed only on a loopback endpoint "
            "(tcp://127.0.0.1, tcp://[::1], tcp://localhost, ipc://, inproc://); "
            "turn CURVE on to use this endpoint"
        )


__all__ = ["check_security", "is_loopback", "load_config"]
