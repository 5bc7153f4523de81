"""The runtime configuration of the edge and cloud nodes: one TOML file, env, flags.

Every key is declared once, below, as a field of a frozen dataclass with its
help text and constraints in the field's metadata (:func:`setting`). Parsing and
validation (:mod:`edgesplit.config_load`), the commented default file
(:meth:`Config.to_toml`) and the reference page ``docs/config.md``
(:func:`config_reference_markdown`, both :mod:`edgesplit.config_render`) all read
that one declaration, so they cannot drift apart.

Precedence, highest first: CLI flags, ``EDGESPLIT_<SECTION>_<KEY>`` environment
variables, the TOML file, the defaults. This module imports only the standard
library and :mod:`edgesplit.errors` (and, inside functions, the two modules above,
which import this one), so every package may read a config.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesplit.errors import ConfigError

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
    memory_budget_mb: float = setting(
        512.0,
        "Most memory ZeroMQ may hold for all clients together (unfinished or unread "
        "messages, unsent replies), MB; the largest clients are cut off beyond it.",
        minimum=0,
        above=True,
    )
    client_budget_mb: float = setting(
        64.0,
        "Most memory ZeroMQ may hold for one client, MB; a client beyond it is cut off, "
        "and a reply that would take it beyond is not sent.",
        minimum=0,
        above=True,
    )


@dataclass(frozen=True)
class RaySection:
    """``[ray]``: the tails in Ray Serve replicas (cloud --ray); [cloud] keeps the ingress."""

    enabled: bool = setting(False, "Run the tails on a Ray cluster instead of in-process.")
    address: str = setting(
        "local",
        "local starts a Ray cluster in the cloud process; auto joins the one running on "
        "this machine; HOST:PORT (or ray://HOST:PORT) joins a remote head.",
    )
    num_cpus: int | None = setting(
        None, "CPUs of a local cluster; unset: all cores.", minimum=1, example="2"
    )
    app: str = setting(
        "edgesplit", "Ray Serve application name; ingresses sharing it share the replicas."
    )
    replica_cpus: float = setting(1.0, "CPUs reserved by each replica.", minimum=0)
    replica_gpus: float = setting(
        0.0, "GPUs reserved by each replica (1: one replica per GPU).", minimum=0
    )
    min_replicas: int = setting(1, "Replicas kept when idle.", minimum=1)
    max_replicas: int = setting(
        1,
        "Most replicas under load; above min_replicas turns Serve's autoscaling on.",
        minimum=1,
        at_least="min_replicas",
    )
    target_ongoing_requests: float = setting(
        1.5, "Autoscaling target: ongoing requests per replica.", minimum=0, above=True
    )
    max_ongoing_requests: int = setting(
        2,
        "Most requests (batches) one replica holds at once; the ingress runs this many "
        "calls per replica, and the rest waits in its queue to be batched.",
        minimum=1,
        maximum=1024,
    )
    upscale_delay_s: float = setting(
        3.0, "Seconds the load must stay above target before a replica is added.", minimum=0
    )
    downscale_delay_s: float = setting(
        60.0, "Seconds the load must stay below target before a replica is removed.", minimum=0
    )
    bundle_path: Path | None = setting(
        None,
        "The bundle's path on the Ray nodes; unset: the same path as [cloud] bundle.",
        example='"/models/bundle"',
    )
    start_timeout_s: float = setting(
        90.0, "Longest wait for the cluster and the replicas to be ready.", minimum=0, above=True
    )
    request_timeout_s: float = setting(
        10.0,
        "Longest wait for one replica call; then the request is answered busy.",
        minimum=0,
        above=True,
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
    accuracy_floor: float | None = setting(
        None,
        "Lowest predicted accuracy the adaptive policy may choose, 0..1; unset: the whole "
        "model's accuracy less one point (no floor where the bundle's calibration has no "
        "labels); 0 allows any trade.",
        minimum=0,
        maximum=1,
        example="0.85",
    )
    bandwidth_mbps: float = setting(
        10.0,
        "Uplink bandwidth assumed until a transfer is measured, Mbit/s.",
        minimum=0,
        above=True,
    )
    estimator: str = setting(
        "tracked",
        "Bandwidth estimator over measured transfers.",
        choices=("tracked", "harmonic", "ewma", "last", "robust"),
    )
    radio: str = setting("wifi", "Radio power model of the uplink.", choices=("wifi", "lte", "3g"))
    device: str = setting("jetson-nano-10w", "Power model of the edge device.")
    corrections: bool = setting(
        True,
        "Feed measured head, tail and queue times back into the adaptive policy's "
        "predictions, so a device or cloud drifting from its profile moves the decision; "
        "false trusts the bundle's profile.",
    )


@dataclass(frozen=True)
class UpdateSection:
    """``[update]``: the edge's heartbeat to the cloud and over-the-air bundle updates."""

    enabled: bool = setting(
        True,
        "Take the bundle the cloud assigns (download, verify, switch, probation, rollback); "
        "false still reports to the fleet view but never changes bundle.",
    )
    state_dir: Path = setting(
        Path("~/.local/state/edgesplit"),
        "Where releases are downloaded, staged and committed (a restart serves the committed "
        "one); /var/lib/edgesplit under systemd.",
    )
    name: str | None = setting(
        None,
        "This edge's name in the fleet; unset: the host name. With CURVE the cloud names an "
        "edge by its key file's name instead.",
        example='"gate-3"',
    )
    verify_key: Path | None = setting(
        None,
        "Ed25519 public key (NAME.verify_key from `edgesplit keys --signing`): only releases "
        "signed with it are taken; unset: unsigned releases are taken (hashes still checked).",
        example='"keys/release.verify_key"',
    )
    interval_s: float = setting(
        10.0, "Seconds between heartbeats to the cloud.", minimum=0, above=True
    )
    probation_s: float = setting(
        60.0,
        "Seconds a new bundle serves, the old one kept loaded, before it is committed.",
        minimum=0,
        above=True,
    )
    min_requests: int = setting(
        20, "Requests on a new bundle before it is judged (and rolled back if worse).", minimum=1
    )
    max_error_increase: float = setting(
        0.05,
        "Rise of the error rate (fallbacks per request) that rolls a new bundle back.",
        minimum=0,
        maximum=1,
    )
    max_latency_ratio: float = setting(
        1.5,
        "Ratio of median latencies, new / old, that rolls a new bundle back.",
        minimum=1,
    )
    download_mbps: float | None = setting(
        None,
        "Most Mbit/s a release download may take, leaving the rest of a thin uplink to "
        "offloads; unset: as fast as the link goes.",
        minimum=0,
        above=True,
        off=True,
        example="2.0",
    )
    allow_downgrade: bool = setting(
        False,
        "Take a release older (a lower sequence) than the one this edge committed; off: such "
        "a release is refused as a rollback and reported in the fleet view.",
    )


