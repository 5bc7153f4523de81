"""The runtime configuration of the edge and cloud nodes: one TOML file, env, flags.

Every key is declared once, below, as a field of a frozen dataclass with its
help text and constraints in the field's metadata (:func:`setting`). Parsing,
validation, the commented default file (:meth:`Config.to_toml`) and the
reference page ``docs/config.md`` (:func:`config_reference_markdown`) all read
that one declaration, so they cannot drift apart.

Precedence, highest first: CLI flags, ``EDGESPLIT_<SECTION>_<KEY>`` environment
variables, the TOML file, the defaults. This module imports only the standard
library and :mod:`edgesplit.errors`, so every package may read a config.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import sys
import textwrap
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgesplit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

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
    """

    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    at_least: str | None = None
    off: bool = False
    example: str | None = None


def setting(default: Any, help: str, **constraints: Any) -> Any:
    """A dataclass field carrying its :class:`Setting` (help text and constraints)."""
    return field(default=default, metadata={"setting": Setting(help, **constraints)})


@dataclass(frozen=True)
class LoggingSection:
    """``[logging]``: how the nodes log."""

    level: str = setting(
        "info", "Lowest level logged.", choices=("debug", "info", "warning", "error")
    )
    format: str = setting("text", "One event a line, as text or JSON.", choices=("text", "json"))


@dataclass(frozen=True)
class MetricsSection:
    """``[metrics]``: the Prometheus endpoint."""

    port: int = setting(
        0, "Port of the Prometheus /metrics endpoint; 0 turns it off.", minimum=0, maximum=65535
    )
    address: str = setting("127.0.0.1", "Address the /metrics endpoint listens on.")


@dataclass(frozen=True)
class SecuritySection:
    """``[security]``: ZeroMQ CURVE encryption and authentication between the nodes."""

    curve: bool = setting(True, "Encrypt and authenticate every message with ZeroMQ CURVE.")
    insecure: bool = setting(
        False,
        "Must be true to turn CURVE off; even then only on a loopback endpoint "
        "(tcp://127.0.0.1, tcp://[::1], tcp://localhost, ipc://, inproc://).",
    )
    secret_key: Path | None = setting(
        None, "This node's CURVE key pair file.", example='"keys/node.key_secret"'
    )
    server_key: Path | None = setting(
        None, "Edge only: the cloud's public key file.", example='"keys/cloud.key"'
    )
    allowed_clients: Path | None = setting(
        None,
        "Cloud only: a directory of the public key files of allowed edges.",
        example='"keys/allowed"',
    )


@dataclass(frozen=True)
class CloudSection:
    """``[cloud]``: the cloud node, which runs the tails."""

    bundle: Path | None = setting(None, "The bundle directory to serve.", example='"bundle"')
    bind: str = setting("tcp://127.0.0.1:5555", "ZeroMQ endpoint the cloud listens on.")
    backend: str = setting("onnxruntime", "What runs the tails.", choices=("onnxruntime", "triton"))
    providers: tuple[str, ...] = setting(
        ("cpu",), "ONNX Runtime execution providers, in order of preference."
    )
    threads: int = setting(0, "ONNX Runtime intra-op threads; 0 lets it choose.", minimum=0)
    queue_size: int = setting(
        64, "Requests waiting for a batch before new ones are refused.", minimum=1
    )
    max_batch: int = setting(
        16,
        "Most rows in one backend call, and so in one request (a Triton tail's max_batch_size).",
        minimum=1,
        maximum=1024,
    )
    batch_window_ms: float = setting(
        0.0,
        "How long a worker waits for more requests of the same cut to batch, ms; 0 batches "
        "only what queued while the previous batch ran (no added latency).",
        minimum=0,
    )
    workers: int = setting(1, "Threads running backend calls.", minimum=1, maximum=256)
    triton_url: str = setting(
        "127.0.0.1:8001", "gRPC address of the Triton server (backend = triton)."
    )
    triton_timeout_ms: float = setting(
        10000.0, "Deadline of one Triton request, ms.", minimum=0, above=True
    )
    max_message_mb: float = setting(
        64.0, "Largest request accepted, MB (decompressed).", minimum=0, above=True
    )


