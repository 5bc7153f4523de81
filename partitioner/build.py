"""Resolve a model and run offline work on it under a progress bar: profile, partition.

``edgesplit profile`` and ``edgesplit partition`` (and the experiments' edge
profiles) call these. The heavy parts (onnx, torch for zoo models) are imported
inside the functions.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console

from edgesplit.bundle import Bundle
from edgesplit.progress import progress_bar

if TYPE_CHECKING:
    from partitioner.partition import PartitionConfig
    from partitioner.prepare import SourceModel
    from partitioner.profile import ProfileConfig, TargetProfile

T = TypeVar("T")


def with_source(
    model: str,
    label: str,
    work: Callable[[SourceModel, Callable[[str, int, int], None]], T],
    *,
    exits: Sequence[str],
    input_shape: tuple[int, ...] | None,
    console: Console,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    samples: Path | None = None,
) -> T:
    """Resolve ``model`` (export or training if needed), then run ``work`` under a progress bar."""
    from partitioner.sources import load_source

    with tempfile.TemporaryDirectory(prefix="edgesplit-export-") as scratch:
        with console.status(f"preparing {model} (training or export if needed)"):
            source = load_source(
                model,
                Path(scratch),
                exits=exits,
                input_shape=input_shape,
                input_shapes=input_shapes,
                samples=samples,
            )
        for note in source.notes:
            console.print(f"{model}: {note}")
        with progress_bar(console) as bar:
            task = bar.add_task(f"{label} {source.name}", total=None, status="")

            def report(stage: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, status=stage)

            return work(source, report)


def build_bundle(
    model: str,
    out: Path,
    *,
    config: PartitionConfig,
    exits: Sequence[str] = (),
    input_shape: tuple[int, ...] | None = None,
    console: Console,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    samples: Path | None = None,
) -> Bundle:
    """Resolve ``model``, profile what ``config`` does not give, and write the bundle."""
    from partitioner.partition import partition

    return with_source(
        model,
        "partition",
        lambda source, report: partition(source, out, config, progress=report),
        exits=exits,
        input_shape=input_shape,
        console=console,
        input_shapes=input_shapes,
        samples=samples,
    )


def run_profile(
    model: str,
    role: str,
    *,
    config: ProfileConfig,
    exits: Sequence[str] = (),
    input_shape: tuple[int, ...] | None = None,
    console: Console,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    samples: Path | None = None,
) -> TargetProfile:
    """Measure ``model`` on this machine as the ``role`` target."""
    from partitioner.prepare import prepare
    from partitioner.profile import profile_target

    def work(source: SourceModel, report: Callable[[str, int, int], None]) -> TargetProfile:
        prepared = prepare(
            source, config.providers, config.threads, report, max_tensors=config.max_tensors
        )
        return profile_target(prepared, role, config, report)

    return with_source(
        model,
        f"profile ({role})",
        work,
        exits=exits,
        input_shape=input_shape,
        console=console,
        input_shapes=input_shapes,
        samples=samples,
    )
