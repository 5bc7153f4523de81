"""Cost of a multi-tensor cut on the wire: a request of four tensors against one of one.

For a float32 payload of about 200 KB and of 2 MB in all, and each codec (raw,
fp16, int8, int8+lz4), prints the median and p95 in microseconds of what the
edge does to send a request (build the ``InferRequest``, ``wire.encode`` it to
frames), of what the cloud takes in (``wire.read_envelope``; ``wire.decode_body``
with the payloads kept encoded and the bundle, cut, tensor names, dtypes and
shapes checked, as the ingress does; then every tensor decoded to its array, as
a worker does) and of both, for three requests of the same total size:

- ``1 tensor``: one activation, the shapes of benchmarks/wire_codecs.py;
- ``4 tensors``: four FPN-like maps of one channel count, each level half the
  resolution of the one before (within 1% of the 1-tensor bytes);
- ``3 + mask``: three such maps and an int64 [1, 32] attention mask (within 1%).

Beside each multi-tensor row it prints the difference of the medians, multi-tensor
minus 1-tensor, in ms (edge encode / cloud decode / both), against the goal: both
under 0.1 ms. The totals differ by up to 1%, which moves the difference by up to
1% of the 1-tensor time. Repetitions are interleaved (each times every codec
and request, the requests in alternating order) so that a noisy machine slows
all alike; the first is a warm-up and is dropped.

Before timing, the script checks that every request decodes to its arrays (raw
exactly; fp16 within 2**-11 relative; int8 within half a step; the mask exactly,
and sent ``raw``, compressed or not, whatever the codec asked), and that a request
of more tensors than ``Limits.max_tensors`` is refused while one of exactly
that many is not; it prints the refusals.

The activations are ReLU(N(0, 1) + 0.52), about 30% exact zeros, as in
benchmarks/wire_codecs.py.

Run: ``python -m benchmarks.multi_tensor_wire [--runs N]``
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

import wire
from edgesplit.errors import WireError

CODECS = ("raw", "fp16", "int8", "int8+lz4")
RUNS = {"200 KB": 1000, "2 MB": 200}
SHIFT = 0.5244  # P(N(0, 1) < -0.5244) = 0.30: ReLU leaves 30% exact zeros
GOAL_MS = 0.1
MATCH = 0.01  # the multi-tensor totals are within 1% of the 1-tensor bytes
BUNDLE, CUT = "b" * 64, "c05"
LIMITS = wire.Limits()
MASK_SHAPE = (1, 32)

Shape = tuple[int, ...]


def fpn(channels: int, size: int, levels: int) -> list[Shape]:
    """``levels`` square maps of ``channels``, ``size`` pixels a side halved at each level."""
    return [(1, channels, size >> k, size >> k) for k in range(levels)]


# Per size: the 1-tensor shape, the 4 maps, the 3 maps beside the mask (all float32).
SHAPES: dict[str, tuple[Shape, list[Shape], list[Shape]]] = {
    "200 KB": ((1, 64, 28, 28), fpn(12, 56, 4), fpn(24, 40, 3)),
    "2 MB": ((1, 128, 64, 64), fpn(24, 128, 4), fpn(32, 112, 3)),
}
CASES = ("1 tensor", "4 tensors", "3 + mask")


def activation(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """A ReLU-like float32 activation: ReLU(N(0, 1) + SHIFT)."""
    return np.maximum(rng.standard_normal(shape, dtype=np.float32) + SHIFT, 0)


def requests_of(label: str, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """The arrays of each case's request, by name, for the size ``label``."""
    single, four, three = SHAPES[label]
    mask = np.zeros(MASK_SHAPE, dtype=np.int64)
    mask[:, : MASK_SHAPE[1] * 3 // 4] = 1  # a padded sequence: the tail is masked out
    arrays = {
        "1 tensor": {"act": activation(rng, single)},
        "4 tensors": {f"p{k + 2}": activation(rng, s) for k, s in enumerate(four)},
        "3 + mask": {
            **{f"p{k + 2}": activation(rng, s) for k, s in enumerate(three)},
            "attention_mask": mask,
        },
    }
    reference = nbytes(arrays["1 tensor"])
    for case in CASES[1:]:
        miss = nbytes(arrays[case]) / reference - 1
        if abs(miss) > MATCH:
            raise ValueError(
                f"{label} {case}: {miss:+.2%} off the 1-tensor bytes, over {MATCH:.0%}"
            )
    return arrays


def nbytes(arrays: dict[str, np.ndarray]) -> int:
    """Bytes of the arrays, decoded."""
    return sum(a.nbytes for a in arrays.values())


# -- the two sides -----------------------------------------------------------------------------


def edge_encode(arrays: dict[str, np.ndarray], codec: str) -> wire.Frames:
    """What the edge does to send: the request built from its arrays, encoded to frames."""
    request = wire.InferRequest(1000, BUNDLE, CUT, wire.tensors_of(arrays))
    return wire.encode(request, codec)


Declared = list[tuple[str, str, Shape]]


def cloud_decode(
    frames: Sequence[object], declared: Declared, limits: wire.Limits = LIMITS
) -> dict[str, np.ndarray]:
    """What the cloud does with received frames: header, fields checked, then arrays.

    The ingress reads the envelope and the fields with the payloads kept
    encoded, and checks bundle, cut and the tensors declared before any
    payload (as cloud_node's ``check_request``); a worker then decodes each
    tensor.

    Raises:
        WireError: the frames are refused by the format.
        ValueError: a request for another bundle, cut or tensors.
    """
    envelope = wire.read_envelope(frames, limits)
    if envelope.kind != wire.InferRequest.kind:
        raise ValueError(f"kind={envelope.kind!r}, expected infer")

    def check(message: wire.AnyMessage) -> None:
        if not isinstance(message, wire.InferRequest):
            raise ValueError(f"a {type(message).__name__}, expected an InferRequest")
        if message.bundle != BUNDLE or message.cut != CUT:
            raise ValueError(f"bundle={message.bundle[:12]} cut={message.cut}: not served")
        got = [(t.name, t.dtype, t.shape) for t in message.tensors]
        if got != declared:
            raise ValueError(f"tensors {got}, expected {declared}")

    message = wire.decode_body(envelope, limits, encoded=True, check=check)
    assert isinstance(message, wire.InferRequest)  # by check
    return message.arrays(limits)


def declared_of(arrays: dict[str, np.ndarray]) -> Declared:
    """The (name, dtype, shape) the cloud expects of a request of ``arrays``."""
    return [(name, a.dtype.name, tuple(a.shape)) for name, a in arrays.items()]


def received(frames: wire.Frames) -> list[bytes]:
    """The frames as the cloud gets them off the socket (copies)."""
    return [bytes(f) for f in frames]


# -- checks before timing ----------------------------------------------------------------------


def check_round_trip(arrays: dict[str, np.ndarray], codec: str) -> None:
    """The cloud decodes the edge's request to its arrays, within the codec's tolerance.

    Raises:
        ValueError: naming the tensor, the codec and what is off.
    """
    frames = received(edge_encode(arrays, codec))
    metas = {m.name: m for m in wire.read_envelope(frames, LIMITS).tensors}
    decoded = cloud_decode(frames, declared_of(arrays))
    lossless = wire.Codec("raw", wire.parse_codec(codec).compressor).name
    for name, original in arrays.items():
        meta, out = metas[name], decoded[name]
        where = f"{codec} {name} {original.dtype}{tuple(original.shape)} sent {meta.codec}"
        if out.dtype != original.dtype or out.shape != original.shape:
            raise ValueError(f"{where}: decoded {out.dtype}{out.shape}")
        x, y = original.astype(np.float64), out.astype(np.float64)
        if original.dtype.kind != "f" or meta.codec == lossless:
            if meta.codec != lossless or not np.array_equal(out, original):
                raise ValueError(f"{where}: not sent {lossless} or not equal")
            continue
        if meta.codec.startswith("fp16"):
            slack, relative = 2.0**-24, 2.0**-11
        else:
            assert meta.scale is not None  # int8 descriptors carry one
            slack, relative = meta.scale * (0.5 + 1e-4), float(np.finfo(np.float32).eps)
        bound = slack + relative * np.abs(x)
        worst = float(np.max(np.abs(y - x) - bound, initial=-math.inf))
        if worst > 0:
            raise ValueError(f"{where}: off by {worst:.3g} past the codec's tolerance")


def tensor_limit_refusals() -> list[str]:
    """A request of ``max_tensors + 1`` tensors refused by name, one of ``max_tensors`` taken.

    Under the default limits and under limits where ``max_tensors`` is below
    ``max_ndim`` (msgpack's list bound is the larger of ``max_tensors + 1`` and
    ``max_ndim``: the header's own check, which names ``max_tensors``, refuses
    one tensor too many).

    Raises:
        ValueError: a request over the limit accepted, or refused by another check;
            or one at the limit refused.
    """
    lines = []
    for limits in (LIMITS, wire.Limits(max_tensors=4)):
        n = limits.max_tensors
        for count in (n, n + 1):
            arrays = {f"p{i}": np.zeros((1, 8), dtype=np.float32) for i in range(count)}
            frames = received(edge_encode(arrays, "raw"))  # the sender checks no limit
            try:
                cloud_decode(frames, declared_of(arrays), limits)
            except WireError as exc:
                if count <= n:
                    raise ValueError(f"{count} tensors refused at max_tensors={n}: {exc}") from exc
                if f"tensors={count} exceeds max_tensors={n}" not in str(exc):
                    raise ValueError(f"{count} tensors refused, not by max_tensors: {exc}") from exc
                code = wire.error_code(exc)
                lines.append(
                    f"  {count} tensors, max_tensors={n} max_ndim={limits.max_ndim}: refused, "
                    f"{type(exc).__name__} (code {code}): {exc}"
                )
                continue
            if count > n:
                raise ValueError(f"{count} tensors accepted at max_tensors={n}")
    return lines


# -- timing ------------------------------------------------------------------------------------


def _elapsed_ns(fn: Callable[[], object]) -> int:
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


Times = dict[tuple[str, str, str], list[int]]


def time_requests(
    requests: dict[str, dict[str, np.ndarray]], codecs: tuple[str, ...], runs: int
) -> Times:
    """Edge encode and cloud decode times in ns, keyed by (case, codec, "enc"/"dec")."""
    inputs = {
        (case, codec): (received(edge_encode(arrays, codec)), declared_of(arrays))
        for case, arrays in requests.items()
        for codec in codecs
    }
    times: Times = {(case, c, op): [] for case in requests for c in codecs for op in ("enc", "dec")}
    order = list(requests)
    gc.disable()
    try:
        for run in range(runs + 1):  # run 0 warms up and is dropped
            for codec in codecs:
                for case in order if run % 2 else order[::-1]:
                    frames, declared = inputs[case, codec]
                    enc = _elapsed_ns(partial(edge_encode, requests[case], codec))
                    dec = _elapsed_ns(partial(cloud_decode, frames, declared))
                    if run:
                        times[case, codec, "enc"].append(enc)
                        times[case, codec, "dec"].append(dec)
    finally:
        gc.enable()
    return times


def _quantiles_us(samples: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """Median and p95 of ``samples`` (nanoseconds), in microseconds."""
    ordered = np.asarray(samples, dtype=np.int64)
    return float(np.median(ordered)) / 1000, float(np.quantile(ordered, 0.95)) / 1000


def timing_rows(
    requests: dict[str, dict[str, np.ndarray]], codecs: tuple[str, ...], runs: int
) -> tuple[list[str], list[float]]:
    """The table (one row per codec and case) and every multi-tensor difference of both, ms."""
    times = time_requests(requests, codecs, runs)
    head = "{:<9} {:<10} {:>9} | {:>14} {:>14} {:>14} | {:>22} {:>5}"
    rows = [
        head.format(
            "codec",
            "request",
            "wire B",
            "edge enc",
            "cloud dec",
            "both",
            "4t-1t ms enc/dec/both",
            "goal",
        ),
        head.format("", "", "", "med/p95", "med/p95", "med/p95", "", f"<{GOAL_MS}"),
    ]
    deltas = []
    for codec in codecs:
        medians: dict[str, tuple[float, float, float]] = {}
        for case in CASES:
            enc = np.asarray(times[case, codec, "enc"])
            dec = np.asarray(times[case, codec, "dec"])
            cells = []
            meds = []
            for samples in (enc, dec, enc + dec):
                med, p95 = _quantiles_us(samples)
                cells.append(f"{med:.1f}/{p95:.1f}")
                meds.append(med)
            medians[case] = (meds[0], meds[1], meds[2])
            wire_bytes = sum(len(f) for f in received(edge_encode(requests[case], codec))[1:])
            if case == CASES[0]:
                diff, verdict = "-", ""
            else:
                d = [(m - b) / 1000 for m, b in zip(medians[case], medians[CASES[0]], strict=True)]
                diff = "{:+.3f}/{:+.3f}/{:+.3f}".format(*d)
                verdict = "ok" if d[2] < GOAL_MS else "MISS"
                deltas.append(d[2])
            rows.append(head.format(codec, case, wire_bytes, *cells, diff, verdict))
    return rows, deltas


def describe(label: str, requests: dict[str, dict[str, np.ndarray]], runs: int) -> list[str]:
    """The lines above a size's table: each request's tensors and bytes."""
    reference = nbytes(requests[CASES[0]])
    lines = [f"\n{label}: {runs} runs, microseconds unless said (wire B: payload frames)"]
    for case, arrays in requests.items():
        shapes = " + ".join(f"{a.dtype.name}{tuple(a.shape)}" for a in arrays.values())
        miss = nbytes(arrays) / reference - 1
        lines.append(f"  {case:<9} {nbytes(arrays):>9,} B ({miss:+.2%}): {shapes}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Check the round trips and the tensor limit, then print a table per size."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Run: python -m benchmarks.multi_tensor_wire [--runs N]",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="timed repetitions per size (default "
        + ", ".join(f"{n} at {label}" for label, n in RUNS.items())
        + ")",
    )
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    codecs = tuple(c for c in CODECS if c in wire.SUPPORTED_CODECS)
    missing = sorted(set(CODECS) - set(codecs))
    rng = np.random.default_rng(0)
    requests = {label: requests_of(label, rng) for label in SHAPES}
    for by_case in requests.values():
        for arrays in by_case.values():
            for codec in codecs:
                check_round_trip(arrays, codec)
    lines = [
        f"round trips checked: {len(codecs)} codecs x {len(CASES)} requests x {len(SHAPES)} sizes "
        "(raw exact, fp16 2**-11 relative, int8 half a step, the int64 mask exact and sent raw)",
        "over Limits.max_tensors (one of exactly max_tensors is accepted):",
        *tensor_limit_refusals(),
    ]
    if missing:
        lines.append(f"skipped (compression library not installed): {', '.join(missing)}")
    deltas = []
    for label, by_case in requests.items():
        runs = args.runs or RUNS[label]
        lines += describe(label, by_case, runs)
        rows, found = timing_rows(by_case, codecs, runs)
        lines += rows
        deltas += found
    worst = max(deltas)
    verdict = "met" if worst < GOAL_MS else "missed"
    lines.append(
        f"\ngoal: multi-tensor minus 1-tensor (edge encode + cloud decode, medians) "
        f"< {GOAL_MS} ms: {verdict} (largest {worst:+.3f} ms)"
    )
    print("\n".join(lines))  # noqa: T201 - this script's output is the tables
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
