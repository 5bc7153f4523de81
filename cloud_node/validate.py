"""Checks of a well-formed request against the bundle the cloud node serves."""

from __future__ import annotations

import numpy as np

import wire
from edgesplit.bundle import Bundle, Cut
from edgesplit.errors import BundleError


class RequestRejected(Exception):
    """A request that is well-formed on the wire but cannot be served."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_request(
    bundle: Bundle, message: wire.Message, arrays: dict[str, np.ndarray], max_batch: int
) -> Cut:
    """The cut an ``infer`` request asks for, after checking it against the bundle.

    Raises:
        RequestRejected: another bundle, an unknown or edge-only cut, a tensor of the
            wrong name, shape, dtype or batch size.
    """
    bundle_id = message.meta.get("bundle")
    if bundle_id != bundle.id:
        raise RequestRejected(
            "bundle_mismatch",
            f"request for bundle={str(bundle_id)[:12]} but this node serves "
            f"bundle={bundle.id[:12]}; deploy the same bundle on both sides",
        )
    cut_id = message.meta.get("cut")
    try:
        cut = bundle.manifest.cut(str(cut_id))
    except BundleError as exc:
        raise RequestRejected("unknown_cut", str(exc)) from exc
    if cut.tail is None:
        raise RequestRejected(
            "unknown_cut", f"cut {cut.id} is edge-only: the cloud has no tail for it"
        )
    if set(arrays) != {cut.name}:
        raise RequestRejected(
            "shape", f"cut {cut.id} takes one tensor named {cut.name!r}, got {sorted(arrays)}"
        )
    value = arrays[cut.name]
    if value.ndim != len(cut.shape) + 1 or tuple(value.shape[1:]) != cut.shape:
        raise RequestRejected(
            "shape",
            f"cut {cut.id}: tensor shape {value.shape} does not match (batch, *{cut.shape})",
        )
    if not 1 <= value.shape[0] <= max_batch:
        raise RequestRejected("shape", f"batch={value.shape[0]} outside 1..{max_batch}")
    if value.dtype != np.dtype(cut.dtype):
        raise RequestRejected("shape", f"cut {cut.id}: dtype {value.dtype}, expected {cut.dtype}")
    return cut