@dataclass(frozen=True)
class EdgeSection:
    """``[edge]``: the edge node, which runs the heads and the policy."""

    bundle: Path | None = setting(None, "The bundle directory to run.", example='"bundle"')
    connect: str | None = setting(
        None,
        "ZeroMQ endpoint of the cloud; unset runs edge-only.",
        example='"tcp://127.0.0.1:5555"',
    )
    inputs: str = setting(
        "bundle",
        "Inputs to classify: bundle (its test set), a directory of .npy or image files, "
        "a video file, or camera:N.",
    )
    samples: int | None = setting(
        None, "Classify at most this many inputs; unset: all.", minimum=1, example="1000"
    )
    providers: tuple[str, ...] = setting(
        ("tensorrt", "cuda", "openvino", "cpu"),
        "ONNX Runtime execution providers, in order of preference; missing ones are skipped.",
    )
    threads: int = setting(0, "ONNX Runtime intra-op threads; 0 lets it choose.", minimum=0)
    timeout_ms: float = setting(
        1000.0,
        "Deadline for the cloud's reply, ms; then the edge finishes locally.",
        minimum=0,
        above=True,
    )
    backoff_ms: float = setting(
        500.0, "First wait before probing a cloud marked down, ms.", minimum=0, above=True
    )
    max_backoff_ms: float = setting(
        30000.0,
        "Longest wait between probes (the backoff doubles), ms.",
        minimum=0,
        above=True,
        at_least="backoff_ms",
    )
    pipeline_depth: int = setting(
        2, "Requests in flight to the cloud at once.", minimum=1, maximum=16
    )
    power: str = setting(
        "auto",
        "Where energy readings come from.",
        choices=("auto", "jetson", "power_supply", "rapl", "simulated"),
    )
    battery_capacity_wh: float = setting(
        20.0, "Battery capacity, watt-hours.", minimum=0, above=True
    )
    battery_level: float = setting(
        1.0, "Starting charge of the simulated battery, 0..1.", minimum=0, maximum=1
    )
    results: Path | None = setting(
        None, "Write one JSON line per request to this file.", example='"results.jsonl"'
    )
    engine_cache: Path | None = setting(
        None,
        "TensorRT/OpenVINO engine cache directory (created if missing): a Jetson builds each "
        "head's engine once instead of at every start.",
        example='"/var/cache/edgesplit/trt"',
    )
    fp16: bool = setting(False, "Let TensorRT run the heads in FP16.")


@dataclass(frozen=True)
class PolicySection:
    """``[policy]``: how the edge picks a cut, a threshold and a codec."""

    name: str = setting(
        "adaptive",
        "Adaptive re-decides as the link changes; fixed keeps its first decision.",
        choices=("adaptive", "fixed"),
    )
    cut: str = setting("auto", "Cut id (see `edgesplit show`), auto, or after-exits.")
    threshold: float | None = setting(
        0.9,
        "Early-exit confidence (max softmax); off disables the exits.",
        minimum=0,
        maximum=1,
        above=True,
        off=True,
    )
    codec: str = setting(
        "int8+lz4", "Tensor codec on the wire: raw, fp16 or int8, optionally +lz4 or +zstd."
    )
    slo_ms: float | None = setting(
        None, "Latency objective, ms; off: none.", minimum=0, above=True, off=True, example="50.0"
    )
    accuracy_floor: float = setting(
        0.0,
        "Lowest predicted accuracy the adaptive policy may choose, 0..1; 0: the accuracy the "
        "threshold gives on the edge-only path (so adapting never costs accuracy).",
        minimum=0,
        maximum=1,
    )
    bandwidth_mbps: float = setting(
        10.0,
        "Uplink bandwidth assumed until a transfer is measured, Mbit/s.",
        minimum=0,
        above=True,
    )
    estimator: str = setting(
        "harmonic",
        "Bandwidth estimator over measured transfers.",
        choices=("harmonic", "ewma", "last", "robust"),
    )
    radio: str = setting("wifi", "Radio power model of the uplink.", choices=("wifi", "lte", "3g"))
    device: str = setting("jetson-nano-10w", "Power model of the edge device.")


