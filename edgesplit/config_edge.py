"""The edge's settings: ``[edge]`` (the node), ``[policy]``, ``[update]``.

Declared here, read through :class:`edgesplit.config.Config` (see :mod:`edgesplit.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgesplit.settings import setting


@dataclass(frozen=True)
class EdgeSection:
    """``[edge]``: the edge node, which runs the heads and the policy."""

    bundle: Path | None = setting(
        None, "The bundle directory to run.", example='"bundle"', cli=("edge",)
    )
    connect: str | None = setting(
        None,
        "ZeroMQ endpoint of the cloud; unset runs edge-only.",
        example='"tcp://127.0.0.1:5555"',
        cli=("edge", "fleet"),
    )
    inputs: str = setting(
        "bundle",
        "Inputs to answer: bundle (its test set), an .npz with one array per input name "
        "(and labels, optionally), a directory of .npy or image files, a video file, or "
        "camera:N.",
        cli=("edge",),
    )
    samples: int | None = setting(
        None,
        "Classify at most this many inputs; unset: all.",
        minimum=1,
        example="1000",
        cli=("edge",),
    )
    providers: tuple[str, ...] = setting(
        ("tensorrt", "cuda", "openvino", "cpu"),
        "ONNX Runtime execution providers, in order of preference; missing ones are skipped.",
        cli=("edge",),
    )
    threads: int = setting(
        0, "ONNX Runtime intra-op threads; 0 lets it choose.", minimum=0, cli=("edge",)
    )
    timeout_ms: float = setting(
        1000.0,
        "Deadline for the cloud's reply, ms; then the edge finishes locally.",
        minimum=0,
        above=True,
        cli=("edge",),
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
        2,
        "Requests in flight to the cloud at once.",
        minimum=1,
        maximum=16,
        cli=("edge",),
    )
    power: str = setting(
        "auto",
        "Where energy readings come from.",
        choices=("auto", "jetson", "power_supply", "rapl", "simulated"),
        cli=("edge",),
    )
    battery_capacity_wh: float = setting(
        20.0, "Battery capacity, watt-hours.", minimum=0, above=True
    )
    battery_level: float = setting(
        1.0,
        "Starting charge of the simulated battery, 0..1.",
        minimum=0,
        maximum=1,
        cli=("edge",),
    )
    results: Path | None = setting(
        None,
        "Write one JSON line per request to this file.",
        example='"results.jsonl"',
        cli=("edge",),
    )
    engine_cache: Path | None = setting(
        None,
        "TensorRT/OpenVINO engine cache directory (created if missing): a Jetson builds each "
        "head's engine once instead of at every start.",
        example='"/var/cache/edgesplit/trt"',
        cli=("edge",),
    )
    fp16: bool = setting(False, "Let TensorRT run the heads in FP16.", cli=("edge",))


@dataclass(frozen=True)
class PolicySection:
    """``[policy]``: how the edge picks a cut, a threshold and a codec."""

    name: str = setting(
        "adaptive",
        "Adaptive re-decides as the link changes; fixed keeps its first decision.",
        choices=("adaptive", "fixed"),
        cli=("edge",),
        flag="--policy",
    )
    cut: str = setting(
        "auto", "Cut id (see `edgesplit show`), auto, or after-exits.", cli=("edge",)
    )
    threshold: float | None = setting(
        0.9,
        "Early-exit confidence (max softmax); off disables the exits.",
        minimum=0,
        maximum=1,
        above=True,
        off=True,
        cli=("edge",),
    )
    codec: str = setting(
        "int8+lz4",
        "Tensor codec on the wire: raw, fp16 or int8, optionally +lz4 or +zstd.",
        cli=("edge",),
    )
    slo_ms: float | None = setting(
        None,
        "Latency objective, ms; off: none.",
        minimum=0,
        above=True,
        off=True,
        example="50.0",
        cli=("edge",),
    )
    accuracy_floor: float | None = setting(
        None,
        "Lowest predicted accuracy the adaptive policy may choose, 0..1; unset: the whole "
        "model's accuracy less one point (no floor where the bundle's calibration has no "
        "labels); 0 allows any trade.",
        minimum=0,
        maximum=1,
        example="0.85",
        cli=("edge",),
    )
    bandwidth_mbps: float = setting(
        10.0,
        "Uplink bandwidth assumed until a transfer is measured, Mbit/s.",
        minimum=0,
        above=True,
        cli=("edge",),
    )
    estimator: str = setting(
        "tracked",
        "Bandwidth estimator over measured transfers.",
        choices=("tracked", "harmonic", "ewma", "last", "robust"),
        cli=("edge",),
    )
    radio: str = setting("wifi", "Radio power model of the uplink.", choices=("wifi", "lte", "3g"))
    device: str = setting("jetson-nano-10w", "Power model of the edge device.")
    corrections: bool = setting(
        True,
        "Feed measured head, tail and queue times back into the adaptive policy's "
        "predictions, so a device or cloud drifting from its profile moves the decision; "
        "false trusts the bundle's profile.",
        cli=("edge",),
    )


@dataclass(frozen=True)
class UpdateSection:
    """``[update]``: the edge's heartbeat to the cloud and over-the-air bundle updates."""

    enabled: bool = setting(
        True,
        "Take the bundle the cloud assigns (download, verify, switch, probation, rollback); "
        "false still reports to the fleet view but never changes bundle.",
        cli=("edge",),
        flag="--updates/--no-updates",
    )
    state_dir: Path = setting(
        Path("~/.local/state/edgesplit"),
        "Where releases are downloaded, staged and committed (a restart serves the committed "
        "one); /var/lib/edgesplit under systemd.",
        cli=("edge",),
    )
    name: str | None = setting(
        None,
        "This edge's name in the fleet; unset: the host name. With CURVE the cloud names an "
        "edge by its key file's name instead.",
        example='"gate-3"',
        cli=("edge",),
    )
    verify_key: Path | None = setting(
        None,
        "Ed25519 public key (NAME.verify_key from `edgesplit keys --signing`): only releases "
        "signed with it are taken; unset: unsigned releases are taken (hashes still checked).",
        example='"keys/release.verify_key"',
        cli=("edge",),
    )
    interval_s: float = setting(
        10.0, "Seconds between heartbeats to the cloud.", minimum=0, above=True
    )
    probation_s: float = setting(
        60.0,
        "Seconds a new bundle serves, the old one kept loaded, before it is committed.",
        minimum=0,
        above=True,
        cli=("edge",),
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
        cli=("edge",),
    )
    allow_downgrade: bool = setting(
        False,
        "Take a release older (a lower sequence) than the one this edge committed; off: such "
        "a release is refused as a rollback and reported in the fleet view.",
        cli=("edge",),
    )
