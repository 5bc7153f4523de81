"""Pruning: a cut goes only if no operating point in the range makes it the best."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesplit.bundle import Bundle, Manifest, Timing
from edgesplit.errors import ConfigError, PolicyError
from offload_policy.cost import decision_terms
from offload_policy.energy import device_power, inference_energy_j, radio
from offload_policy.types import Decision
from partitioner.pruning import PruneConfig, prune

CONFIG = PruneConfig()


def _slower_edge(manifest: Manifest, factor: float) -> Manifest:
    """The same model on an edge device ``factor`` times slower than this machine."""
    edge = manifest.profiles["edge"]
    timings = {
        k: Timing(v.median_s * factor, v.p95_s * factor, v.runs) for k, v in edge.timings.items()
    }
    return replace(manifest, profiles={**manifest.profiles, "edge": replace(edge, timings=timings)})


@pytest.fixture(scope="module")
def slow_resnet18(resnet18_bundle: Bundle) -> Manifest:
    return _slower_edge(resnet18_bundle.manifest, 10.0)


@pytest.fixture(scope="module")
def result(slow_resnet18: Manifest):
    return prune(slow_resnet18, CONFIG)


def test_keeps_the_baselines_and_drops_most_cuts(slow_resnet18: Manifest, result) -> None:
    ids = [c.id for c in slow_resnet18.cuts]
    assert ids[0] in result.kept and ids[-1] in result.kept
    assert 2 < len(result.kept) < len(ids)
    assert {p.id for p in result.pruned} == set(ids) - set(result.kept)
    assert result.info.candidates == len(ids)
    for pruned in result.pruned:
        assert pruned.reason.startswith("never the best choice at")
        assert "0.1-1000 Mbit/s" in pruned.reason
        assert set(pruned.beaten_by) <= set(result.kept) and pruned.beaten_by


def test_a_bigger_earlier_activation_is_pruned_with_figures(result) -> None:
    # c01 (64x112x112 after conv1) is 5x the raw input and costs head time: never best.
    c01 = next(p for p in result.pruned if p.id == "c01")
    assert c01.shapes == ((64, 112, 112),)
    assert "c01 head" in c01.reason and "c00 head 0 ms" in c01.reason


def _cost(manifest, cut_id, threshold, codec, bandwidth, rtt, radio_name, weight) -> float:
    """The scalar reference: one decision's latency + weight x energy."""
    terms = decision_terms(manifest, Decision(cut_id, threshold, codec))
    latency = terms.latency_s(bandwidth, rtt)
    energy = inference_energy_j(
        terms.edge_s,
        terms.p_offload,
        terms.bytes,
        rtt + terms.cloud_s,
        bandwidth,
        radio(radio_name),
        device_power(CONFIG.device),
    )
    return latency + weight * energy


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(0, CONFIG.bandwidth_points - 1),
    r=st.sampled_from(CONFIG.rtt_s),
    radio_name=st.sampled_from(CONFIG.radios),
    w=st.integers(0, CONFIG.weightings),
    codec=st.sampled_from(["raw", "int8+lz4", "fp16+zstd"]),
)
def test_every_grid_point_is_won_by_a_kept_cut(slow_resnet18, result, b, r, radio_name, w, codec):
    bandwidth = float(np.geomspace(0.1e6, 1000e6, CONFIG.bandwidth_points)[b])
    weight = 0.0 if w == 0 else float(np.geomspace(1e-4, 1e4, CONFIG.weightings)[w - 1])
    costs = {
        c.id: _cost(slow_resnet18, c.id, None, codec, bandwidth, r, radio_name, weight)
        for c in slow_resnet18.cuts
    }
    best = min(costs.values())
    winners = [c for c, v in costs.items() if v <= best * (1 + 1e-9)]
    assert any(c in result.kept for c in winners), (winners, result.kept)


def test_exit_thresholds_are_settings_too(branchynet_bundle: Bundle) -> None:
    manifest = _slower_edge(branchynet_bundle.manifest, 30.0)
    pruned = prune(manifest, CONFIG)
    assert manifest.cuts[0].id in pruned.kept and manifest.cuts[-1].id in pruned.kept
    # Cuts after an exit let easy inputs stop on the edge: one of them survives.
    assert any(manifest.cut(c).exits for c in pruned.kept if manifest.cut(c).kind == "inner")


def test_disabled_keeps_everything(slow_resnet18: Manifest) -> None:
    off = prune(slow_resnet18, PruneConfig(enabled=False))
    assert off.kept == tuple(c.id for c in slow_resnet18.cuts)
    assert off.pruned == () and off.info is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"bandwidth_mbps": (10.0, 1.0)}, ConfigError, "bandwidth range 10.0-1.0"),
        ({"bandwidth_mbps": (0.0, 1.0)}, ConfigError, "expected 0 < low"),
        ({"rtt_s": (-1.0,)}, ConfigError, "rtt_s"),
        ({"radios": ("5g",)}, PolicyError, "radio '5g' is unknown"),
        ({"device": "toaster"}, PolicyError, "device 'toaster' is unknown"),
    ],
)
def test_bad_config_is_named(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        PruneConfig(**kwargs)