@dataclass(frozen=True)
class FleetSection:
    """``[fleet]``: the cloud's fleet view and staged rollout of a new bundle release."""

    offer: Path | None = setting(
        None,
        "A full release archive (from `edgesplit release`, not its .edge.tar) to roll out; the "
        "cloud serves its tails beside the stable bundle's and offers edges its part without "
        "them.",
        example='"releases/resnet18-2.tar"',
    )
    fraction: float = setting(
        0.1,
        "Share of the edges offered the release (a stable hash of each edge's name); "
        "`edgesplit fleet rollout` changes it live.",
        minimum=0,
        maximum=1,
    )
    url: str | None = setting(
        None,
        "Where edges download the release's edge part (NAME.edge.tar from `edgesplit release`) "
        "instead of over ZeroMQ (an http or https URL).",
        example='"https://releases.example.com/resnet18-2.tar"',
    )
    stable_version: str | None = setting(
        None, "Label of the stable bundle in the fleet view; unset: its id.", example='"1"'
    )
    admins: tuple[str, ...] = setting(
        (),
        "CURVE key names allowed to change the rollout (`edgesplit fleet rollout`); with CURVE "
        "off, any local client may.",
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
        from edgesplit.config_load import declared_key

        declared_key(section, key, f"{section}.{key}")
        return self.sources.get(f"{section}.{key}", "default")

    def to_toml(self) -> str:
        """This config as a TOML file, every key under its help; defaults are commented out.

        ``Config().to_toml()`` is the fully commented default file, and
        ``load_config`` of any config's ``to_toml()`` gives that config back.
        """
        from edgesplit.config_render import config_to_toml

        return config_to_toml(self)


def render_default_config() -> str:
    """The fully commented default config file (``edgesplit config --default``)."""
    return Config().to_toml()


# --- loading and the docs: defined where they are implemented, re-exported here ------------


def load_config(
    path: Path | None,
    *,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read ``path`` (if any), then ``EDGESPLIT_<SECTION>_<KEY>`` from ``env``, then ``overrides``.

    See :func:`edgesplit.config_load.load_config` for the arguments and errors.
    """
    from edgesplit.config_load import load_config as load

    return load(path, env=env, overrides=overrides)


def config_reference_markdown() -> str:
    """``docs/config.md``: every section and key with its type, default, variable and help."""
    from edgesplit.config_render import config_reference_markdown as render

    return render()


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


__all__ = [
    "SECTIONS",
    "CloudSection",
    "Config",
    "EdgeSection",
    "FleetSection",
    "LoggingSection",
    "MetricsSection",
    "PolicySection",
    "SecuritySection",
    "UpdateSection",
    "Setting",
    "check_security",
    "config_reference_markdown",
    "is_loopback",
    "load_config",
    "render_default_config",
    "setting",
]
