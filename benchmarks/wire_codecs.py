"""Speed, size and memory of each wire codec, against the previous implementation.

For a ReLU-like float32 activation of 200 KB and of 2 MB, and each codec, prints
the bytes on the wire, then the median and p95 encode and decode time in
microseconds of the current ``wire.codecs`` ("new") and of the implementation
before issue 18 ("old", kept below as ``_baseline_*``), with the ratio new/old
of the medians. Runs are interleaved (each repetition times every codec, new
and old in alternating order) so that a noisy machine slows both alike. A
second table gives the peak memory that one encode and one decode allocate
(tracemalloc, which sees numpy's buffers), beside the size of what they
return: anything above that is temporary. Both implementations must give the
same wire bytes and the same decoded values; the script checks that first.

The activation is ReLU(N(0, 1) + 0.52), about 30% exact zeros; real feature
maps are spatially correlated and usually compress better than this noise.

Run: ``python -m benchmarks.wire_codecs [--runs N]``
"""

from __future__ import annotations

import argparse
import gc
import math
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

import numpy as np

from edgesplit.errors import PayloadError
from wire import (
    ALLOWED_DTYPES,
    SUPPORTED_CODECS,
    Codec,
    Limits,
    TensorMeta,
    decode_tensor,
    encode_tensor,
    parse_codec,
)
from wire.codecs import compress, wire_array
from wire.registry import wire_dtype

SHAPES = {"200 KB": (1, 64, 28, 28), "2 MB": (1, 128, 64, 64)}  # float32: 4 bytes a value
CODECS = ("raw", "fp16", "int8", "int8+lz4", "fp16+lz4", "int8+zstd")
RUNS = {"200 KB": 400, "2 MB": 60}
SHIFT = 0.5244  # P(N(0, 1) < -0.5244) = 0.30
LIMITS = Limits()


# --- the implementation before issue 18, for the side-by-side comparison -----------------
# Copied from wire/codecs.py as it was (encode_tensor, decode_tensor and the int8 helpers;
# the helpers they share with today's module are imported): fp16 through numpy's casts,
# int8 through a whole-array float scratch with a clip pass, int8 decode through ufunc
# casting loops.


def _baseline_quantize_int8(name: str, array: np.ndarray) -> tuple[np.ndarray, float, int]:
    if array.size == 0:
        return np.empty(array.shape, dtype=np.int8), 1.0, 0
    work = np.asarray(array, dtype=np.result_type(array.dtype, np.float32)).reshape(-1)
    lo, hi = float(work.min()), float(work.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise PayloadError(
            f"tensor {name!r}: int8 cannot represent NaN or inf (min={lo} max={hi}); "
            "use codec raw or fp16 for this tensor"
        )
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi / 255 - lo / 255, float(np.finfo(work.dtype).tiny)) if hi > lo else 1.0
    zero_point = -128 - round(lo / scale)
    zero_point = min(max(zero_point, -128), 127)
    q = work / scale
    np.rint(q, out=q)
    q += zero_point
    np.clip(q, -128, 127, out=q)
    return q.astype(np.int8), scale, zero_point


def _baseline_dequantize_int8(
    q: np.ndarray, dtype: str, scale: float, zero_point: int
) -> np.ndarray:
    out = np.empty(q.shape, dtype=dtype)
    work = np.float64 if dtype == "float64" else np.float32
    np.subtract(q, work(zero_point), out=out, dtype=work, casting="same_kind")
    finite_max = float(np.finfo(dtype).max)
    with np.errstate(over="ignore"):
        np.multiply(out, work(scale), out=out, dtype=work, casting="same_kind")
        if 255 * scale > finite_max:
            np.clip(out, -finite_max, finite_max, out=out)
    return out


