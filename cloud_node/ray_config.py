"""Where the Ray cluster is, and how the tail deployment is sized and scaled."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgesplit.errors import ConfigError

# The replica runs a request on its own event loop instead of handing it to a thread:
# ~0.25 ms less per call on a 2-core machine. The tail computes on that loop (it is
# CPU- or GPU-bound either way; Serve's health checks wait behind one batch at most).
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


@dataclass(frozen=True)
class RayTierConfig:
    """Where the Ray cluster is and how the tail deployment is sized and scaled.

    Attributes:
        address: ``None`` starts a local cluster in this process; ``auto`` joins
            the cluster running on this machine; ``HOST:PORT`` (the GCS address,
            port 6379 by default) or ``ray://HOST:PORT`` joins a remote one.
        num_cpus: CPUs of a local cluster (``None``: all cores). Ignored when joining.
        app: the Serve application's name; ingresses sharing it share the replicas.
        replica_cpus: CPUs reserved by each replica.
        replica_gpus: GPUs reserved by each replica (1: one replica per GPU).
        min_replicas: replicas kept when idle.
        max_replicas: most replicas under load; equal to ``min_replicas`` turns
            autoscaling off.
        target_ongoing_requests: Serve's autoscaling target per replica.
        max_ongoing_requests: most requests a replica holds at once.
        upscale_delay_s: how long the load must stay high before Serve adds a replica.
        downscale_delay_s: how long it must stay low before Serve removes one.
        backend: what a replica runs the tails with: ``onnxruntime`` (in-process)
            or ``triton`` (a Triton server reached at ``triton_url``).
        providers: ONNX Runtime execution providers of the replicas, in order.
        threads: ONNX Runtime intra-op threads per replica (0: one per reserved CPU,
            so replicas sharing a machine do not oversubscribe it).
        triton_url: Triton gRPC address seen from the replicas.
        triton_timeout_s: deadline of one Triton request.
        bundle_path: the bundle's path on the Ray nodes (default: the ingress's).
        start_timeout_s: longest wait for the cluster and the replicas to be ready.
        request_timeout_s: longest wait for one replica call; beyond it the
            request is answered ``busy``.
        temp_dir: Ray's session directory for a local cluster (default Ray's own).
    """

    address: str | None = None
    num_cpus: int | None = None
    app: str = "edgesplit"
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 1.5
    max_ongoing_requests: int = 2
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 60.0
    backend: str = "onnxruntime"
    providers: tuple[str, ...] = ("cpu",)
    threads: int = 0
    triton_url: str = "127.0.0.1:8001"
    triton_timeout_s: float = 10.0
    bundle_path: Path | None = None
    start_timeout_s: float = 90.0
    request_timeout_s: float = 10.0
    temp_dir: str | None = None
    replica_env: Mapping[str, str] = field(default_factory=lambda: dict(REPLICA_ENV))

    def __post_init__(self) -> None:
        if self.min_replicas < 1:
            raise ConfigError(f"ray min_replicas={self.min_replicas}: expected >= 1")
        if self.max_replicas < self.min_replicas:
            raise ConfigError(
                f"ray max_replicas={self.max_replicas} is below min_replicas={self.min_replicas}"
            )
        if self.replica_cpus < 0 or self.replica_gpus < 0:
            raise ConfigError("ray replica_cpus and replica_gpus must be >= 0")
        if self.replica_cpus == 0 and self.replica_gpus == 0:
            raise ConfigError("ray replica_cpus and replica_gpus are both 0: reserve something")
        if self.max_ongoing_requests < 1:
            raise ConfigError(
                f"ray max_ongoing_requests={self.max_ongoing_requests}: expected >= 1"
            )
        if self.backend not in ("onnxruntime", "triton"):
            raise ConfigError(f"ray backend={self.backend!r}: expected onnxruntime or triton")

    @property
    def autoscaling(self) -> bool:
        """Whether Serve's autoscaler sizes the deployment."""
        return self.max_replicas > self.min_replicas

    @property
    def replica_threads(self) -> int:
        """ONNX Runtime threads of a replica: ``threads``, or as many as its CPUs."""
        return self.threads or max(1, round(self.replica_cpus))

    @property
    def dispatchers(self) -> int:
        """Ingress threads needed to keep every replica at its most ongoing requests.

        Few on purpose: a replica computes one batch at a time, so one call in
        flight beside it hides the hop; the rest waits in the ingress queue, where
        it is batched by cut (and answered ``busy`` when full) instead of queueing
        one request at a time at the replicas.
        """
        return self.max_replicas * self.max_ongoing_requests


__all__ = ["REPLICA_ENV", "RayTierConfig"]
