"""Bytes that travel from the cloud ingress to a Ray replica, per request: decoded vs as sent.

Before, the ingress decoded each activation and Ray carried the decoded
array to the replica; now the tensor travels as the edge sent it
(``wire.EncodedTensor``: descriptor and quantized, compressed payload) and
the replica decodes it. For every cut with a tail of the bundle and every
codec, this prints the serialized size of one call's request argument both
ways, as Ray serializes it (pickle protocol 5: the in-band bytes plus the
out-of-band buffers), on the real activations of the bundle's test inputs,
and the ratio.

With ``--ray`` it also times both argument kinds through a real local Ray
actor (one CPU), interleaved call by call: the hop plus, for the encoded
kind, the decode that now runs in the replica.

Run from the repository root::

    .venv/bin/python -m benchmarks.replica_bytes [--model resnet18] [--rows 1] [--ray]
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import wire
from benchmarks.runtime_overhead import activation
from edgesplit.bundle import Bundle, load_bundle

CODECS = ("raw", "fp16", "int8", "int8+lz4")


def serialized_bytes(value: object) -> int:
    """Bytes of ``value`` serialized as Ray does: pickle 5 in-band plus out-of-band buffers."""
    buffers: list[pickle.PickleBuffer] = []
    inband = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return len(inband) + sum(memoryview(b).nbytes for b in buffers)


def encoded(name: str, value: np.ndarray, codec: str) -> list[wire.EncodedTensor]:
    """One request's tensors as the ingress now hands them on."""
    frames = wire.encode(wire.InferRequest(1, tensors=(wire.Tensor(name, value),)), codec)
    request = wire.decode(frames, encoded=True)
    assert isinstance(request, wire.InferRequest)
    return [t for t in request.tensors if isinstance(t, wire.EncodedTensor)]


def measure(bundle: Bundle, rows: int) -> list[dict[str, Any]]:
    """One row per (cut, codec): decoded and encoded argument bytes."""
    out = []
    for cut in bundle.manifest.cuts:
        if cut.tail is None or cut.raw_bytes == 0 or len(cut.tensors) > 1:
            continue  # one tensor a cut: the figures compare codecs, not cut shapes
        value = activation(bundle, cut, rows)
        before = serialized_bytes({cut.name: value})
        for codec in CODECS:
            after = serialized_bytes([encoded(cut.name, value, codec)])
            out.append(
                {"cut": cut.id, "codec": codec, "decoded": before, "encoded": after, "value": value}
            )
    return out


def time_ray(rows: list[dict[str, Any]], calls: int) -> dict[tuple[str, str], tuple[float, float]]:
    """Median µs of one actor call carrying the decoded array vs the encoded tensors."""
    import ray

    @ray.remote(num_cpus=1)
    class Replica:
        def decoded(self, inputs: dict[str, np.ndarray]) -> int:
            return len(inputs)

        def encoded(self, requests: list[list[wire.EncodedTensor]]) -> int:
            return sum(t.decode().size for tensors in requests for t in tensors)

    with tempfile.TemporaryDirectory(prefix="rb", dir="/tmp") as temp:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
        try:
            actor = Replica.remote()  # type: ignore[attr-defined]
            timed: dict[tuple[str, str], tuple[float, float]] = {}
            for row in rows:
                name = row["cut"]
                before_arg = {name: row["value"]}
                after_arg = [encoded(name, row["value"], row["codec"])]
                for _ in range(20):  # warm-up
                    ray.get(actor.decoded.remote(before_arg))
                    ray.get(actor.encoded.remote(after_arg))
                a: list[float] = []
                b: list[float] = []
                for i in range(calls):
                    for kind in ("d", "e") if i % 2 else ("e", "d"):
                        began = time.perf_counter()
                        if kind == "d":
                            ray.get(actor.decoded.remote(before_arg))
                            a.append(time.perf_counter() - began)
                        else:
                            ray.get(actor.encoded.remote(after_arg))
                            b.append(time.perf_counter() - began)
                timed[(row["cut"], row["codec"])] = (
                    statistics.median(a) * 1e6,
                    statistics.median(b) * 1e6,
                )
            return timed
        finally:
            ray.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (and the Ray timings with ``--ray``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="branchynet-untrained", help="model to partition")
    p.add_argument("--bundle", type=Path, help="an existing bundle instead of --model")
    p.add_argument("--rows", type=int, default=1, help="samples a request (default 1)")
    p.add_argument("--ray", action="store_true", help="also time the calls through a Ray actor")
    p.add_argument("--calls", type=int, default=200, help="timed calls a variant with --ray")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        if args.bundle:
            bundle = load_bundle(args.bundle, verify="cloud")
        else:
            from benchmarks.triton_direct import build

            bundle = build(args.model, Path(work) / "bundle")
        rows = measure(bundle, args.rows)
        timed = time_ray(rows, args.calls) if args.ray else {}
    print(
        f"bundle {bundle.id[:12]} ({bundle.manifest.model.name}), {args.rows} row(s) a request; "
        "bytes of one call's request argument, serialized as Ray does (pickle 5 + buffers)"
    )
    head = f"{'cut':<6} {'codec':<9} {'decoded B':>11} {'as sent B':>11} {'ratio':>6}"
    if timed:
        head += f" {'decoded µs':>11} {'as sent µs':>11}"
    print(head)
    for row in rows:
        line = (
            f"{row['cut']:<6} {row['codec']:<9} {row['decoded']:>11,} {row['encoded']:>11,} "
            f"{row['decoded'] / row['encoded']:>6.2f}"
        )
        if timed:
            before_us, after_us = timed[(row["cut"], row["codec"])]
            line += f" {before_us:>11.0f} {after_us:>11.0f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
