"""Wall time of ``edgesplit partition --quick`` on a 5M-parameter detector, against 3 minutes.

Writes the zoo model ``fpn_detector_5m`` (an FPN detector of about 4.9M parameters,
input 3x320x320; ``--model`` picks another zoo entry) to a temporary directory and
prints its parameter and node counts. Then runs the real command,
``python -m edgesplit partition --model FILE.onnx --out DIR --quick`` (pruning on, as
by default), as a subprocess and prints its wall time (Python start and imports
included, as a user sees it) against the goal: under 3 minutes. From the bundle it
wrote (``edgesplit.bundle.load_bundle``) it prints the cuts offered
(``manifest.cut_search``), the cuts kept by pruning, the kept cuts of several
tensors, and the largest share of estimated compute between two cuts, offered
(``cut_search.largest_gap``) and kept (``manifest.largest_gap()``).

With ``--stages`` it then runs the same partition in this process (the same
configuration as the command: quick repetitions, CPU, pruning on) and prints the
time of each stage, timestamped by the progress callback of
``partitioner.partition.partition``: open the file (``onnx_source``), prepare
(measure, rewrite, analyze, probe), the edge profile (whole model and layers, then
every head, then every segment), the cloud profile (whole model and layers, then
every tail), prune and fidelity, the writing of the models, and the manifest and
read-back. The time between two callbacks is counted to the stage of the later one
(a stage reports after each step), so calibration and pruning fall into the first
fidelity step. ``--cprofile N`` runs that in-process partition under cProfile and
prints the N functions of most own time and of most cumulative time (cProfile slows
Python code, not ONNX Runtime's kernels: the shares shift a little).

Times are wall-clock on this machine; the script prints its cores and load average.

Run: ``python -m benchmarks.partition_quick [--stages] [--cprofile N] [--model NAME]``
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnx

from edgesplit.bundle import Manifest, load_bundle

GOAL_S = 180.0
STAGES = {
    "probe": "prepare (measure, rewrite, analyze, probe)",
    "whole model": "profile {role}: whole model + layers",
    "layers": "profile {role}: whole model + layers",
    "cut": "profile {role}: every {part}, codec sizes",
    "segment": "profile {role}: every segment",
    "fidelity": "prune, then fidelity of kept cuts",
    "write": "write edge/ and cloud/ models",
}


def model_counts(path: Path) -> tuple[int, int]:
    """Parameters (elements of the initializers) and nodes of an ONNX file."""
    model = onnx.load(str(path))
    params = sum(math.prod(t.dims) for t in model.graph.initializer)
    return params, len(model.graph.node)


def run_cli(model: Path, out: Path, timeout: float) -> tuple[float, str]:
    """Run ``python -m edgesplit partition --model MODEL --out OUT --quick``; seconds, output.

    Raises:
        RuntimeError: the command failed; the message holds the end of its output.
    """
    command = [sys.executable, "-m", "edgesplit", "partition"]
    command += ["--model", str(model), "--out", str(out), "--quick"]
    env = {**os.environ, "COLUMNS": "160"}
    start = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    wall = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{output[-4000:]}")
    return wall, output


def bundle_lines(manifest: Manifest) -> list[str]:
    """What the bundle's manifest says about the cut search and the cuts kept."""
    search = manifest.cut_search
    inner = [c for c in manifest.cuts if c.kind == "inner"]
    multi = [c for c in inner if len(c.tensors) > 1]
    kept = ", ".join(f"{c.id}({len(c.tensors)})" for c in manifest.cuts)
    gap = manifest.largest_gap()
    lines = []
    if search is None:
        lines.append("  cut search: not recorded in the manifest")
    else:
        lines.append(
            f"  cuts offered: {search.offered} (of {search.candidates} candidate sets, at most "
            f"{search.max_tensors} tensors a cut), largest gap offered {search.largest_gap:.1%}"
        )
    lines.append(
        f"  cuts kept: {len(manifest.cuts)} (pruned {len(manifest.pruned)}), "
        f"of several tensors: {len(multi)} of {len(inner)} inner"
    )
    lines.append(f"  kept (tensors): {kept}")
    lines.append(
        "  largest gap kept: " + ("unknown" if gap is None else f"{gap:.1%} of estimated compute")
    )
    return lines


