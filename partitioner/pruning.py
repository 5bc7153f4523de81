"""Drop the cuts that no bandwidth, RTT or latency/energy weighting could make the best.

The partitioner prunes with the policy's own cost model
(:func:`offload_policy.cost.decision_terms` for latency,
:mod:`offload_policy.energy` for energy), so a pruned cut is one the policy
would never have picked. For every operating point of a grid (uplink
bandwidth log-spaced over the configured range, each RTT, each radio) and
every setting the policy can choose (exit threshold, codec), the cost

    cost = latency + lambda x energy,  lambda in {0, 1e-4 .. 1e4 s/J, inf}

is minimised over the cuts. A cut only competes against cuts at least as
accurate under that setting (fewer exits active before it can mean higher
accuracy), so accuracy never pays for a pruning. A cut that wins nowhere is
pruned; the raw input (cloud-only) and the final output (edge-only) are
always kept as the baselines every comparison needs.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from edgesplit.bundle import Manifest, PrunedCut, PruningInfo
from edgesplit.errors import ConfigError
from offload_policy.cost import decision_terms
from offload_policy.energy import device_power, radio
from offload_policy.types import Decision


@dataclass(frozen=True)
class PruneConfig:
    """The operating range over which a cut must be optimal somewhere to be kept.

    Attributes:
        enabled: prune at all (``False`` keeps every candidate).
        bandwidth_mbps: lowest and highest uplink bandwidth, Mbit/s.
        bandwidth_points: log-spaced bandwidths in that range.
        rtt_s: round-trip times, seconds.
        radios: radio power models (``wifi``, ``lte``, ``3g``).
        device: the edge device power model.
        weightings: log-spaced latency/energy weightings between the extremes.
    """

    enabled: bool = True
    bandwidth_mbps: tuple[float, float] = (0.1, 1000.0)
    bandwidth_points: int = 80
    rtt_s: tuple[float, ...] = (0.0, 0.01, 0.05, 0.2)
    radios: tuple[str, ...] = ("wifi", "lte", "3g")
    device: str = "jetson-nano-10w"
    weightings: int = 33

    def __post_init__(self) -> None:
        low, high = self.bandwidth_mbps
        if not (0 < low <= high and math.isfinite(high)):
            raise ConfigError(
                f"bandwidth range {low}-{high} Mbit/s: expected 0 < low <= high, both finite"
            )
        if self.bandwidth_points < 1 or self.weightings < 1:
            raise ConfigError("bandwidth_points and weightings must be at least 1")
        if not self.rtt_s or any(r < 0 for r in self.rtt_s):
            raise ConfigError(f"rtt_s={self.rtt_s}: expected one or more values >= 0")
        for name in self.radios:
            radio(name)
        device_power(self.device)


@dataclass(frozen=True)
class PruneResult:
    """Which cuts stay, which go and why, and the conditions checked."""

    kept: tuple[str, ...]
    pruned: tuple[PrunedCut, ...]
    info: PruningInfo | None
    wins: dict[str, int]


def _settings(manifest: Manifest) -> list[tuple[float | None, str]]:
    thresholds: list[float | None] = [None]
    if manifest.calibration is not None:
        thresholds += list(manifest.calibration.thresholds)
    return [(t, codec) for t in thresholds for codec in manifest.codecs]


def prune(manifest: Manifest, config: PruneConfig) -> PruneResult:
    """Decide which of ``manifest``'s cuts to keep; ``manifest`` holds every candidate."""
    cuts = manifest.cuts
    ids = [c.id for c in cuts]
    info = PruningInfo(
        bandwidth_mbps=config.bandwidth_mbps,
        bandwidth_points=config.bandwidth_points,
        rtt_s=tuple(config.rtt_s),
        radios=tuple(config.radios),
        device=config.device,
        candidates=len(cuts),
    )
    if not config.enabled:
        return PruneResult(tuple(ids), (), None, {})
    bandwidth = np.geomspace(
        config.bandwidth_mbps[0] * 1e6, config.bandwidth_mbps[1] * 1e6, config.bandwidth_points
    )[:, None]
    lambdas = np.concatenate([[0.0], np.geomspace(1e-4, 1e4, config.weightings)])[:, None, None]
    device = device_power(config.device)
    wins: Counter[str] = Counter()
    for threshold, codec in _settings(manifest):
        terms = [decision_terms(manifest, Decision(c.id, threshold, codec)) for c in cuts]
        edge = np.array([t.edge_s for t in terms])
        p_off = np.array([t.p_offload for t in terms])
        sent = np.array([t.bytes for t in terms])
        cloud = np.array([t.cloud_s for t in terms])
        accuracy = np.array([t.accuracy for t in terms])
        accuracy = np.where(np.isnan(accuracy), 1.0, accuracy)
        transmit = sent * 8.0 / bandwidth  # [bandwidths, cuts]
        for rtt in config.rtt_s:
            latency = edge + p_off * (transmit + rtt + cloud)
            for name in config.radios:
                power = np.array([radio(name).uplink_power_w(b) for b in bandwidth[:, 0]])[:, None]
                energy = device.compute_w * edge + p_off * (
                    power * transmit + device.idle_w * (rtt + cloud)
                )
                cost = latency[None] + lambdas * energy[None]  # [weightings, bandwidths, cuts]
                costs = np.concatenate([cost, energy[None] + 1e-12 * latency[None]])
                for level in np.unique(accuracy):
                    eligible = accuracy >= level - 1e-12
                    masked = np.where(eligible, costs, np.inf)
                    for winner in np.unique(masked.argmin(axis=-1)):
                        wins[ids[int(winner)]] += 1
    always = {cuts[0].id, cuts[-1].id}
    kept = tuple(c.id for c in cuts if wins[c.id] > 0 or c.id in always)
    points = len(config.rtt_s) * len(config.radios) * config.bandwidth_points
    pruned = tuple(
        _explain(manifest, c.id, kept, wins, points, config) for c in cuts if c.id not in kept
    )
    return PruneResult(kept, pruned, info, dict(wins))


