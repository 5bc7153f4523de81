"""Coverage of the test zoo's models: the largest stretch of edge compute without a cut.

For every model of :mod:`partitioner.byom_zoo` (an FPN detector, a U-Net, a
DeepLab-style segmenter, a vision transformer, a text encoder with an
attention mask, a model of two outputs, a converter-style graph of batch 1),
prints the largest share of the model's estimated compute between two
offered cuts with single-tensor cuts only (what edgesplit offered before cut
sets) and with cut sets (at most ``--max-tensors`` tensors each), the number
of cuts of several tensors, and the largest single layer's share (no cut can
split a layer, so no model does better than that). Goal: under 25% for every
model.

Run: ``python -m benchmarks.coverage [--max-tensors 8]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from partitioner.byom_zoo import TEST_MODELS, write_zoo_model
from partitioner.prepare import prepare
from partitioner.sources import onnx_source


def main() -> None:
    """Print the coverage table (markdown) of the zoo."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tensors", type=int, default=8, help="tensors a cut may hold")
    args = parser.parse_args()
    print(
        "| model | nodes | inputs -> outputs | single-tensor cuts only | with cut sets "
        "| cuts of several tensors | largest layer |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in TEST_MODELS:
            source = onnx_source(write_zoo_model(name, Path(tmp) / f"{name}.onnx"))
            single = prepare(source, max_tensors=1).analysis
            sets = prepare(source, max_tensors=args.max_tensors).analysis
            work = sets.work
            largest = max(work.values()) / sum(work.values())
            multi = sum(len(c.tensors) > 1 for c in sets.cuts if c.kind == "inner")
            worst = max(worst, sets.largest_gap)
            print(
                f"| {name} | {len(source.model.graph.node) if source.model else '?'} "
                f"| {len(source.inputs)} -> {len(source.outputs)} | {single.largest_gap:.0%} "
                f"| {sets.largest_gap:.0%} | {multi} | {largest:.0%} |"
            )
    print(f"\nworst largest stretch with cut sets: {worst:.1%} (goal: under 25%)")


if __name__ == "__main__":
    main()