SECTIONS: dict[str, type] = {
    "logging": LoggingSection,
    "metrics": MetricsSection,
    "security": SecuritySection,
    "cloud": CloudSection,
    "edge": EdgeSection,
    "policy": PolicySection,
}
"""Section name -> its dataclass, in the order of the file and the docs."""


@dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen section each, plus where every value came from."""

    logging: LoggingSection = field(default_factory=LoggingSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    security: SecuritySection = field(default_factory=SecuritySection)
    cloud: CloudSection = field(default_factory=CloudSection)
    edge: EdgeSection = field(default_factory=EdgeSection)
    policy: PolicySection = field(default_factory=PolicySection)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def source_of(self, section: str, key: str) -> str:
        """Where ``section.key`` came from: ``default``, ``file PATH``, ``env NAME`` or ``flag``."""
        _key(section, key, f"{section}.{key}")
        return self.sources.get(f"{section}.{key}", "default")

    def to_toml(self) -> str:
        """This config as a TOML file, every key under its help; defaults are commented out.

        ``Config().to_toml()`` is the fully commented default file, and
        ``load_config`` of any config's ``to_toml()`` gives that config back.
        """
        lines = [
            "# edgesplit configuration. Precedence: flags > EDGESPLIT_<SECTION>_<KEY> env > this",
            "# file > defaults. Relative paths are resolved against this file's directory.",
            "# Keys left commented out keep their default (shown), or stay unset (an example).",
        ]
        for name, cls in SECTIONS.items():
            lines += ["", f"[{name}]", f"# {_summary(cls)}"]
            section = getattr(self, name)
            for key in _keys(cls):
                unset = "; unset by default" if key.default is None else ""
                lines += [
                    "#",
                    *textwrap.wrap(
                        f"{key.spec.help} ({key.expectation}{unset})",
                        width=88,
                        initial_indent="# ",
                        subsequent_indent="# ",
                    ),
                ]
                value = getattr(section, key.name)
                rendered = _toml_value(key, value)
                default = value == key.default
                lines.append(f"{'# ' if default else ''}{key.name} = {rendered}")
        return "\n".join(lines) + "\n"


def render_default_config() -> str:
    """The fully commented default config file (``edgesplit config --default``)."""
    return Config().to_toml()


# --- the keys, read from the dataclasses -------------------------------------------------


@dataclass(frozen=True)
class _Key:
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


def _summary(cls: type) -> str:
    """A section's docstring after its ``[name]:`` prefix."""
    text = (cls.__doc__ or "").split(": ", 1)[-1].strip()
    return text[:1].upper() + text[1:]


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


def _keys(cls: type) -> list[_Key]:
    hints = typing.get_type_hints(cls)
    keys = []
    for f in fields(cls):
        kind, args = hints[f.name], typing.get_args(hints[f.name])
        optional = type(None) in args
        if optional:
            kind = next(a for a in args if a is not type(None))
        base = typing.get_origin(kind) or kind
        default = f.default if f.default is not MISSING else None
        keys.append(_Key(f.name, base, optional, default, f.metadata["setting"]))
    return keys


def _key(section: str, key: str, where: str) -> _Key:
    """The declared key ``section.key``; ConfigError with a suggestion for an unknown one."""
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown section [{section}]{_suggest(section, SECTIONS)}")
    keys = {k.name: k for k in _keys(SECTIONS[section])}
    if key not in keys:
        raise ConfigError(f"{where}: [{section}] has no key {key}{_suggest(key, keys)}")
    return keys[key]


