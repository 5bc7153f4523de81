"""Size and speed of each wire codec on a ReLU-like float32 activation.

Prints, per activation size and codec: bytes on the wire, compression ratio
(raw bytes / wire bytes), and the median encode and decode time over 50 runs.
The activation is ReLU(N(0, 1) + 0.52), about 30% exact zeros; real feature
maps are spatially correlated and usually compress better than this noise.

Run: ``python benchmarks/wire_codecs.py``
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from wire import SUPPORTED_CODECS, Limits, decode_tensor, encode_tensor

RUNS = 50
SHAPES = {"200 KB": (1, 32, 40, 40), "800 KB": (1, 128, 40, 40)}  # float32: 4 bytes a value
SHIFT = 0.5244  # P(N(0, 1) < -0.5244) = 0.30


def median_us(fn: Callable[[], object], runs: int = RUNS) -> float:
    """Median wall time of ``fn()`` in microseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def main() -> None:
    """Print one table row per activation size and codec."""
    rng = np.random.default_rng(0)
    limits = Limits()
    header = ("activation", "codec", "bytes", "ratio", "enc us", "dec us")
    rows = ["{:<10} {:<10} {:>9} {:>6} {:>8} {:>8}".format(*header)]
    for label, shape in SHAPES.items():
        act = np.maximum(rng.standard_normal(shape) + SHIFT, 0).astype(np.float32)
        for codec in SUPPORTED_CODECS:
            meta, payload = encode_tensor("act", act, codec)
            frame = bytes(payload)  # what the receiver gets from the socket
            enc = median_us(lambda act=act, codec=codec: encode_tensor("act", act, codec))
            dec = median_us(lambda meta=meta, frame=frame: decode_tensor(meta, frame, limits))
            ratio = act.nbytes / meta.nbytes
            rows.append(
                f"{label:<10} {codec:<10} {meta.nbytes:>9} {ratio:>6.2f} {enc:>8.1f} {dec:>8.1f}"
            )
        zeros = float(np.mean(act == 0))
        rows.append(f"{label:<10} ({act.nbytes} bytes, zeros={zeros:.0%})")
    print("\n".join(rows))  # noqa: T201 - this script's output is the table


if __name__ == "__main__":
    main()