class StageClock:
    """A progress callback that adds the time since the last report to the reporting stage."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.totals: dict[str, float] = {}

    def label(self, stage: str) -> str:
        """The stage group a progress stage name belongs to."""
        role, _, step = stage.partition(": ")
        if not step:
            return STAGES.get(stage, stage)
        kind = step.split(" ")[0] if not step.startswith("whole") else "whole model"
        part = "head" if role == "edge" else "tail"
        return STAGES.get(kind, step).format(role=role, part=part)

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Count the time since the previous report to ``stage``."""
        self.add(self.label(stage))

    def add(self, label: str) -> None:
        """Count the time since the previous report (or ``add``) to ``label``."""
        now = time.perf_counter()
        self.totals[label] = self.totals.get(label, 0.0) + now - self.last
        self.last = now


def run_stages(model: Path, out: Path) -> tuple[StageClock, Manifest]:
    """Partition ``model`` in this process as ``--quick`` does; stage times and manifest."""
    from partitioner.partition import PartitionConfig, partition
    from partitioner.profile import ProfileConfig
    from partitioner.profiling import Repetitions
    from partitioner.pruning import PruneConfig
    from partitioner.sources import onnx_source

    clock = StageClock()
    source = onnx_source(model)
    clock.add("open the file (onnx_source, samples)")
    config = PartitionConfig(
        profile=ProfileConfig(reps=Repetitions.quick()),  # what --quick gives the command
        prune=PruneConfig(enabled=True, bandwidth_mbps=(0.1, 1000.0), device="jetson-nano-10w"),
        fidelity_samples=16,
    )
    bundle = partition(source, out, config, progress=clock)
    clock.add("manifest, hashes, read back")
    return clock, bundle.manifest


def stage_lines(clock: StageClock, note: str = "") -> list[str]:
    """The stage times, slowest first, with their shares."""
    total = sum(clock.totals.values())
    lines = [f"\nin-process partition{note}: {total:.1f} s"]
    for label, seconds in sorted(clock.totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {label:<48} {seconds:8.1f} s {seconds / total:6.1%}")
    return lines


def profiled(work: Callable[[], object], top: int) -> list[str]:
    """Run ``work`` under cProfile; its ``top`` functions by own time and by cumulative time."""
    profiler = cProfile.Profile()
    profiler.runcall(work)
    lines = []
    for key in ("tottime", "cumulative"):
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).sort_stats(key).print_stats(top)
        lines.append(f"\ncProfile, top {top} by {key}:")
        lines += [line for line in buffer.getvalue().splitlines() if line.strip()]
    return lines


def main() -> None:
    """Write the model, time the command, print the bundle's figures, and the stages if asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fpn_detector_5m", help="zoo model to partition")
    parser.add_argument("--stages", action="store_true", help="also time each stage in-process")
    parser.add_argument(
        "--cprofile", type=int, default=0, metavar="N", help="profile the in-process run: top N"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for the command")
    args = parser.parse_args()
    from partitioner.byom_zoo import write_zoo_model

    print(f"cpus={os.cpu_count()} load average={os.getloadavg()[0]:.2f} (1 min)")
    with tempfile.TemporaryDirectory(prefix="partition-quick-") as tmp:
        path = write_zoo_model(args.model, Path(tmp) / f"{args.model}.onnx")
        params, nodes = model_counts(path)
        print(f"{args.model}: {params / 1e6:.2f}M parameters, {nodes} nodes")
        print("running: python -m edgesplit partition --model FILE --out DIR --quick", flush=True)
        wall, _ = run_cli(path, Path(tmp) / "bundle", args.timeout)
        verdict = "met" if wall < GOAL_S else "MISSED"
        print(f"  wall time {wall:.1f} s: goal < {GOAL_S:.0f} s {verdict} ({wall / GOAL_S:.0%})")
        print("\n".join(bundle_lines(load_bundle(Path(tmp) / "bundle").manifest)), flush=True)
        if args.stages or args.cprofile:
            out = Path(tmp) / "bundle-in-process"
            holder: list[tuple[StageClock, Manifest]] = []
            if args.cprofile:
                lines = profiled(lambda: holder.append(run_stages(path, out)), args.cprofile)
            else:
                holder.append(run_stages(path, out))
            clock, manifest = holder[0]
            print("\n".join(stage_lines(clock, " under cProfile" if args.cprofile else "")))
            print("\n".join(bundle_lines(manifest)))
            if args.cprofile:
                print("\n".join(lines))
    print(f"load average={os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()
