"""The field's baselines behind the policy interface ``decide(observation, state, now)``.

- edge-only: the whole model on the device, no exits;
- cloud-only: the raw input sent, the whole model in the cloud;
- Neurosurgeon (Kang et al., ASPLOS 2017): the latency-optimal static cut for
  the mean bandwidth, no exits, chosen once;
- Edgent (Li et al., 2018): per request, the cut and exit setting with the
  best accuracy that meets the deadline at the estimated bandwidth, else the
  fastest; edgesplit's exits are confidence thresholds, so Edgent's
  "exit point" is played by the threshold.

The oracle is :class:`offload_policy.adaptive.AdaptivePolicy` with
``oracle=True`` fed the true bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgesplit.bundle import Manifest
from edgesplit.errors import PolicyError
from offload_policy.table import DecisionTable
from offload_policy.types import Decision, Observation


@dataclass(frozen=True)
class StaticPolicy:
    """One decision always; edge-only while the cloud is unavailable."""

    name: str
    decision: Decision
    edge_only: Decision

    def initial_state(self) -> None:
        """No state."""
        return None

    def decide(self, observation: Observation, state: None, now: float) -> tuple[Decision, None]:
        """The fixed decision (edge-only when the cloud is down)."""
        if not observation.cloud_available:
            return self.edge_only, state
        return self.decision, state


def _lossless(manifest: Manifest, cut_id: str) -> str:
    cut = manifest.cut(cut_id)
    lossless = [c for c in manifest.codecs if c.startswith("raw")]
    if not lossless:
        raise PolicyError("the bundle measured no lossless codec (raw, raw+lz4, raw+zstd)")
    return min(lossless, key=lambda c: cut.bytes_for(c))


def edge_only(manifest: Manifest) -> StaticPolicy:
    """The whole model on the device, exits off."""
    decision = Decision(manifest.edge_only.id, None, manifest.codecs[0])
    return StaticPolicy("edge-only", decision, decision)


def cloud_only(manifest: Manifest, codec: str | None = None) -> StaticPolicy:
    """The raw input to the cloud (losslessly compressed by default)."""
    cut = manifest.cloud_only.id
    decision = Decision(cut, None, codec or _lossless(manifest, cut))
    return StaticPolicy("cloud-only", decision, Decision(manifest.edge_only.id, None, "raw"))


def neurosurgeon(
    manifest: Manifest, mean_bandwidth_bps: float, rtt_s: float, codec: str = "raw"
) -> StaticPolicy:
    """The latency-optimal static cut for the mean bandwidth, exits off, raw tensors."""
    table = DecisionTable.build(manifest, thresholds=[None], codecs=[codec])
    best = int(np.argmin(table.latency(mean_bandwidth_bps, rtt_s)))
    return StaticPolicy(
        "neurosurgeon", table.decisions[best], Decision(manifest.edge_only.id, None, codec)
    )


class Edgent:
    """Best accuracy within the deadline at the estimated bandwidth; raw tensors."""

    name = "edgent"

    def __init__(self, manifest: Manifest, deadline_s: float, codec: str = "raw") -> None:
        if not deadline_s > 0:
            raise PolicyError(f"edgent deadline_s={deadline_s}: expected > 0")
        self.deadline_s = deadline_s
        self.table = DecisionTable.build(manifest, codecs=[codec])

    def initial_state(self) -> None:
        """No state."""
        return None

    def decide(self, observation: Observation, state: None, now: float) -> tuple[Decision, None]:
        """The most accurate decision meeting the deadline, else the fastest."""
        t = self.table
        latency = t.latency(observation.bandwidth_bps, observation.rtt_s, observation.cloud_queue_s)
        allowed = np.ones(len(t), dtype=bool) if observation.cloud_available else t.edge_only
        timely = allowed & (latency <= (observation.slo_s or self.deadline_s))
        if timely.any():
            accuracy = np.where(timely, t.accuracy, -np.inf)
            best_accuracy = accuracy.max()
            pick = np.where(accuracy >= best_accuracy - 1e-12, latency, np.inf)
            return t.decisions[int(np.argmin(pick))], state
        return t.decisions[int(np.argmin(np.where(allowed, latency, np.inf)))], state
