"""The edge runtime's frozen config, built once from the typed sections of the configuration.

Every setting is declared once, in :mod:`edgesplit.config` (``[edge]``, ``[policy]``,
``[update]``), and checked there when the configuration is loaded. The runtime
takes two frozen values made from those sections by :func:`edge_config` and
:func:`update_config`, which convert units (ms to s, Mbit/s to bit/s) and resolve
what needs the machine (the host name, the verification key's file) in one place;
nothing is checked a second time. Tests, benchmarks and experiments may build the
values directly, with the defaults below.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgesplit.bundle import Manifest
from edgesplit.config import EdgeSection, PolicySection, UpdateSection
from edgesplit.release import load_verify_key
from offload_policy.cost import default_accuracy_floor

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


@dataclass(frozen=True)
class EdgeConfig:
    """How the edge node talks to the cloud and what it assumes.

    Attributes:
        timeout_s: deadline for the cloud's reply after sending, seconds.
        backoff_s: first pause after a cloud failure; doubles up to ``max_backoff_s``.
        max_backoff_s: longest pause before the cloud is probed again.
        bandwidth_bps: the uplink bandwidth assumed until one is measured.
        fixed_bandwidth: tell the policy ``bandwidth_bps`` always (no live estimate).
        rtt_s: the round-trip time the policy is told; ``None``: measured.
        estimator: bandwidth estimator (``tracked``, ``harmonic``, ``ewma``, ``last``,
            ``robust``).
        pipeline_depth: requests in flight at once in :meth:`EdgeNode.stream`.
        slo_s: latency objective passed to the policy (``None``: none).
        accuracy_floor: lowest expected accuracy the policy may choose.
        radio: radio power model for the energy attributed to transfers.
        device: device power model for the energy attributed to compute.
        power_interval_s: how often the power monitor is read, seconds.
        queue_memory_s: how long the cloud's reported queue delay is believed.
        corrections: feed measured head, tail and queue times back into the policy's
            predictions (:mod:`offload_policy.corrections`); off: trust the profile.
    """

    timeout_s: float = 1.0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    bandwidth_bps: float = 10e6
    fixed_bandwidth: bool = False
    rtt_s: float | None = None
    estimator: str = "tracked"
    pipeline_depth: int = 1
    slo_s: float | None = None
    accuracy_floor: float = 0.0
    radio: str = "wifi"
    device: str = "jetson-nano-10w"
    power_interval_s: float = 1.0
    queue_memory_s: float = 1.0
    corrections: bool = True


@dataclass(frozen=True)
class UpdateConfig:
    """How the edge takes updates.

    Attributes:
        state_dir: where releases are downloaded, staged and committed.
        name: this edge's name in the fleet (the CURVE key's name wins at the cloud).
        interval_s: seconds between heartbeats.
        probation_s: seconds a new bundle serves before it is committed.
        min_requests: requests on a new bundle (and of the old one's window) needed
            to judge it; a regression found with this many rolls back at once.
        max_error_increase: tolerated rise of the error rate (absolute, 0..1).
        max_latency_ratio: tolerated ratio of median latencies, new / old.
        verify_keys: Ed25519 public keys a release must be signed by; ``None``:
            signatures are not required (hashes are still checked).
        fetch_timeout_s: deadline of one chunk (or of the URL's connection), and of a
            heartbeat's answer, seconds.
        keep: committed bundles kept in the store (the current one included).
        accept: take assigned bundles; ``False`` only reports to the fleet view.
        base: the id of the bundle the edge is configured with; a commit records it,
            and a restart serves the committed bundle only while the configured one
            is still this (a newly deployed bundle wins over an older update).
        base_root: the configured bundle's directory: assigned back to it (a rollout
            stopped), the edge switches to it from there, without a download.
        download_bps: most bits per second a download may take (``None``: as fast as
            the link goes); on a thin uplink, leave room for the offloaded tensors.
        allow_downgrade: take a release older than the one committed (a lower
            sequence); off, such a release is refused as a rollback.
    """

    state_dir: Path
    name: str = "edge"
    interval_s: float = 10.0
    probation_s: float = 60.0
    min_requests: int = 20
    max_error_increase: float = 0.05
    max_latency_ratio: float = 1.5
    verify_keys: tuple[Ed25519PublicKey, ...] | None = None
    fetch_timeout_s: float = 10.0
    keep: int = 2
    accept: bool = True
    base: str = ""
    base_root: Path | None = None
    download_bps: float | None = None
    allow_downgrade: bool = False


def edge_config(
    edge: EdgeSection,
    policy: PolicySection,
    manifest: Manifest,
    *,
    rtt_s: float | None = None,
    fixed_bandwidth: bool = False,
) -> EdgeConfig:
    """The node's config from ``[edge]`` and ``[policy]``, for the bundle of ``manifest``.

    Args:
        edge: the ``[edge]`` section (durations in ms).
        policy: the ``[policy]`` section (bandwidth in Mbit/s, SLO in ms).
        manifest: the bundle served: with no ``accuracy_floor`` configured, the floor
            is its whole model's accuracy less one point.
        rtt_s: the round-trip time the policy is told; ``None``: measured.
        fixed_bandwidth: tell the policy the configured bandwidth throughout.
    """
    floor = policy.accuracy_floor
    return EdgeConfig(
        timeout_s=edge.timeout_ms / 1e3,
        backoff_s=edge.backoff_ms / 1e3,
        max_backoff_s=edge.max_backoff_ms / 1e3,
        bandwidth_bps=policy.bandwidth_mbps * 1e6,
        fixed_bandwidth=fixed_bandwidth,
        rtt_s=rtt_s,
        estimator=policy.estimator,
        pipeline_depth=edge.pipeline_depth,
        slo_s=None if policy.slo_ms is None else policy.slo_ms / 1e3,
        accuracy_floor=default_accuracy_floor(manifest) if floor is None else float(floor),
        radio=policy.radio,
        device=policy.device,
        corrections=policy.corrections,
    )


def update_config(update: UpdateSection, *, base: str, base_root: Path | None) -> UpdateConfig:
    """The updater's config from ``[update]``.

    Args:
        update: the ``[update]`` section (``download_mbps`` in Mbit/s; ``name`` unset:
            this machine's host name; ``verify_key`` a file, read here).
        base: the id of the bundle the edge is configured with.
        base_root: that bundle's directory.

    Raises:
        ConfigError: the verification key's file does not load.
    """
    return UpdateConfig(
        state_dir=update.state_dir.expanduser(),
        name=update.name or socket.gethostname(),
        interval_s=update.interval_s,
        probation_s=update.probation_s,
        min_requests=update.min_requests,
        max_error_increase=update.max_error_increase,
        max_latency_ratio=update.max_latency_ratio,
        verify_keys=None if update.verify_key is None else (load_verify_key(update.verify_key),),
        accept=update.enabled,
        base=base,
        base_root=base_root,
        download_bps=None if update.download_mbps is None else update.download_mbps * 1e6,
        allow_downgrade=update.allow_downgrade,
    )


__all__ = ["EdgeConfig", "UpdateConfig", "edge_config", "update_config"]
