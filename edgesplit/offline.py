"""Plumbing of the offline commands: profile a target, partition, explain the result.

``edgesplit profile`` and ``edgesplit partition`` parse their flags and call
these. The partitioner (onnx, and torch for zoo models) is imported inside
the functions, so the runtime commands never load it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console
from rich.table import Table

from edgesplit.bundle import Bundle, Manifest
from edgesplit.runs import progress_bar

if TYPE_CHECKING:
    from partitioner.partition import PartitionConfig
    from partitioner.prepare import SourceModel
    from partitioner.profile import ProfileConfig, TargetProfile

T = TypeVar("T")


def _with_source(
    model: str,
    label: str,
    work: Callable[[SourceModel, Callable[[str, int, int], None]], T],
    *,
    exits: Sequence[str],
    input_shape: tuple[int, ...] | None,
    console: Console,
) -> T:
    """Resolve ``model`` (export or training if needed), then run ``work`` under a progress bar."""
    from partitioner.sources import load_source

    with tempfile.TemporaryDirectory(prefix="edgesplit-export-") as scratch:
        with console.status(f"preparing {model} (training or export if needed)"):
            source = load_source(model, Path(scratch), exits=exits, input_shape=input_shape)
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
) -> Bundle:
    """Resolve ``model``, profile what ``config`` does not give, and write the bundle."""
    from partitioner.partition import partition

    return _with_source(
        model,
        "partition",
        lambda source, report: partition(source, out, config, progress=report),
        exits=exits,
        input_shape=input_shape,
        console=console,
    )


def run_profile(
    model: str,
    role: str,
    *,
    config: ProfileConfig,
    exits: Sequence[str] = (),
    input_shape: tuple[int, ...] | None = None,
    console: Console,
) -> TargetProfile:
    """Measure ``model`` on this machine as the ``role`` target."""
    from partitioner.prepare import prepare
    from partitioner.profile import profile_target

    def work(source: SourceModel, report: Callable[[str, int, int], None]) -> TargetProfile:
        prepared = prepare(source, config.providers, config.threads, report)
        return profile_target(prepared, role, config, report)

    return _with_source(
        model, f"profile ({role})", work, exits=exits, input_shape=input_shape, console=console
    )


def _ms(timing) -> str:
    return "-" if timing is None else f"{timing.median_s * 1e3:.3f}"


def profile_table(profile: TargetProfile, codec: str = "int8+lz4") -> Table:
    """Every cut of a profile: shape, bytes, the side's latency and the head's memory."""
    side = "head" if profile.role == "edge" else "tail"
    table = Table(
        title=(
            f"{profile.role} profile of {profile.model}: {profile.provider}, "
            f"{profile.threads or 'default'} threads, batch {profile.batch_size}, "
            f"{profile.machine.get('cpu', '?')}; whole model {_ms(profile.whole_model)} ms, "
            f"{len(profile.layers)} kernels"
        )
    )
    columns = [
        "cut",
        "kind",
        "shape",
        "raw bytes",
        f"{codec} bytes",
        f"{side} ms",
        f"{side} p95 ms",
    ]
    if profile.role == "edge":
        columns += ["head peak MiB", "head weights MiB"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("cut", "kind") else "right")
    for cut in profile.cuts:
        timing = cut.head if profile.role == "edge" else cut.tail
        row = [
            cut.id,
            cut.kind,
            "x".join(map(str, cut.shape)),
            f"{cut.raw_bytes:,}",
            f"{cut.encoded_bytes[codec]:,.0f}" if codec in cut.encoded_bytes else "-",
            _ms(timing),
            "-" if timing is None else f"{timing.p95_s * 1e3:.3f}",
        ]
        if profile.role == "edge":
            row += [
                "-" if cut.head_peak_bytes is None else f"{cut.head_peak_bytes / 2**20:.1f}",
                "-" if cut.head_weights_bytes is None else f"{cut.head_weights_bytes / 2**20:.2f}",
            ]
        table.add_row(*row)
    return table


def pruning_table(manifest: Manifest) -> Table:
    """The cuts pruned from a bundle and why."""
    info = manifest.pruning
    title = "pruning off: every candidate cut kept"
    if info is not None:
        title = (
            f"{len(manifest.cuts)} of {info.candidates} candidate cuts kept; pruned: never optimal "
            f"at {info.bandwidth_mbps[0]:g}-{info.bandwidth_mbps[1]:g} Mbit/s"
        )
    table = Table(title=title)
    for column in ("pruned cut", "shape", "beaten by", "why"):
        table.add_column(column, overflow="fold")
    for cut in manifest.pruned:
        why = cut.reason.split(". With ", 1)[-1]
        table.add_row(cut.id, "x".join(map(str, cut.shape)), ",".join(cut.beaten_by), why)
    return table