def _baseline_encode_tensor(
    name: str, array: np.ndarray, codec: str | Codec
) -> tuple[TensorMeta, memoryview | bytes]:
    parsed = parse_codec(codec.name if isinstance(codec, Codec) else codec)
    if not isinstance(name, str) or not name:
        raise PayloadError(f"tensor name must be a non-empty string, got {name!r}")
    if not isinstance(array, np.ndarray):
        raise PayloadError(f"tensor {name!r}: expected a numpy array, got {type(array).__name__}")
    dtype = array.dtype.name
    if dtype not in ALLOWED_DTYPES:
        raise PayloadError(
            f"tensor {name!r}: dtype={array.dtype} cannot be sent; "
            f"allowed: {', '.join(ALLOWED_DTYPES)}"
        )
    if parsed.quantizer != "raw" and array.dtype.kind != "f":
        parsed = Codec("raw", parsed.compressor)
    scale: float | None = None
    zero_point: int | None = None
    if parsed.quantizer == "int8":
        wire, scale, zero_point = _baseline_quantize_int8(name, array)
    else:
        with np.errstate(over="ignore"):
            wire = np.ascontiguousarray(array, dtype=wire_dtype(parsed, dtype))
    flat = wire.reshape(-1).view(np.uint8).data
    payload = flat if parsed.compressor is None else compress(parsed.compressor, flat)
    shape = tuple(int(d) for d in array.shape)
    meta = TensorMeta(name, dtype, shape, parsed.name, len(payload), scale, zero_point)
    return meta, payload


def _baseline_decode_tensor(
    meta: TensorMeta, payload: object, limits: Limits, *, index: int | None = None
) -> np.ndarray:
    codec, wire = wire_array(meta, payload, limits, index)  # framing: unchanged
    if codec.quantizer == "int8":
        assert meta.scale is not None and meta.zero_point is not None
        return _baseline_dequantize_int8(wire, meta.dtype, meta.scale, meta.zero_point)
    return wire.astype(np.dtype(meta.dtype), copy=False)


# --- measuring ------------------------------------------------------------------------------

Encoder = Callable[[str, np.ndarray, str], tuple[TensorMeta, memoryview | bytes]]
Decoder = Callable[[TensorMeta, object, Limits], np.ndarray]
IMPLEMENTATIONS: dict[str, tuple[Encoder, Decoder]] = {
    "new": (encode_tensor, decode_tensor),
    "old": (_baseline_encode_tensor, _baseline_decode_tensor),
}


def _elapsed_ns(fn: Callable[[], object]) -> int:
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


def _peak_bytes(fn: Callable[[], object], source: np.ndarray) -> tuple[int, int]:
    """Peak bytes traced while ``fn()`` runs, and how many of them its result still holds.

    The result is an encoded payload or a decoded array; where it is a view of
    ``source`` (a raw frame or array), it holds nothing new.
    """
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    if isinstance(result, tuple):  # encode: (meta, payload)
        result = np.frombuffer(result[1], dtype=np.uint8)
    assert isinstance(result, np.ndarray)
    return peak, 0 if np.shares_memory(result, source) else result.nbytes


def _check_same(act: np.ndarray, codec: str) -> None:
    """Both implementations give the same bytes, and the same values from each other's bytes."""
    meta, payload = encode_tensor("act", act, codec)
    old_meta, old_payload = _baseline_encode_tensor("act", act, codec)
    assert meta == old_meta and bytes(payload) == bytes(old_payload), codec
    frame = bytes(payload)
    new_out = decode_tensor(meta, frame, LIMITS)
    old_out = _baseline_decode_tensor(meta, frame, LIMITS)
    assert new_out.dtype == old_out.dtype == act.dtype, codec
    assert new_out.tobytes() == old_out.tobytes(), codec


def _quantiles_us(samples: list[int]) -> tuple[float, float]:
    """Median and p95 of ``samples`` (nanoseconds), in microseconds."""
    ordered = np.sort(np.asarray(samples, dtype=np.int64))
    return float(np.median(ordered)) / 1000, float(np.quantile(ordered, 0.95)) / 1000


