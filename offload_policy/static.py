"""Policies that do not adapt: a fixed decision, and the best cut for one bandwidth."""

from __future__ import annotations

from dataclasses import dataclass

from edgesplit.bundle import Manifest
from edgesplit.errors import PolicyError
from offload_policy.cost import predict
from offload_policy.types import Decision, Observation, Prediction


@dataclass(frozen=True)
class FixedPolicy:
    """Always the same decision; the cloud's absence sends it edge-only.

    Follows the policy protocol ``decide(observation, state, now) -> (decision, state)``
    so that adaptive policies can replace it without changing the caller.
    """

    decision: Decision
    edge_only: str
    name: str = "fixed"

    def initial_state(self) -> None:
        """No state: the decision never changes."""
        return None

    def decide(self, observation: Observation, state: None, now: float) -> tuple[Decision, None]:
        """The fixed decision, or edge-only while the cloud is unavailable."""
        if not observation.cloud_available:
            return Decision(
                self.edge_only, self.decision.exit_threshold, self.decision.codec
            ), state
        return self.decision, state


def rank_cuts(
    manifest: Manifest, observation: Observation, codec: str, threshold: float | None
) -> list[tuple[str, Prediction]]:
    """Every cut with its prediction, fastest first (ties: shallower cut first)."""
    ranked = [
        (cut.id, predict(manifest, Decision(cut.id, threshold, codec), observation))
        for cut in manifest.cuts
    ]
    return sorted(ranked, key=lambda item: (item[1].latency_s, manifest.cut(item[0]).index))


def best_static_decision(
    manifest: Manifest, observation: Observation, codec: str, threshold: float | None
) -> Decision:
    """The latency-optimal cut for one assumed observation (Neurosurgeon-style)."""
    if codec not in manifest.codecs:
        raise PolicyError(
            f"codec={codec!r} was not measured for this bundle; measured: {list(manifest.codecs)}"
        )
    cut_id, _ = rank_cuts(manifest, observation, codec, threshold)[0]
    return Decision(cut_id, threshold, codec)
