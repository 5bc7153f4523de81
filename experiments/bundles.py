"""Profiles and bundles of the experiments' models, measured once and cached.

A model's edge profile is measured by experiments/edge_profile.py, which
times every ONNX Runtime session inside a CPU cgroup of ``edge_cpu_quota``
of one core (a Jetson-class device on this host: its CPU limit is real,
enforced by the kernel), with one thread and per-layer node profiling; the
cloud profile with ``edgesplit profile --device cloud``, unthrottled. The
bundle is partitioned from the two (every cut kept, no pruning) and kept
under ``cache/MODEL-KEY/`` with its profiles; the next run reuses them and
its report says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesplit.bundle import Bundle, load_bundle
from edgesplit.errors import ConfigError, ModelError
from experiments.cpulimit import CpuCgroup, cpu_limit_support, cpu_limited
from experiments.harness import ROOT, Settings

#: The built-in early-exit model's zoo name (trained on first use, cached).
BUILTIN = "branchynet"
#: ONNX Runtime threads of the edge (a one-core slice) and of the cloud (its default).
EDGE_THREADS = 1
#: The CFS period of the edge's limit. The kernel's default 100 ms makes a
#: 0.1-core edge run 10 ms then wait 90 ms, so a head's latency moved in
#: 100 ms steps (ResNet18 cuts measured 305, 398, 400 ms); 10 ms periods
#: spread the same share evenly.
EDGE_PERIOD_US = 10_000


@dataclass(frozen=True)
class ModelRun:
    """A model's cached profiles and bundle, and how they were made."""

    model: str
    bundle: Bundle
    edge_profile: Path
    cloud_profile: Path
    reused: bool
    edge_limit: str


@contextmanager
def edge_cgroup(settings: Settings, name: str) -> Iterator[CpuCgroup | None]:
    """The edge's CPU cgroup for this run (``None`` without a quota)."""
    if settings.edge_cpu_quota is None:
        yield None
        return
    missing = cpu_limit_support()
    if missing is not None:
        raise ConfigError(
            f"--edge-cpu-quota {settings.edge_cpu_quota}: {missing}; "
            "run as root on a machine with cgroups, or give --edge-cpu-quota 0"
        )
    name = f"edgesplit-exp-{name}-{os.getpid()}"
    with cpu_limited(settings.edge_cpu_quota, name, EDGE_PERIOD_US) as cgroup:
        yield cgroup


def cache_key(settings: Settings) -> str:
    """The part of a cache folder's name that the measurement depends on."""
    from partitioner.profile import FORMAT_VERSION  # profiles of another format are not reused

    quota = "free" if settings.edge_cpu_quota is None else f"cpu{settings.edge_cpu_quota:g}"
    return f"edge-{quota}-p{EDGE_PERIOD_US // 1000}ms-t{EDGE_THREADS}-f{FORMAT_VERSION}"


def _profile(model: str, role: str, out: Path, cgroup: CpuCgroup | None) -> None:
    if role == "edge":
        argv = _edge_profile_argv(model, out, cgroup)
    else:
        argv = [
            sys.executable,
            "-m",
            "edgesplit",
            "profile",
            "--device",
            role,
            "--model",
            model,
            "--quick",
            "--no-layers",
            "--out",
            str(out),
        ]
    _run(argv, f"profiling {model} as the {role}")


def _edge_profile_argv(model: str, out: Path, cgroup: CpuCgroup | None, *extra: str) -> list[str]:
    """The edge profiler, prepared unthrottled and timed inside ``cgroup`` (edge_profile.py)."""
    argv = [sys.executable, "-m", "experiments.edge_profile", "--model", model, "--out", str(out)]
    argv += ["--threads", str(EDGE_THREADS), *extra]
    if cgroup is not None:
        argv += ["--cgroup", str(cgroup.path)]
    return argv


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(
        argv,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)},
    )
    if done.returncode != 0:
        raise ConfigError(f"{what} failed:\n{done.stderr[-3000:]}")


def model_dir(model: str, settings: Settings) -> Path:
    """Where ``model``'s profiles and bundle are cached."""
    return settings.cache / f"{model}-{cache_key(settings)}"


