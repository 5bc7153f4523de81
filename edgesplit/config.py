"""The configuration of the edge and cloud nodes: one TOML file, the environment, flags.

Every key is declared once, as a field of a frozen section dataclass made with
:func:`edgesplit.settings.setting` (type, default, unit and help, constraints, the
commands that take it as a flag): the shared sections here, the cloud's in
:mod:`edgesplit.config_cloud`, the edge's in :mod:`edgesplit.config_edge`.
Loading and checking (:mod:`edgesplit.config_load`), the commented default file
and ``docs/config.md`` (:mod:`edgesplit.config_render`) and the CLI's flags
(``edgesplit.app.flags``) all read that one declaration, so they cannot drift
apart; each runtime's frozen config is built from a :class:`Config` by one
function of the app layer.

Precedence, highest first: CLI flags, ``EDGESPLIT_<SECTION>_<KEY>`` environment
variables, the TOML file, the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgesplit.config_cloud import CloudSection, FleetSection, RaySection
from edgesplit.config_edge import EdgeSection, PolicySection, UpdateSection
from edgesplit.errors import ConfigError
from edgesplit.settings import Key, keys_of, setting, suggest


@dataclass(frozen=True)
class LoggingSection:
    """``[logging]``: how the nodes log."""

    level: str = setting(
        "info",
        "Lowest level logged.",
        choices=("debug", "info", "warning", "error"),
        cli=("cloud", "edge"),
        flag="--log-level",
    )
    format: str = setting(
        "text",
        "One event a line, as text or JSON.",
        choices=("text", "json"),
        cli=("cloud", "edge"),
        flag="--log-format",
    )


@dataclass(frozen=True)
class MetricsSection:
    """``[metrics]``: the Prometheus endpoint."""

    port: int = setting(
        0,
        "Port of the Prometheus /metrics endpoint; 0 turns it off.",
        minimum=0,
        maximum=65535,
        cli=("cloud", "edge"),
        flag="--metrics-port",
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
        None,
        "This node's CURVE key pair file.",
        example='"keys/node.key_secret"',
        cli=("cloud", "edge", "fleet"),
    )
    server_key: Path | None = setting(
        None,
        "Edge only: the cloud's public key file.",
        example='"keys/cloud.key"',
        cli=("edge", "fleet"),
    )
    allowed_clients: Path | None = setting(
        None,
        "Cloud only: a directory of the public key files of allowed edges.",
        example='"keys/allowed"',
        cli=("cloud",),
    )


SECTIONS: dict[str, type] = {
    "logging": LoggingSection,
    "metrics": MetricsSection,
    "security": SecuritySection,
    "cloud": CloudSection,
    "ray": RaySection,
    "edge": EdgeSection,
    "policy": PolicySection,
    "update": UpdateSection,
    "fleet": FleetSection,
}
"""Section name -> its dataclass, in the order of the file and the docs."""


@dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen section each, plus where every value came from."""

    logging: LoggingSection = field(default_factory=LoggingSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    security: SecuritySection = field(default_factory=SecuritySection)
    cloud: CloudSection = field(default_factory=CloudSection)
    ray: RaySection = field(default_factory=RaySection)
    edge: EdgeSection = field(default_factory=EdgeSection)
    policy: PolicySection = field(default_factory=PolicySection)
    update: UpdateSection = field(default_factory=UpdateSection)
    fleet: FleetSection = field(default_factory=FleetSection)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def source_of(self, section: str, key: str) -> str:
        """Where ``section.key`` came from: ``default``, ``file PATH``, ``env NAME`` or ``flag``."""
        declared_key(section, key, f"{section}.{key}")
        return self.sources.get(f"{section}.{key}", "default")


def declared_key(section: str, key: str, where: str) -> Key:
    """The declared key ``section.key``; ConfigError with a suggestion for an unknown one."""
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown section [{section}]{suggest(section, SECTIONS)}")
    keys = {k.name: k for k in keys_of(SECTIONS[section])}
    if key not in keys:
        raise ConfigError(f"{where}: [{section}] has no key {key}{suggest(key, keys)}")
    return keys[key]


__all__ = [
    "SECTIONS",
    "CloudSection",
    "Config",
    "EdgeSection",
    "FleetSection",
    "LoggingSection",
    "MetricsSection",
    "PolicySection",
    "RaySection",
    "SecuritySection",
    "UpdateSection",
    "declared_key",
]
