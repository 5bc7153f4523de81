"""The experiments ``edgesplit experiment NAME`` runs, in the order ``all`` runs them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One experiment: its module under experiments/ and what it shows."""

    name: str
    module: str
    summary: str

    def load(self) -> Any:
        """The experiment's module (imported on use: some pull in torch or Ray)."""
        return import_module(f"experiments.{self.module}")

    @property
    def run(self) -> Callable[..., Any]:
        """The module's ``run(settings, console)``."""
        return self.load().run


CATALOG: tuple[Entry, ...] = (
    Entry("layers", "exp_layers", "per-layer edge latency and output size (Neurosurgeon Figs 2-3)"),
    Entry("split-curves", "exp_split_curves",
          "latency and energy of every cut on 3G/LTE/WiFi, shaped link vs prediction"),
    Entry("bandwidth-sweep", "exp_bandwidth_sweep",
          "latency, energy, accuracy vs bandwidth 0.1-100 Mbit/s for six policies"),
    Entry("traces", "exp_traces",
          "real 3G/FCC traces replayed live on a shaped link: time series, CDFs, regret"),
    Entry("battery", "exp_battery", "a simulated battery drained under each policy on a trace"),
    Entry("drift", "exp_drift",
          "a device 2x slower from 30 s to 90 s: closed-loop corrections vs trusting the profile"),
    Entry("generalization", "exp_generalization",
          "bandwidth prediction tuned on one trace family, judged on the others vs the oracle"),
    Entry("cloud-scaling", "exp_cloud_scaling",
          "many edges, one SLO: throughput, p99, SLO attainment vs 1-64 edges with mixed cuts; "
          "Ray 1-2 replicas, single process, cloud-only"),
)  # fmt: skip

NAMES: tuple[str, ...] = tuple(e.name for e in CATALOG)


def entry(name: str) -> Entry:
    """The experiment ``name``; KeyError if there is none."""
    for e in CATALOG:
        if e.name == name:
            return e
    raise KeyError(name)
