"""Predict the latency and accuracy of a decision from the bundle's profiles.

Pure arithmetic on measured figures: the edge runs the head's segments in
order and stops at the first confident exit (each exit's calibrated rate);
what is left is sent, queued and finished by the tail in the cloud.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from edgesplit.bundle import Cut, Manifest
from edgesplit.errors import PolicyError
from offload_policy.types import Decision, Observation, Prediction


@dataclass(frozen=True)
class Terms:
    """The parts of a decision's cost that do not depend on the link.

    latency(bandwidth, rtt) = edge_s + p_offload x (bytes x 8 / bandwidth + rtt + cloud_s)

    Attributes:
        edge_s: expected edge compute time (segments weighted by P(reached)).
        p_offload: probability that no exit answers and the request is sent.
        bytes: bytes sent when offloading (0 for edge-only).
        cloud_s: the tail's compute time in the cloud (0 for edge-only).
        exit_rates: probability of leaving at each exit before the cut.
        accuracy: expected end-to-end accuracy (nan when not calibrated).
    """

    edge_s: float
    p_offload: float
    bytes: float
    cloud_s: float
    exit_rates: tuple[float, ...]
    accuracy: float

    def latency_s(self, bandwidth_bps: float, rtt_s: float, queue_s: float = 0.0) -> float:
        """Expected end-to-end latency on a link of ``bandwidth_bps`` and ``rtt_s``."""
        if self.p_offload <= 0:
            return self.edge_s
        transfer = math.inf if bandwidth_bps <= 0 else self.bytes * 8.0 / bandwidth_bps
        return self.edge_s + self.p_offload * (transfer + rtt_s + queue_s + self.cloud_s)


def decision_terms(manifest: Manifest, decision: Decision) -> Terms:
    """The link-independent terms of ``decision`` (see :class:`Terms`)."""
    cut = manifest.cut(decision.cut)
    edge = manifest.profiles.get("edge")
    cloud = manifest.profiles.get("cloud")
    if edge is None or cloud is None:
        raise PolicyError(
            "the bundle lacks an edge or a cloud profile; re-run `edgesplit partition`"
        )
    calibration = manifest.calibration
    if calibration is not None:
        rates, accuracy = calibration.expected(decision.exit_threshold, len(cut.exits))
    else:
        rates, accuracy = (), fidelity_accuracy(manifest, cut, decision.codec)
    exit_rate = dict(zip(cut.exits, rates, strict=False))
    reached = 1.0
    edge_s = 0.0
    for seg_id in cut.head:
        edge_s += reached * edge.seconds(seg_id)
        exit_name = manifest.segments[seg_id].exit
        if exit_name is not None and exit_name in exit_rate:
            reached -= exit_rate[exit_name]
    reached = max(0.0, reached)
    if cut.tail is None:
        return Terms(edge_s, 0.0, 0.0, 0.0, tuple(rates), accuracy)
    return Terms(
        edge_s=edge_s,
        p_offload=reached,
        bytes=cut.bytes_for(decision.codec),
        cloud_s=cloud.seconds(cut.tail),
        exit_rates=tuple(rates),
        accuracy=accuracy,
    )


def fidelity_accuracy(manifest: Manifest, cut: Cut, codec: str) -> float:
    """Accuracy relative to the unsplit model where the bundle has no labels: its fidelity.

    The share of samples on which the split model (``cut``, ``codec``) gives the
    unsplit model's top-1 class, or one minus the worst output's mean relative
    error for outputs that are not class scores (:meth:`Fidelity.score`). The
    edge-only cut runs the unsplit model: 1. NaN when the bundle measured none.
    """
    if not any(c.fidelity for c in manifest.cuts):
        return math.nan
    if cut.tail is None:
        return 1.0
    fidelity = cut.fidelity.get(codec)
    return math.nan if fidelity is None else fidelity.score()


def predict(manifest: Manifest, decision: Decision, observation: Observation) -> Prediction:
    """Expected latency, bytes and accuracy of ``decision`` under ``observation``.

    latency = sum over head segments of P(reached) x segment time
              + P(no exit) x (bytes x 8 / bandwidth + rtt + queue + tail time)

    The edge and tail times are scaled by the observation's corrections
    (``edge_factor``, ``cloud_factor``; 1 as profiled).
    """
    terms = decision_terms(manifest, decision)
    o = observation
    if o.edge_factor != 1.0 or o.cloud_factor != 1.0:
        terms = replace(
            terms, edge_s=terms.edge_s * o.edge_factor, cloud_s=terms.cloud_s * o.cloud_factor
        )
    if terms.p_offload <= 0:
        return Prediction(
            terms.edge_s, terms.edge_s, 0.0, 0.0, 0.0, terms.exit_rates, terms.accuracy
        )
    if observation.bandwidth_bps <= 0:
        transfer_s = math.inf
    else:
        transfer_s = terms.bytes * 8.0 / observation.bandwidth_bps
    cloud_s = observation.queue_s + terms.cloud_s
    reached = terms.p_offload
    return Prediction(
        latency_s=terms.latency_s(o.bandwidth_bps, o.rtt_s, o.queue_s),
        edge_compute_s=terms.edge_s,
        transfer_s=reached * transfer_s,
        cloud_s=reached * cloud_s,
        bytes_sent=reached * terms.bytes,
        exit_rates=terms.exit_rates,
        accuracy=terms.accuracy,
    )


#: How far below the whole model's accuracy the default floor lies: one point.
DEFAULT_FLOOR_MARGIN = 0.01


def whole_model_accuracy(manifest: Manifest) -> float:
    """The unsplit model's expected accuracy: edge-only, no exit (NaN: no labels, no fidelity)."""
    decision = Decision(manifest.edge_only.id, None, "raw")
    return decision_terms(manifest, decision).accuracy


