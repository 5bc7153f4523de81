"""Predict the latency and accuracy of a decision from the bundle's profiles.

Pure arithmetic on measured figures: the edge runs the head's segments in
order and stops at the first confident exit (each exit's calibrated rate);
what is left is sent, queued and finished by the tail in the cloud.
"""

from __future__ import annotations

import math

from edgesplit.bundle import Manifest
from edgesplit.errors import PolicyError
from offload_policy.types import Decision, Observation, Prediction


def predict(manifest: Manifest, decision: Decision, observation: Observation) -> Prediction:
    """Expected latency, bytes and accuracy of ``decision`` under ``observation``.

    latency = sum over head segments of P(reached) x segment time
              + P(no exit) x (bytes x 8 / bandwidth + rtt + queue + tail time)
    """
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
        rates, accuracy = (), math.nan
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
        return Prediction(edge_s, edge_s, 0.0, 0.0, 0.0, tuple(rates), accuracy)

    if observation.bandwidth_bps <= 0:
        transfer_s = math.inf
    else:
        transfer_s = cut.bytes_for(decision.codec) * 8.0 / observation.bandwidth_bps
    cloud_s = observation.cloud_queue_s + cloud.seconds(cut.tail)
    offload_s = transfer_s + observation.rtt_s + cloud_s
    latency = edge_s + (reached * offload_s if reached > 0 else 0.0)
    return Prediction(
        latency_s=latency,
        edge_compute_s=edge_s,
        transfer_s=reached * transfer_s if reached > 0 else 0.0,
        cloud_s=reached * cloud_s,
        bytes_sent=reached * cut.bytes_for(decision.codec),
        exit_rates=tuple(rates),
        accuracy=accuracy,
    )
