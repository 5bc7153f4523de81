"""The policies the experiments compare, built by name for a bundle.

The simulator (:mod:`experiments.simulate`) and the real-link worker
(:mod:`experiments.worker`) both build their policies here, so a name means
the same policy in both.
"""

from __future__ import annotations

from edgesplit.bundle import Manifest
from edgesplit.errors import ConfigError
from offload_policy.adaptive import AdaptivePolicy, PolicyConfig
from offload_policy.baselines import Edgent, cloud_only, edge_only, neurosurgeon
from offload_policy.types import Policy

POLICIES = ("edgesplit", "oracle", "neurosurgeon", "edgent", "edge-only", "cloud-only")


def named_policy(
    name: str,
    manifest: Manifest,
    config: PolicyConfig,
    *,
    mean_bandwidth_bps: float | None = None,
    rtt_s: float = 0.0,
    deadline_s: float | None = None,
) -> Policy:
    """The policy ``name`` (one of :data:`POLICIES`) for this bundle.

    Neurosurgeon plans its static cut for ``mean_bandwidth_bps`` and
    ``rtt_s``; Edgent meets ``deadline_s``. The simulator and the real-link
    worker (experiments/worker.py) both build their policies here.
    """
    if name == "edgesplit":
        return AdaptivePolicy(manifest, config)
    if name == "oracle":
        return AdaptivePolicy(manifest, config, oracle=True)
    if name == "edge-only":
        return edge_only(manifest)
    if name == "cloud-only":
        return cloud_only(manifest)
    if name == "neurosurgeon":
        if mean_bandwidth_bps is None:
            raise ConfigError("neurosurgeon: needs the mean bandwidth it plans its cut for")
        return neurosurgeon(manifest, mean_bandwidth_bps, rtt_s)
    if name == "edgent":
        if deadline_s is None:
            raise ConfigError("edgent: needs the deadline it meets")
        return Edgent(manifest, deadline_s)
    raise ConfigError(f"--policy {name}: unknown; choose from {', '.join(POLICIES)}")


__all__ = ["POLICIES", "Policy", "named_policy"]