def default_accuracy_floor(manifest: Manifest, margin: float = DEFAULT_FLOOR_MARGIN) -> float:
    """The accuracy floor a user gets unless told otherwise: the whole model's, less a point.

    A split then keeps the model's accuracy (within ``margin``) by default: early
    exits and lossy codecs may only trade what the margin allows. A bundle whose
    calibration has no labels (NaN accuracy) has no floor (0.0).
    """
    whole = whole_model_accuracy(manifest)
    return 0.0 if math.isnan(whole) else max(0.0, whole - margin)


@dataclass(frozen=True)
class Branch:
    """One way a request under a decision can end, with its probability.

    Attributes:
        probability: share of requests that end this way.
        edge_s: edge compute time until the request stops or is sent.
        offloaded: whether the request is sent to the cloud.
        accuracy: accuracy of the answers that end this way (nan if unknown).
        where: the exit's name, ``cloud``, or ``edge`` (edge-only, final output).
    """

    probability: float
    edge_s: float
    offloaded: bool
    accuracy: float
    where: str


def branches(manifest: Manifest, decision: Decision) -> tuple[Branch, ...]:
    """The ways a request ends under ``decision``: each exit in turn, then the cut.

    Their probabilities sum to 1; the expectation of ``edge_s`` over them is
    :attr:`Terms.edge_s`. A simulator draws one branch per request.
    """
    cut = manifest.cut(decision.cut)
    edge = manifest.profiles.get("edge")
    if edge is None:
        raise PolicyError("the bundle lacks an edge profile; re-run `edgesplit partition`")
    calibration = manifest.calibration
    rates: tuple[float, ...] = ()
    exit_accuracy: tuple[float, ...] = ()
    rest_accuracy = math.nan
    if calibration is not None:
        active = len(cut.exits)
        rates, _ = calibration.expected(decision.exit_threshold, active)
        if rates:
            t = calibration.threshold_index(decision.exit_threshold)  # type: ignore[arg-type]
            exit_accuracy = calibration.accuracy[t][:active]
            rest_accuracy = calibration.remaining_accuracy[t][active]
        else:
            rest_accuracy = calibration.final_accuracy
    rate_of = dict(zip(cut.exits, zip(rates, exit_accuracy, strict=False), strict=False))
    out: list[Branch] = []
    elapsed = 0.0
    left = 1.0
    for seg_id in cut.head:
        elapsed += edge.seconds(seg_id)
        exit_name = manifest.segments[seg_id].exit
        if exit_name is not None and exit_name in rate_of:
            rate, accuracy = rate_of[exit_name]
            if rate > 0:
                out.append(Branch(rate, elapsed, False, accuracy, exit_name))
                left -= rate
    offloaded = cut.tail is not None
    out.append(
        Branch(max(0.0, left), elapsed, offloaded, rest_accuracy, "cloud" if offloaded else "edge")
    )
    return tuple(out)
