"""The cloud's settings: ``[cloud]`` (the ingress and its tails), ``[ray]``, ``[fleet]``.

Declared here, read through :class:`edgesplit.config.Config` (see :mod:`edgesplit.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgesplit.settings import setting


@dataclass(frozen=True)
class CloudSection:
    """``[cloud]``: the cloud node, which runs the tails."""

    bundle: Path | None = setting(
        None, "The bundle directory to serve.", example='"bundle"', cli=("cloud",)
    )
    bind: str = setting(
        "tcp://127.0.0.1:5555", "ZeroMQ endpoint the cloud listens on.", cli=("cloud",)
    )
    backend: str = setting(
        "onnxruntime", "What runs the tails.", choices=("onnxruntime", "triton"), cli=("cloud",)
    )
    providers: tuple[str, ...] = setting(
        ("cpu",),
        "ONNX Runtime execution providers, in order of preference.",
        cli=("cloud",),
    )
    threads: int = setting(
        0, "ONNX Runtime intra-op threads; 0 lets it choose.", minimum=0, cli=("cloud",)
    )
    queue_size: int = setting(
        64,
        "Requests waiting for a batch before new ones are refused.",
        minimum=1,
        cli=("cloud",),
    )
    max_batch: int = setting(
        16,
        "Most rows in one backend call, and so in one request (a Triton tail's max_batch_size).",
        minimum=1,
        maximum=1024,
        cli=("cloud",),
    )
    batch_window_ms: float = setting(
        0.0,
        "How long a worker waits for more requests of the same cut to batch, ms; 0 batches "
        "only what queued while the previous batch ran (no added latency).",
        minimum=0,
        cli=("cloud",),
    )
    workers: int = setting(
        1, "Threads running backend calls.", minimum=1, maximum=256, cli=("cloud",)
    )
    triton_url: str = setting(
        "127.0.0.1:8001",
        "gRPC address of the Triton server (backend = triton).",
        cli=("cloud",),
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
    replica_cpus: float = setting(1.0, "CPUs reserved by each replica.", minimum=0, cli=("cloud",))
    replica_gpus: float = setting(
        0.0,
        "GPUs reserved by each replica (1: one replica per GPU).",
        minimum=0,
        cli=("cloud",),
    )
    min_replicas: int = setting(1, "Replicas kept when idle.", minimum=1, cli=("cloud",))
    max_replicas: int = setting(
        1,
        "Most replicas under load; above min_replicas turns Serve's autoscaling on.",
        minimum=1,
        at_least="min_replicas",
        cli=("cloud",),
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
class FleetSection:
    """``[fleet]``: the cloud's fleet view and staged rollout of a new bundle release."""

    offer: Path | None = setting(
        None,
        "A full release archive (from `edgesplit release`, not its .edge.tar) to roll out; the "
        "cloud serves its tails beside the stable bundle's and offers edges its part without "
        "them.",
        example='"releases/resnet18-2.tar"',
        cli=("cloud",),
    )
    fraction: float = setting(
        0.1,
        "Share of the edges offered the release (a stable hash of each edge's name); "
        "`edgesplit fleet rollout` changes it live.",
        minimum=0,
        maximum=1,
        cli=("cloud",),
        flag="--offer-fraction",
    )
    url: str | None = setting(
        None,
        "Where edges download the release's edge part (NAME.edge.tar from `edgesplit release`) "
        "instead of over ZeroMQ (an http or https URL).",
        example='"https://releases.example.com/resnet18-2.tar"',
        cli=("cloud",),
        flag="--offer-url",
    )
    stable_version: str | None = setting(
        None,
        "Label of the stable bundle in the fleet view; unset: its id.",
        example='"1"',
        cli=("cloud",),
    )
    admins: tuple[str, ...] = setting(
        (),
        "CURVE key names allowed to change the rollout (`edgesplit fleet rollout`); with CURVE "
        "off, any local client may.",
        cli=("cloud",),
        flag="--fleet-admins",
    )
