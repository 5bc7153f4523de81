"""What the shaped-link benchmark serves: its bundle, the bundle's profiles, the edge's inputs.

The bundle is ``--bundle``, or ``--model`` partitioned with every cut kept:
from a quick profile of this machine, or, with the edge CPU-limited, from an
edge profile measured inside the cgroup and an unthrottled cloud profile.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgesplit.bundle import Bundle, load_bundle
from experiments.cpulimit import CpuCgroup

ROOT = Path(__file__).resolve().parents[1]


def build(model: str, out: Path) -> Bundle:
    """Partition ``model`` as the test fixtures do: quick profile, every cut kept."""
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.pruning import PruneConfig
    from partitioner.sources import load_source

    source = load_source(model, out.parent)
    config = PartitionConfig(
        profile=ProfileConfig(reps=Repetitions.quick(), size_samples=8),
        prune=PruneConfig(enabled=False),
    )
    return partition(source, out, config)


def build_for_slow_edge(
    model: str, out: Path, cgroup: CpuCgroup, args: argparse.Namespace
) -> Bundle:
    """``model``'s bundle from an edge profile measured inside ``cgroup`` and a free cloud's.

    The profiles and the bundle stay in ``out`` (``profiles/``, ``bundle/``);
    those already there are reused.
    """
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.pruning import PruneConfig
    from partitioner.sources import load_source

    if (out / "bundle" / "manifest.json").is_file():
        print(f"reusing the slow-edge bundle {out / 'bundle'}", flush=True)
        return load_bundle(out / "bundle", verify="none")
    profiles = out / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    sides = (("edge", args.edge_threads, cgroup), ("cloud", args.threads, None))
    for role, threads, limit in sides:
        if (profiles / f"{role}.json").is_file():
            print(f"reusing the {role} profile {profiles / f'{role}.json'}", flush=True)
            continue
        argv = [sys.executable, "-m", "edgesplit", "profile", "--device", role, "--model", model,
                "--quick", "--no-layers", "--threads", str(threads),
                "--out", str(profiles / f"{role}.json")]  # fmt: skip
        began = time.perf_counter()
        done = subprocess.run(
            limit.wrap(argv) if limit else argv,
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"`edgesplit profile --device {role}` failed:\n{done.stderr[-3000:]}"
            )
        where = f"under {limit.describe()}" if limit else "unthrottled"
        print(
            f"{role} profile ({threads or 'default'} threads, {where}) in "
            f"{time.perf_counter() - began:.1f} s",
            flush=True,
        )
    config = PartitionConfig(
        profile=ProfileConfig(reps=Repetitions.quick(), size_samples=8),
        edge_profile=profiles / "edge.json",
        cloud_profile=profiles / "cloud.json",
        prune=PruneConfig(enabled=False),
    )
    return partition(load_source(model, out), out / "bundle", config)


def profile_summary(bundle: Bundle) -> str:
    """Each side's whole-model median from the bundle's profiles, ms."""
    from partitioner.profile import load_profile

    parts = []
    for role in ("edge", "cloud"):
        p = load_profile(bundle.root / "profiles" / f"{role}.json")
        whole = f"{p.whole_model.median_s * 1e3:.2f} ms" if p.whole_model else "-"
        parts.append(f"{role} whole model {whole} ({p.threads or 'default'} threads)")
    return "profiles: " + ", ".join(parts)


def write_inputs(bundle: Bundle, out: Path, count: int) -> str:
    """``--inputs`` for the edge: the bundle's test set, else seeded random ``.npy`` files."""
    if (bundle.root / "data" / "test.npz").is_file():
        return "bundle"
    out.mkdir(parents=True, exist_ok=True)
    shape = bundle.manifest.model.input.shape
    rng = np.random.default_rng(0)
    for i in range(count):
        np.save(out / f"{i:05d}.npy", rng.standard_normal(shape, dtype=np.float32))
    return str(out)


def bundle_for(args: argparse.Namespace, work: Path, cgroup: CpuCgroup | None) -> Bundle:
    """``--bundle``, else ``--model`` built (for the edge in ``cgroup`` when one is given)."""
    if args.bundle:
        return load_bundle(args.bundle, verify="none")
    if cgroup is None:
        return build(args.model, work / "b")
    name = f"{args.model}-cpu{cgroup.fraction:g}-t{args.edge_threads}"
    return build_for_slow_edge(args.model, (args.cache_dir or work) / name, cgroup, args)