def _suggest(word: str, known: Any) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"


# --- values: parsed from text (env, flags) or coerced from TOML/Python values -------------


def _from_text(key: _Key, text: str) -> Any:
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


def _coerce(key: _Key, value: Any, base: Path | None) -> Any:
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


def _to_bool(key: _Key, value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _to_int(key: _Key, value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _to_float(key: _Key, value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _to_tuple(key: _Key, value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = _from_text(key, value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    return None


def _to_path(key: _Key, value: Any) -> Path | None:
    if isinstance(value, (str, Path)) and str(value).strip():
        return Path(value).expanduser()
    return None


def _to_str(key: _Key, value: Any) -> str | None:
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


def _toml_value(key: _Key, value: Any) -> str:
    """``value`` as TOML; an unset key as its example (or ``"off"``), to be commented out."""
    if value is None:
        return '"off"' if key.spec.off and key.default is not None else key.spec.example or '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_str(v) for v in value) + "]"
    return _toml_str(str(value))


def _toml_str(text: str) -> str:
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
        return _toml_str(value)
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
        key = _key(section, name, f"flag {dotted}")
        label = f"flag {dotted}={_shown(value)}"
        parsed = _from_text(key, value) if isinstance(value, str) else value
        layer.set(section, name, _checked(key, parsed, None, label), "flag", label)
    sections = {name: cls(**layer.values[name]) for name, cls in SECTIONS.items()}
    config = Config(**sections, sources=MappingProxyType(dict(layer.sources)))
    _check_relations(config, layer)
    return config


def _checked(key: _Key, value: Any, base: Path | None, label: str) -> Any:
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
            key = _key(section, name, str(path))
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
        key = _key(section, name, var)
        label = f"{var}={_toml_str(text)}"
        layer.set(
            section, name, _checked(key, _from_text(key, text), None, label), f"env {var}", label
        )


def _check_relations(config: Config, layer: _Layer) -> None:
    """Keys constrained by a sibling (``at_least``), named by the source of either."""
    for name, cls in SECTIONS.items():
        section = getattr(config, name)
        for key in _keys(cls):
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


# --- security ----------------------------------------------------------------------------


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


# --- docs --------------------------------------------------------------------------------


def config_reference_markdown() -> str:
    """``docs/config.md``: every section and key with its type, default, variable and help."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by edgesplit.config.config_reference_markdown(); "
        "tests/test_config.py checks that this file matches it. -->",
        "",
        "The edge and cloud nodes read one TOML file; `render_default_config()` in",
        "`edgesplit/config.py` writes a fully commented one. Every key can also be set by an",
        "environment variable `EDGESPLIT_<SECTION>_<KEY>` (lists comma-separated; an empty",
        "value unsets an optional key; an unknown key of a known section is an error) and by",
        "the command's flags. Precedence, highest first: flags, environment, file, defaults.",
        "Relative paths in the file are resolved against the file's directory; relative",
        "paths from the environment or flags against the working directory. Turning",
        "`security.curve` off needs `security.insecure = true` and a loopback endpoint.",
    ]
    for name, cls in SECTIONS.items():
        out += ["", f"## [{name}]", "", _summary(cls), ""]
        out += [
            "| key | values | default | environment variable | meaning |",
            "|---|---|---|---|---|",
        ]
        for key in _keys(cls):
            default = "unset" if key.default is None else f"`{_toml_value(key, key.default)}`"
            env = f"`{ENV_PREFIX}{name.upper()}_{key.name.upper()}`"
            cells = [f"`{key.name}`", key.expectation, default, env, key.spec.help]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"


__all__ = [
    "SECTIONS",
    "CloudSection",
    "Config",
    "EdgeSection",
    "LoggingSection",
    "MetricsSection",
    "PolicySection",
    "SecuritySection",
    "Setting",
    "check_security",
    "config_reference_markdown",
    "is_loopback",
    "load_config",
    "render_default_config",
    "setting",
]
