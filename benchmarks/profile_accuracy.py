"""Does the profile predict what a split really costs? And how long does profiling take?

For each model: profile the edge and the cloud side on this machine with the
default repetitions (5 warm-up, 30 timed runs), timing the whole profile step;
then, for every candidate cut, run the extracted head and tail back to back as
one request does (same repetitions) and compare that measured median with the
profile's prediction (head median + tail median). The target is within 10% for
every cut; the script exits non-zero when a cut misses it.

Wire time is left out on purpose: it depends on the link, not on the profile.

Threads matter for tiny models: with several intra-op threads that do not
spin, a 50 µs model spends as long waking threads as computing, and its
timings turn bimodal; ``name@1`` profiles a model with one thread (the same
setting must then be used by the runtime, which the profile records).

Run: ``python benchmarks/profile_accuracy.py [--models resnet18,branchynet@1] [--tolerance 0.10]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from partitioner.prepare import prepare
from partitioner.profile import ProfileConfig, measure_split_s, predicted_split_s, profile_target
from partitioner.sources import load_source


def run(model: str, tolerance: float, threads: int) -> tuple[int, int]:
    """Print the table for one model; return (cuts within tolerance, cuts)."""
    config = ProfileConfig(threads=threads)
    with tempfile.TemporaryDirectory() as work:
        source = load_source(model, Path(work))
        started = time.perf_counter()
        prepared = prepare(source, config.providers, config.threads)
        prepare_s = time.perf_counter() - started
        edge = profile_target(prepared, "edge", config)
        edge_s = time.perf_counter() - started - prepare_s
        cloud = profile_target(prepared, "cloud", config)
        total_s = time.perf_counter() - started
        print(
            f"\n{model} ({threads or 'default'} threads): {len(prepared.cuts)} cuts; "
            f"profiling took {total_s:.1f} s (prepare {prepare_s:.1f} s, edge {edge_s:.1f} s, "
            f"cloud {total_s - prepare_s - edge_s:.1f} s); "
            f"whole model {edge.whole_model.median_s * 1e3:.3f} ms"
        )
        print(f"{'cut':>5} {'predicted ms':>13} {'measured ms':>12} {'error':>8}")
        errors = []
        for plan in prepared.cuts:
            predicted = predicted_split_s(edge, cloud, plan.id)
            measured = measure_split_s(prepared, plan, config).median_s
            error = (predicted - measured) / measured
            errors.append(abs(error))
            flag = "" if abs(error) <= tolerance else "  <-- over"
            print(
                f"{plan.id:>5} {predicted * 1e3:13.3f} {measured * 1e3:12.3f} {error:+8.1%}{flag}"
            )
        within = sum(e <= tolerance for e in errors)
        print(
            f"{model}: |error| median {statistics.median(errors):.1%}, max {max(errors):.1%}; "
            f"{within}/{len(errors)} cuts within {tolerance:.0%}"
        )
        return within, len(errors)


def main() -> int:
    """Run every model; 0 when every cut is within the tolerance."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        default="resnet18,branchynet@1",
        help="comma-separated models, each optionally @THREADS (default: --threads)",
    )
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed relative error")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    ok = True
    for spec in args.models.split(","):
        model, _, threads = spec.partition("@")
        within, total = run(model, args.tolerance, int(threads) if threads else args.threads)
        ok = ok and within == total
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
