"""How a cloud node listens, what it accepts and how it batches."""

from __future__ import annotations

from dataclasses import dataclass, field

import wire
from cloud_node.guard import GuardLimits
from edgesplit.errors import ConfigError
from edgesplit.security import KeyPair


@dataclass(frozen=True)
class CloudConfig:
    """How the cloud node listens, what it accepts and how it batches.

    Attributes:
        bind: ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:5555``.
        limits: wire limits applied to every incoming message.
        max_batch: most rows in one backend call, and so in one request.
        queue_size: most requests admitted and not yet running; beyond it
            the node answers ``busy`` at once.
        batch_window_s: how long a worker waits for more requests of the same
            cut before running a batch (0: merge only what is already queued).
        workers: threads running backend calls.
        poll_interval_s: how often the loop checks for a stop request.
        keys: this node's CURVE key pair; ``None`` serves plaintext (loopback
            only, checked by the caller).
        allowed: allowed client public keys (Z85) -> name; required with ``keys``.
        busy_retry_s: the least delay a ``busy`` reply announces when the backend
            itself could not take an admitted request (a Ray replica lost): the
            edge keeps its requests for that long.
        memory: what libzmq may hold for one client and for all together
            (``cloud_node.guard``); ``None`` turns the guard off.
        log_interval_s: at most one WARNING line per kind of refusal per interval
            (each refusal is counted in the metrics).
    """

    bind: str = "tcp://127.0.0.1:5555"
    limits: wire.Limits = field(default_factory=wire.Limits)
    max_batch: int = 16
    queue_size: int = 64
    batch_window_s: float = 0.0
    workers: int = 1
    poll_interval_s: float = 0.1
    keys: KeyPair | None = None
    allowed: dict[bytes, str] | None = None
    busy_retry_s: float = 0.5
    memory: GuardLimits | None = field(default_factory=GuardLimits)
    log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        for name, value in (
            ("max_batch", self.max_batch),
            ("queue_size", self.queue_size),
            ("workers", self.workers),
        ):
            if value < 1:
                raise ConfigError(f"cloud {name}={value}: expected >= 1")
        if not self.batch_window_s >= 0:
            raise ConfigError(f"cloud batch_window_s={self.batch_window_s}: expected >= 0")
        if self.keys is not None and not self.allowed:
            raise ConfigError("CURVE is on but no client key is allowed: give allowed clients")


__all__ = ["CloudConfig"]
