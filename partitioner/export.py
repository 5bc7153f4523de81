"""Export a ``ModelSpec`` to ONNX, checked and verified against torch in ONNX Runtime.

The export uses torch's TorchScript-based exporter (``dynamo=False``): it keeps the
module path in node names (``/block2/block2.0/Conv``), which is what the cut-point
search and the reports read. Every input and output gets a dynamic ``batch`` axis.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from edgesplit.errors import ModelError
from partitioner.atomic import atomic_output
from partitioner.models import MODEL_NAMES, ModelSpec, build_model, load_factory

VERIFY_TOLERANCE = 1e-4
"""Largest ONNX Runtime vs torch difference allowed, relative to max(1, max |output|)."""

VERIFY_BATCH = 2
"""Batch size of the random input the export is verified on."""

# ONNX Runtime's errors derive from Exception only; these are the ones a bad model raises.
_ORT_ERRORS: tuple[type[Exception], ...] = (
    RuntimeError,
    ValueError,
    _ort_state.Fail,
    _ort_state.InvalidArgument,
    _ort_state.InvalidGraph,
    _ort_state.InvalidProtobuf,
    _ort_state.NoSuchFile,
    _ort_state.NotImplemented,
    _ort_state.RuntimeException,
)
_EXPORT_ERRORS: tuple[type[Exception], ...] = (
    RuntimeError,  # includes torch.onnx.OnnxExporterError
    ValueError,
    TypeError,
    torch.jit.Error,
    onnx.checker.ValidationError,
)


def export_onnx(spec: ModelSpec, path: Path, *, opset: int = 17) -> Path:
    """Export a model to ONNX, then check it and verify it against torch.

    The graph has one input ``input`` and the outputs ``spec.output_names``, all with
    a dynamic batch axis named ``batch``; constants are folded (batch norm goes into
    the convolutions). The file appears at ``path`` only once it has passed
    ``onnx.checker`` and matched torch on a random batch in ONNX Runtime.

    Args:
        spec: The model to export.
        path: Destination ``.onnx`` file; its folder is created if missing.
        opset: ONNX opset version.

    Returns:
        ``path``.

    Raises:
        ModelError: If the export, the check or the verification fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = spec.module.eval()
    example = torch.zeros((1, *spec.input_shape))
    _check_output_count(spec, example)
    dynamic_axes = {name: {0: "batch"} for name in ("input", *spec.output_names)}
    with atomic_output(path) as tmp:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore", category=DeprecationWarning)
                warnings.simplefilter("ignore", category=FutureWarning)
                torch.onnx.export(
                    module,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    input_names=["input"],
                    output_names=list(spec.output_names),
                    dynamic_axes=dynamic_axes,
                    opset_version=opset,
                    do_constant_folding=True,
                )
            onnx.checker.check_model(str(tmp))
        except _EXPORT_ERRORS as exc:
            raise ModelError(
                f"model {spec.name!r}: ONNX export to {path} failed with opset={opset}: {exc}"
            ) from exc
        verify_onnx(spec, tmp)
    return path


def _check_output_count(spec: ModelSpec, example: torch.Tensor) -> None:
    """Raise ModelError unless forward returns one tensor per name in ``output_names``."""
    with torch.no_grad():
        out = spec.module(example)
    count = 1 if isinstance(out, torch.Tensor) else len(out)
    if count != len(spec.output_names):
        raise ModelError(
            f"model {spec.name!r}: forward returns {count} outputs but "
            f"output_names={spec.output_names!r} names {len(spec.output_names)}"
        )


def verify_onnx(spec: ModelSpec, path: Path, *, batch: int = VERIFY_BATCH, seed: int = 0) -> float:
    """Check that ONNX Runtime computes what torch computes on a random batch.

    Args:
        spec: The model the file was exported from.
        path: The ``.onnx`` file.
        batch: Batch size of the random input.
        seed: Seed of the random input.

    Returns:
        The largest absolute difference over all outputs.

    Raises:
        ModelError: If an output is missing, has another shape, or differs by more
            than ``VERIFY_TOLERANCE`` relative to its magnitude.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *spec.input_shape), dtype=np.float32)
    with torch.no_grad():
        expected = spec.module.eval()(torch.from_numpy(x))
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(list(spec.output_names), {"input": x})
    except _ORT_ERRORS as exc:
        raise ModelError(f"model {spec.name!r}: ONNX Runtime cannot run {path}: {exc}") from exc
    if len(expected) != len(spec.output_names):
        raise ModelError(
            f"model {spec.name!r}: forward returns {len(expected)} outputs but "
            f"output_names={spec.output_names!r} names {len(spec.output_names)}"
        )
    worst = 0.0
    for name, want, have in zip(spec.output_names, expected, got, strict=True):
        want_np = want.numpy()
        if want_np.shape != have.shape:
            raise ModelError(
                f"model {spec.name!r}: ONNX output {name!r} has shape={have.shape}, "
                f"torch gives shape={want_np.shape}"
            )
        diff = float(np.max(np.abs(want_np - have))) if want_np.size else 0.0
        limit = VERIFY_TOLERANCE * max(1.0, float(np.max(np.abs(want_np))) if want_np.size else 1.0)
        if diff > limit:
            raise ModelError(
                f"model {spec.name!r}: ONNX Runtime output {name!r} differs from torch by "
                f"max_abs_diff={diff:.3g} > limit={limit:.3g}; the export is not faithful"
            )
        worst = max(worst, diff)
    return worst


def resolve_model(ref: str, input_shape: tuple[int, ...] | None = None) -> ModelSpec:
    """Build a model from a zoo name or a ``package.module:factory`` reference.

    Args:
        ref: One of ``MODEL_NAMES``, or ``package.module:factory``.
        input_shape: Input shape without the batch axis, for a factory that returns
            a bare ``nn.Module``.

    Returns:
        The model's spec.

    Raises:
        ModelError: If the name is unknown or the factory fails.
    """
    if ":" in ref:
        return load_factory(ref, input_shape)
    if ref not in MODEL_NAMES:
        raise ModelError(
            f"unknown model {ref!r}: give a zoo name ({', '.join(MODEL_NAMES)}) "
            "or a factory as 'package.module:factory'"
        )
    return build_model(ref)


__all__ = [
    "VERIFY_BATCH",
    "VERIFY_TOLERANCE",
    "export_onnx",
    "resolve_model",
    "verify_onnx",
]
