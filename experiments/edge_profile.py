"""``edgesplit profile --device edge`` with only the timing inside the edge's CPU cgroup.

Exporting the model to ONNX, finding its cuts and computing sample
activations is what a user does once on a workstation; timing the heads is
what the edge device must do itself. On a host that plays a slower device
with a CPU cgroup, running the whole profile under the limit makes the
preparation crawl for nothing (the built-in model took 80 s at 0.1 core).
Here the process moves itself into the cgroup (its pid written to
``cgroup.procs`` moves every thread) only while it creates and times an
ONNX Runtime session (the whole model, the per-layer profile, each head and
segment) and back out for the rest (export, cut finding, activations, codec
sizes, which do not depend on the device's speed).

``python -m experiments.edge_profile --model M --out F --threads 1 [--cgroup DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from edgesplit.errors import EdgesplitError
from experiments.cpulimit import move_to

T = TypeVar("T")


def current_cgroup(limit: Path) -> Path:
    """This process's cgroup in the hierarchy that holds ``limit`` (its parent is the root)."""
    root = limit.parent
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, rel = line.split(":", 2)
        if controllers == "" or "cpu" in controllers.split(","):
            return root / rel.lstrip("/")
    return root


@contextmanager
def inside(limit: Path | None) -> Iterator[None]:
    """Run the block inside the cgroup ``limit`` (nothing when ``None``), then move back."""
    if limit is None:
        yield
        return
    home = current_cgroup(limit)
    move_to(limit, os.getpid())
    try:
        yield
    finally:
        move_to(home, os.getpid())


def timed_inside(limit: Path | None, function: Callable[..., T]) -> Callable[..., T]:
    """``function`` run inside the cgroup at each call."""

    def wrapped(*args: Any, **kwargs: Any) -> T:
        with inside(limit):
            return function(*args, **kwargs)

    return wrapped


def layers_only(prepared: Any, config: Any) -> dict[str, Any]:
    """The whole model's time and its per-layer profile (read by bundles.layer_profile)."""
    from dataclasses import asdict

    import partitioner.profile as profile_module
    from edgesplit.onnxrt import create_session
    from partitioner.profiling import machine_info

    feeds = {prepared.input_name: prepared.values[prepared.input_name][:1]}
    full = prepared.model.SerializeToString()
    session = create_session(full, config.providers, config.threads)
    whole = profile_module.time_session(session, feeds, config.reps)
    layers = profile_module.layer_timings(
        full, feeds, config.reps, config.providers, config.threads
    )
    return {
        "model": prepared.source.name,
        "input_shape": list(prepared.source.input_shape),
        "threads": config.threads,
        "runs": config.reps.runs,
        "machine": machine_info(),
        "whole_model_s": whole.median_s,
        "layers": [asdict(layer) for layer in layers],
    }


def main(argv: list[str] | None = None) -> int:
    """Prepare outside the cgroup, time inside it, write the profile."""
    parser = argparse.ArgumentParser(prog="python -m experiments.edge_profile")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cgroup", type=Path, help="cgroup folder to time in (default: none)")
    parser.add_argument(
        "--layers-only",
        action="store_true",
        help="only the whole model and its per-layer profile (JSON of their own), no cuts",
    )
    args = parser.parse_args(argv)
    from rich.console import Console

    import partitioner.profile as profile_module
    from partitioner.build import with_source
    from partitioner.prepare import prepare
    from partitioner.profile import ProfileConfig, profile_target, save_profile
    from partitioner.profiling import Repetitions

    # Every ONNX Runtime session the edge profile creates and times, inside the limit.
    for name in ("time_session", "layer_timings", "_timed_session"):
        setattr(profile_module, name, timed_inside(args.cgroup, getattr(profile_module, name)))

    config = ProfileConfig(reps=Repetitions.quick(), threads=args.threads)

    def work(source, report):  # type: ignore[no-untyped-def]
        prepared = prepare(source, config.providers, config.threads, report)
        if args.layers_only:
            return layers_only(prepared, config)
        return profile_target(prepared, "edge", config, report)

    try:
        measured = with_source(
            args.model,
            "profile (edge)",
            work,
            exits=(),
            input_shape=None,
            console=Console(stderr=True),
        )
        if args.layers_only:
            args.out.write_text(json.dumps(measured, indent=1) + "\n")
        else:
            save_profile(measured, args.out)
    except (EdgesplitError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
