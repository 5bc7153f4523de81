"""Checks of a well-formed request against the bundle the cloud node serves."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

import wire
from edgesplit.bundle import Bundle, Cut
from edgesplit.errors import BundleError


class RequestRejected(Exception):
    """A request that is well-formed on the wire but cannot be served."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_request(bundle: Bundle, request: wire.InferRequest, max_batch: int) -> Cut:
    """The cut an ``infer`` request asks for, after checking it against the bundle.

    Only what the tensors declare is read (names, dtypes and shapes of
    ``wire.EncodedTensor``, as ``wire.decode(..., encoded=True)`` admits them),
    before any payload is decompressed or dequantized, so that a frame
    declaring more than the cut takes costs no more than its own bytes.

    Raises:
        RequestRejected: another bundle, an unknown or edge-only cut, a tensor of the
            wrong name, shape, dtype or batch size.
    """
    if request.bundle != bundle.id:
        raise RequestRejected(
            "bundle_mismatch",
            f"request for bundle={request.bundle[:12]} but this node serves "
            f"bundle={bundle.id[:12]}; deploy the same bundle on both sides",
        )
    try:
        cut = bundle.manifest.cut(request.cut)
    except BundleError as exc:
        raise RequestRejected("unknown_cut", str(exc)) from exc
    if cut.tail is None:
        raise RequestRejected(
            "unknown_cut", f"cut {cut.id} is edge-only: the cloud has no tail for it"
        )
    names = [t.name for t in request.tensors]
    if names != list(cut.names):
        raise RequestRejected(
            "shape",
            f"cut {cut.id} takes {len(cut.names)} tensor(s) {list(cut.names)} in this order, "
            f"got {names}",
        )
    if bundle.manifest.model.fixed_batch:
        max_batch = 1  # the model's batch axis is fixed to 1
    batch = None
    for expected, tensor in zip(cut.tensors, request.tensors, strict=True):
        shape = tuple(tensor.shape)
        if len(shape) != len(expected.shape) + 1 or shape[1:] != expected.shape:
            raise RequestRejected(
                "shape",
                f"cut {cut.id}: tensor {tensor.name!r} has shape {shape}, expected "
                f"(batch, *{expected.shape})",
            )
        if np.dtype(tensor.dtype) != np.dtype(expected.dtype):
            raise RequestRejected(
                "shape",
                f"cut {cut.id}: tensor {tensor.name!r} has dtype {tensor.dtype}, expected "
                f"{expected.dtype}",
            )
        if batch is not None and shape[0] != batch:
            raise RequestRejected(
                "shape", f"cut {cut.id}: tensor {tensor.name!r} has {shape[0]} rows, not {batch}"
            )
        batch = shape[0]
    assert batch is not None
    if not 1 <= batch <= max_batch:
        raise RequestRejected("shape", f"batch={batch} outside 1..{max_batch}")
    return cut


def largest_request_bytes(bundles: Iterable[Bundle], max_batch: int) -> int:
    """Bytes of the largest tensor frame an honest ``infer`` may carry to these bundles.

    The largest tensor of any cut at ``max_batch`` rows in its own dtype (``raw``;
    every other codec is smaller, a compressor adds at most a few bytes per KiB,
    counted here). A frame beyond it cannot be a valid request.
    """
    largest = 0
    for bundle in bundles:
        for cut in bundle.manifest.cuts:
            if cut.tail is None:
                continue
            for tensor in cut.tensors:
                nbytes = max_batch * math.prod(tensor.shape) * np.dtype(tensor.dtype).itemsize
                largest = max(largest, nbytes)
    # lz4 and zstd expand incompressible data by well under 1%, plus a small frame header.
    return largest + largest // 128 + 1024