def _explain(
    manifest: Manifest,
    cut_id: str,
    kept: tuple[str, ...],
    wins: Counter[str],
    points: int,
    config: PruneConfig,
) -> PrunedCut:
    cut = manifest.cut(cut_id)
    winners = sorted((c for c in kept if wins[c] > 0), key=lambda c: (-wins[c], c))
    shallower = [c for c in kept if manifest.cut(c).index < cut.index]
    deeper = [c for c in kept if manifest.cut(c).index > cut.index]
    neighbours = [n for n in (shallower[-1:] + deeper[:1])]
    codec = min(cut.encoded_bytes, key=lambda k: cut.encoded_bytes[k], default=None)

    def figures(c_id: str) -> str:
        c = manifest.cut(c_id)
        terms = decision_terms(manifest, Decision(c_id, None, codec or manifest.codecs[0]))
        size = f"{terms.bytes:,.0f} B" if c.tail is not None else "nothing sent"
        return f"{c_id} head {terms.edge_s * 1e3:.3g} ms, {size}, tail {terms.cloud_s * 1e3:.3g} ms"

    low, high = config.bandwidth_mbps
    rtts = "/".join(f"{r * 1e3:g}" for r in config.rtt_s)
    reason = (
        f"never the best choice at {points} operating points ({low:g}-{high:g} Mbit/s, "
        f"RTT {rtts} ms, radios {'/'.join(config.radios)}, device {config.device}) under any "
        f"latency/energy weighting, exit threshold or codec. With {codec}: "
        + "; ".join(figures(c) for c in [cut_id, *neighbours])
    )
    return PrunedCut(
        id=cut.id,
        index=cut.index,
        tensors=tuple(t.tensor for t in cut.tensors),
        shapes=tuple(t.shape for t in cut.tensors),
        reason=reason,
        beaten_by=tuple(winners[:3]),
    )
