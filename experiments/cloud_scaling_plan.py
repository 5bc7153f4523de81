"""What ``cloud-scaling`` sends: the series, the mix of cuts, which edge sends which cut.

:class:`Options` holds the experiment's own choices (the SLO, the cuts, how
edges get them, the batch window); :func:`chosen_mix` and :func:`assign`
turn them into one cut per edge, and :class:`Plan` into what each edge sends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesplit.bundle import Bundle, Cut
from edgesplit.errors import ConfigError
from experiments.harness import Settings, sized
from experiments.loadgen import EdgeLoad
from wire import DEFAULT_CODEC

MIXED, CLOUD_ONLY = "mixed cuts", "cloud-only"
#: The series measured, in order: (node, what the edges send).
SERIES = (
    ("single-process", MIXED),
    ("ray, 1 replica", MIXED),
    ("ray, 2 replicas", MIXED),
    ("ray, 2 replicas", CLOUD_ONLY),
)
#: Without ``slo_ms``: the SLO is this many times the cloud-only request's median latency
#: from one edge alone on the single-process node.
SLO_FACTOR = 5.0
#: Inner cuts in the default mix, beside the cloud-only cut.
MIX_CUTS = 3
ASSIGNMENTS = ("round-robin", "random")


@dataclass(frozen=True)
class Options:
    """The experiment's own choices, from ``Settings.overrides`` (the CLI's cloud-scaling flags).

    Attributes:
        slo_ms: the latency SLO of one request, ms; ``None``: ``SLO_FACTOR`` x the
            median latency of the cloud-only request from one edge alone on the
            single-process node, measured before the points.
        cuts: the mix's cut ids; ``None``: the cloud-only cut and the ``MIX_CUTS``
            inner cuts cheapest to send (:func:`default_mix`).
        assign: how edges get their cut: ``round-robin`` over the mix in depth
            order (edge i gets cut i mod len(mix)), or ``random`` (drawn, seeded by ``--seed``).
        batch_window_ms: every node's batch window (``edgesplit cloud --batch-window-ms``).
    """

    slo_ms: float | None = None
    cuts: tuple[str, ...] | None = None
    assign: str = "round-robin"
    batch_window_ms: float = 2.0

    def __post_init__(self) -> None:
        if self.slo_ms is not None and not 0 < self.slo_ms < math.inf:
            raise ConfigError(f"--slo-ms {self.slo_ms}: expected a number of ms > 0")
        if self.assign not in ASSIGNMENTS:
            raise ConfigError(f"--cut-assign {self.assign}: expected {' or '.join(ASSIGNMENTS)}")
        if not 0 <= self.batch_window_ms <= 1000:
            raise ConfigError(f"--batch-window-ms {self.batch_window_ms}: expected 0..1000")
        if self.cuts is not None and not self.cuts:
            raise ConfigError("--cuts: expected cut ids, e.g. c00,c09")


def options(settings: Settings) -> Options:
    """The :class:`Options` in ``settings.overrides`` (cut ids as a list or ``c00,c09``)."""
    given = sized(
        settings, {"slo_ms": None, "cuts": None, "assign": "round-robin", "batch_window_ms": 2.0}
    )
    cuts = given["cuts"]
    if isinstance(cuts, str):
        cuts = [c.strip() for c in cuts.split(",") if c.strip()]
    slo = given["slo_ms"]
    return Options(
        slo_ms=None if slo is None else float(slo),
        cuts=None if cuts is None else tuple(cuts),
        assign=str(given["assign"]),
        batch_window_ms=float(given["batch_window_ms"]),
    )


def default_mix(
    cuts: Sequence[Cut], count: int = MIX_CUTS, codec: str = DEFAULT_CODEC
) -> tuple[Cut, ...]:
    """The cloud-only cut and the ``count`` inner cuts cheapest to send with ``codec``, by depth.

    An inner cut that sends no fewer bytes than a shallower inner cut is taken
    only when too few are left (it costs the edge more and saves nothing on the
    wire, so no bandwidth makes it the choice): on ResNet18 that drops c21, the
    flattened twin of c20.
    """
    inner = [c for c in cuts if c.kind == "inner"]
    useful, least = [], math.inf
    for cut in inner:
        if cut.bytes_for(codec) < least:
            useful.append(cut)
            least = cut.bytes_for(codec)
    rest = [c for c in inner if c not in useful]
    ranked = sorted(useful, key=lambda c: c.bytes_for(codec))
    ranked += sorted(rest, key=lambda c: c.bytes_for(codec))
    whole = next(c for c in cuts if c.kind == "input")
    return (whole, *sorted(ranked[:count], key=lambda c: c.index))


def chosen_mix(cuts: Sequence[Cut], opts: Options) -> tuple[Cut, ...]:
    """The mix of ``opts.cuts`` (checked against ``cuts``) or the default one, by depth."""
    if opts.cuts is None:
        return default_mix(cuts)
    offloadable = {c.id: c for c in cuts if c.kind != "output"}
    unknown = [c for c in opts.cuts if c not in offloadable]
    if unknown:
        raise ConfigError(
            f"--cuts {','.join(opts.cuts)}: {unknown[0]} is not an offloadable cut; choose "
            f"from {','.join(offloadable)}"
        )
    return tuple(
        sorted(
            {offloadable[c].id: offloadable[c] for c in opts.cuts}.values(), key=lambda c: c.index
        )
    )


def assign(mix: Sequence[Cut], edges: int, how: str, seed: int) -> list[Cut]:
    """The cut of each of ``edges`` edges: round-robin over ``mix`` or a seeded draw."""
    if how == "round-robin":
        return [mix[i % len(mix)] for i in range(edges)]
    draw = np.random.default_rng(seed).integers(len(mix), size=edges)
    return [mix[int(i)] for i in draw]


@dataclass(frozen=True)
class Plan:
    """What every point needs: the bundle, what the edges send, and the sizes."""

    bundle: Bundle
    opts: Options
    size: dict[str, Any]
    seed: int
    mix: tuple[Cut, ...]
    mixed: dict[str, EdgeLoad]  # by cut id, the default codec
    whole: EdgeLoad  # the cloud-only baseline's request

    def loads(self, load: str, edges: int) -> list[EdgeLoad]:
        """What each of ``edges`` edges sends under ``load``."""
        if load == CLOUD_ONLY:
            return [self.whole] * edges
        return [self.mixed[c.id] for c in assign(self.mix, edges, self.opts.assign, self.seed)]


__all__ = [
    "ASSIGNMENTS",
    "CLOUD_ONLY",
    "MIXED",
    "MIX_CUTS",
    "SERIES",
    "SLO_FACTOR",
    "Options",
    "Plan",
    "assign",
    "chosen_mix",
    "default_mix",
    "options",
]
