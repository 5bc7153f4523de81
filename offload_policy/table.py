"""Every decision a bundle allows, with its link-independent terms, as arrays.

A policy evaluates thousands of (cut, threshold, codec) decisions per request;
building the terms once and evaluating latency and energy with numpy keeps
each decision well under a millisecond.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgesplit.bundle import Manifest
from edgesplit.errors import PolicyError
from offload_policy.cost import decision_terms
from offload_policy.energy import DevicePower, RadioModel
from offload_policy.types import Decision


@dataclass(frozen=True)
class DecisionTable:
    """Decisions and their terms (see :class:`offload_policy.cost.Terms`), index-aligned.

    Attributes:
        decisions: every decision considered.
        edge_s: expected edge compute time of each.
        p_offload: probability that each sends the request.
        bytes: bytes sent when it does.
        cloud_s: the tail's compute time.
        accuracy: expected end-to-end accuracy (1.0 where not calibrated).
        edge_only: whether the decision never uses the cloud.
    """

    decisions: tuple[Decision, ...]
    edge_s: np.ndarray
    p_offload: np.ndarray
    bytes: np.ndarray
    cloud_s: np.ndarray
    accuracy: np.ndarray
    edge_only: np.ndarray

    @classmethod
    def build(
        cls,
        manifest: Manifest,
        *,
        cuts: Sequence[str] | None = None,
        thresholds: Sequence[float | None] | None = None,
        codecs: Sequence[str] | None = None,
    ) -> DecisionTable:
        """The table of ``cuts`` x ``thresholds`` x ``codecs`` (default: all the bundle has).

        Raises:
            BundleError: the bundle lacks a figure some decision needs.
            PolicyError: an empty choice.
        """
        cut_ids = list(cuts) if cuts is not None else [c.id for c in manifest.cuts]
        if thresholds is None:
            grid = manifest.calibration.thresholds if manifest.calibration else ()
            thresholds = [None, *grid]
        codec_list = list(codecs) if codecs is not None else list(manifest.codecs)
        if not cut_ids or not thresholds or not codec_list:
            raise PolicyError("no decision to choose from: empty cuts, thresholds or codecs")
        decisions: list[Decision] = []
        rows: list[tuple[float, float, float, float, float, bool]] = []
        for cut_id in cut_ids:
            cut = manifest.cut(cut_id)
            # Thresholds only matter with an exit before the cut; codecs only when sending.
            cut_thresholds = thresholds if cut.exits else [None]
            cut_codecs = codec_list if cut.tail is not None else codec_list[:1]
            for threshold in cut_thresholds:
                for codec in cut_codecs:
                    decision = Decision(cut_id, threshold, codec)
                    t = decision_terms(manifest, decision)
                    accuracy = 1.0 if math.isnan(t.accuracy) else t.accuracy
                    decisions.append(decision)
                    rows.append(
                        (t.edge_s, t.p_offload, t.bytes, t.cloud_s, accuracy, cut.tail is None)
                    )
        data = np.array(rows, dtype=np.float64)
        return cls(
            decisions=tuple(decisions),
            edge_s=data[:, 0],
            p_offload=data[:, 1],
            bytes=data[:, 2],
            cloud_s=data[:, 3],
            accuracy=data[:, 4],
            edge_only=data[:, 5].astype(bool),
        )

    def __len__(self) -> int:
        return len(self.decisions)

    def index(self, decision: Decision) -> int:
        """Position of ``decision`` in the table."""
        try:
            return self.decisions.index(decision)
        except ValueError:
            raise PolicyError(f"{decision} is not in the decision table") from None

    def latency(
        self,
        bandwidth_bps: float,
        rtt_s: float,
        queue_s: float = 0.0,
        edge_factor: float = 1.0,
        cloud_factor: float = 1.0,
    ) -> np.ndarray:
        """Expected latency of every decision on a link, seconds.

        ``edge_factor`` and ``cloud_factor`` scale the profile's edge and tail
        times (the closed-loop corrections, :mod:`offload_policy.corrections`).
        """
        _check("bandwidth_bps", bandwidth_bps)
        _check("rtt_s", rtt_s)
        _check("queue_s", queue_s)
        edge_s, cloud_s = self._corrected(edge_factor, cloud_factor)
        with np.errstate(divide="ignore"):
            transfer = (
                self.bytes * 8.0 / bandwidth_bps
                if bandwidth_bps > 0
                else np.where(self.bytes > 0, np.inf, 0.0)
            )
        wait = np.where(self.p_offload > 0, transfer + rtt_s + queue_s + cloud_s, 0.0)
        return edge_s + self.p_offload * wait

    def _corrected(self, edge_factor: float, cloud_factor: float) -> tuple[np.ndarray, np.ndarray]:
        """The edge and tail times scaled by the corrections (the arrays as they are at 1)."""
        for name, value in (("edge_factor", edge_factor), ("cloud_factor", cloud_factor)):
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise PolicyError(f"{name}={value!r}: expected a finite number > 0")
        edge_s = self.edge_s if edge_factor == 1.0 else self.edge_s * edge_factor
        cloud_s = self.cloud_s if cloud_factor == 1.0 else self.cloud_s * cloud_factor
        return edge_s, cloud_s

    def cost(self, price_cloud_s: float, price_gb: float) -> np.ndarray:
        """Expected cloud cost of every decision: compute-seconds and GB received, priced.

        cost = P(offload) x (tail compute s x ``price_cloud_s`` + bytes / 1e9 x ``price_gb``)
        """
        _check("price_cloud_s", price_cloud_s)
        _check("price_gb", price_gb)
        return self.p_offload * (self.cloud_s * price_cloud_s + self.bytes / 1e9 * price_gb)

    def energy(
        self,
        bandwidth_bps: float,
        rtt_s: float,
        radio: RadioModel,
        device: DevicePower,
        queue_s: float = 0.0,
        edge_factor: float = 1.0,
        cloud_factor: float = 1.0,
    ) -> np.ndarray:
        """Expected edge energy of every decision, joules (see :mod:`offload_policy.energy`).

        The corrections scale the times, not the power: a throttled device is
        taken to draw its profiled power for longer.
        """
        _check("bandwidth_bps", bandwidth_bps)
        edge_s, cloud_s = self._corrected(edge_factor, cloud_factor)
        if bandwidth_bps > 0:
            transmit = self.bytes * 8.0 / bandwidth_bps
            radio_j = radio.uplink_power_w(bandwidth_bps) * transmit
        else:
            radio_j = np.where(self.bytes > 0, np.inf, 0.0)
        idle_j = device.idle_w * (rtt_s + queue_s + cloud_s)
        sent = np.where(self.p_offload > 0, radio_j + idle_j, 0.0)
        return device.compute_w * edge_s + self.p_offload * sent


def _check(name: str, value: float) -> None:
    if not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise PolicyError(f"{name}={value!r}: expected a number >= 0")