def time_codecs(
    act: np.ndarray, codecs: tuple[str, ...], runs: int
) -> dict[tuple[str, str, str], list[int]]:
    """Encode and decode times in ns, keyed by (codec, implementation, "enc"/"dec")."""
    frames = {}
    for codec in codecs:
        meta, payload = encode_tensor("act", act, codec)
        frames[codec] = (meta, bytes(payload))  # what the receiver gets from the socket
    times: dict[tuple[str, str, str], list[int]] = {
        (c, impl, op): [] for c in codecs for impl in IMPLEMENTATIONS for op in ("enc", "dec")
    }
    order = list(IMPLEMENTATIONS)
    gc.disable()
    try:
        for run in range(runs + 1):  # run 0 warms up and is dropped
            for codec in codecs:
                meta, frame = frames[codec]
                for impl in order if run % 2 else order[::-1]:
                    encode, decode = IMPLEMENTATIONS[impl]
                    enc = _elapsed_ns(partial(encode, "act", act, codec))
                    dec = _elapsed_ns(partial(decode, meta, frame, LIMITS))
                    if run:
                        times[codec, impl, "enc"].append(enc)
                        times[codec, impl, "dec"].append(dec)
    finally:
        gc.enable()
    return times


def memory_row(act: np.ndarray, codec: str) -> str:
    """One memory table row: peak KB of an encode and of a decode, new/old, and what they keep."""
    meta, payload = encode_tensor("act", act, codec)
    frame = np.frombuffer(bytes(payload), dtype=np.uint8)
    cells, kept = [], []
    for op, source in (("enc", act), ("dec", frame)):
        peaks = []
        for impl in ("new", "old"):
            encode, decode = IMPLEMENTATIONS[impl]
            call = (
                partial(encode, "act", act, codec)
                if op == "enc"
                else partial(decode, meta, frame, LIMITS)
            )
            peak, held = _peak_bytes(call, source)
            peaks.append(peak)
        cells.append(f"{peaks[0] / 1024:.0f}/{peaks[1] / 1024:.0f}")
        kept.append(f"{held / 1024:.0f}")
    return "{:<10} {:>22} {:>22} {:>10}".format(codec, *cells, "/".join(kept))


def timing_rows(act: np.ndarray, codecs: tuple[str, ...], runs: int) -> list[str]:
    """The timing table: one row per codec, medians and p95 in us, new and old."""
    times = time_codecs(act, codecs, runs)
    head = "{:<10} {:>8} | {:>15} {:>15} {:>7} | {:>15} {:>15} {:>7}"
    rows = [
        head.format(
            "codec",
            "wire B",
            "enc new med/p95",
            "enc old med/p95",
            "new/old",
            "dec new med/p95",
            "dec old med/p95",
            "new/old",
        )
    ]
    for codec in codecs:
        cells = []
        for op in ("enc", "dec"):
            new_med, new_p95 = _quantiles_us(times[codec, "new", op])
            old_med, old_p95 = _quantiles_us(times[codec, "old", op])
            cells += [
                f"{new_med:.1f}/{new_p95:.1f}",
                f"{old_med:.1f}/{old_p95:.1f}",
                f"{new_med / old_med:.2f}",
            ]
        rows.append(head.format(codec, encode_tensor("act", act, codec)[0].nbytes, *cells))
    return rows


def main() -> None:
    """Print the timing and memory tables for each activation size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="repetitions per size")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    codecs = tuple(c for c in CODECS if c in SUPPORTED_CODECS)
    lines = []
    for label, shape in SHAPES.items():
        act = np.maximum(rng.standard_normal(shape, dtype=np.float32) + SHIFT, 0)
        for codec in codecs:
            _check_same(act, codec)
        runs = args.runs or RUNS[label]
        zeros = float(np.mean(act == 0))
        lines.append(
            f"\n{label}: float32 {shape}, {act.nbytes} bytes, zeros={zeros:.0%}, {runs} runs "
            "(us; new and old give the same bytes)"
        )
        lines += timing_rows(act, codecs, runs)
        row = "{:<10} {:>22} {:>22} {:>10}"
        lines.append(row.format("memory KB", "enc peak new/old", "dec peak new/old", "kept e/d"))
        lines += [memory_row(act, codec) for codec in codecs]
    print("\n".join(lines))  # noqa: T201 - this script's output is the tables


if __name__ == "__main__":
    main()