def profiles(
    model: str,
    settings: Settings,
    cgroup: CpuCgroup | None,
    note: Callable[[str], None] = lambda _: None,
) -> tuple[Path, Path, bool]:
    """``model``'s edge and cloud profile files, and whether both were reused."""
    folder = model_dir(model, settings) / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    reused = True
    for role in ("edge", "cloud"):
        path = folder / f"{role}.json"
        if not path.is_file():
            reused = False
            began = time.perf_counter()
            note(f"{model}: {role} profile")
            _profile(model, role, path, cgroup if role == "edge" else None)
            note(f"{model}: {role} profile in {time.perf_counter() - began:.0f} s")
    return folder / "edge.json", folder / "cloud.json", reused


@dataclass(frozen=True)
class LayerProfile:
    """A model's per-layer profile on the edge, from either kind of profile file."""

    model: str
    input_shape: tuple[int, ...]
    whole_model_s: float
    layers: tuple[Any, ...]
    path: Path


def layer_profile(
    model: str,
    settings: Settings,
    cgroup: CpuCgroup | None,
    note: Callable[[str], None] = lambda _: None,
) -> tuple[LayerProfile, bool]:
    """``model``'s per-layer edge profile, and whether it was reused.

    The full edge profile when one is cached (the same per-layer
    measurement), else a layers-only one: the whole model and its kernels,
    without timing every cut's head (VGG16 would take minutes at 0.1 core).
    """
    from partitioner.profile import load_profile
    from partitioner.profiling import LayerTiming

    folder = model_dir(model, settings) / "profiles"
    full = folder / "edge.json"
    if full.is_file():
        try:
            p = load_profile(full)
        except ModelError as exc:  # one of an older edgesplit: measure the layers again
            note(f"{model}: cached edge profile not reused ({exc})")
        else:
            shape = tuple(p.inputs[0].shape)
            return LayerProfile(model, shape, p.whole_model.median_s, p.layers, full), True
    path = folder / "edge-layers.json"
    reused = path.is_file()
    if not reused:
        folder.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        note(f"{model}: per-layer profile")
        argv = _edge_profile_argv(model, path, cgroup, "--layers-only")
        _run(argv, f"profiling {model}'s layers on the edge")
        note(f"{model}: per-layer profile in {time.perf_counter() - began:.0f} s")
    try:
        data = json.loads(path.read_text())
        layers = tuple(
            LayerTiming(**{**x, "output_shape": tuple(x["output_shape"])}) for x in data["layers"]
        )
        profile = LayerProfile(
            model, tuple(data["input_shape"]), float(data["whole_model_s"]), layers, path
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable per-layer profile ({exc}); delete it") from None
    return profile, reused


def model_run(
    model: str,
    settings: Settings,
    cgroup: CpuCgroup | None,
    note: Callable[[str], None] = lambda _: None,
) -> ModelRun:
    """``model``'s profiles and bundle, measured now or reused from the cache."""
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.pruning import PruneConfig
    from partitioner.sources import load_source

    out = model_dir(model, settings)
    edge, cloud, reused = profiles(model, settings, cgroup, note)
    limit = cgroup.describe() if cgroup else "unlimited"
    if reused and (out / "bundle" / "manifest.json").is_file():
        bundle = load_bundle(out / "bundle", verify="none")
    else:
        reused = False
        note(f"{model}: partition")
        config = PartitionConfig(
            profile=ProfileConfig(reps=Repetitions.quick(), size_samples=8),
            edge_profile=edge,
            cloud_profile=cloud,
            prune=PruneConfig(enabled=False),
        )
        bundle = partition(load_source(model, out), out / "bundle", config)
    return ModelRun(model, bundle, edge, cloud, reused, limit)


def one_model_run(
    model: str, settings: Settings, name: str, note: Callable[[str], None]
) -> ModelRun:
    """:func:`model_run` for an experiment of one model, in a cgroup of its own while profiling."""
    with edge_cgroup(settings, name) as cgroup:
        return model_run(model, settings, cgroup, note)
