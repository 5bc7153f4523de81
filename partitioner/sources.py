"""Turn what the user names (a zoo model, a factory, an ONNX file) into a source to partition."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgesplit.bundle import TensorSpec
from edgesplit.errors import ModelError
from partitioner.onnx_open import open_onnx, random_inputs
from partitioner.prepare import SourceModel

#: Held-out samples used to measure activation sizes when a model has no data set.
RANDOM_SAMPLES = 32


def _safe_name(name: str) -> str:
    """A name fit for Triton model directories: letters, digits, ``-`` and ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "model"


def _random_samples(shape: Sequence[int], n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)


def sidecar_exits(path: Path) -> tuple[tuple[str, ...], str | None]:
    """Exits and final output declared in ``FILE.exits.json`` next to ``FILE.onnx``.

    The sidecar is ``{"exits": ["exit_1", "exit_2"], "output": "logits"}``
    (``output`` optional), for early-exit models whose ONNX file alone does not
    say which outputs are exits. Returns ``((), None)`` when there is none.
    """
    sidecar = path.with_suffix(".exits.json")
    if not sidecar.is_file():
        return (), None
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{sidecar}: cannot be read as JSON: {exc}") from exc
    exits = data.get("exits") if isinstance(data, dict) else None
    output = data.get("output") if isinstance(data, dict) else None
    if not isinstance(exits, list) or not all(isinstance(e, str) and e for e in exits):
        raise ModelError(f'{sidecar}: expected {{"exits": ["name", ...], "output": "name"}}')
    if output is not None and not isinstance(output, str):
        raise ModelError(f"{sidecar}: output must be a tensor name, got {output!r}")
    return tuple(exits), output


def onnx_source(
    path: Path,
    exits: Sequence[str] = (),
    output: str | Sequence[str] | None = None,
    seed: int = 0,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    samples: Path | None = None,
) -> SourceModel:
    """A user's ONNX file from any exporter (see :mod:`partitioner.onnx_open`).

    Exits come from ``exits`` or, when none are given, from a sidecar
    ``FILE.exits.json`` (see :func:`sidecar_exits`). The final outputs are
    ``output`` (one name or several) or every graph output that is not an
    exit. ``samples`` is an ``.npz`` with one array per input name (batch
    first); without it, random inputs of the right dtypes are drawn.

    Raises:
        ModelError: the file does not load or run, a dynamic dimension not
            pinned, a bad pin, unknown output names, bad samples.
    """
    if not exits:
        if not path.is_file():
            raise ModelError(f"{path}: no such ONNX file")
        exits, declared = sidecar_exits(path)
        output = output or declared
    opened = open_onnx(path, input_shapes, seed)
    model = opened.model
    outputs = [o.name for o in model.graph.output]
    unknown = [e for e in exits if e not in outputs]
    if unknown:
        raise ModelError(f"{path}: exits {unknown} are not outputs; outputs are {outputs}")
    if output is None:
        finals = [o for o in outputs if o not in exits]
    else:
        finals = [output] if isinstance(output, str) else list(output)
    missing = [o for o in finals if o not in outputs]
    if not finals or missing:
        raise ModelError(
            f"{path}: no final output {missing or ''} among {outputs} (exits: {list(exits)})"
        )
    if samples is not None:
        from edgesplit.feeds import load_npz_feeds

        arrays = load_npz_feeds(samples, opened.inputs)
        what = f"{samples.name} ({len(next(iter(arrays.values())))} samples)"
    else:
        arrays = random_inputs(model, opened.inputs, RANDOM_SAMPLES, seed)
        what = f"random inputs (seed {seed}, {RANDOM_SAMPLES} samples)"
    return SourceModel(
        name=_safe_name(path.stem),
        onnx_path=path,
        outputs=tuple(finals),
        exits=tuple(exits),
        inputs=opened.inputs,
        samples=arrays,
        labels=None,
        sample_source=what,
        model=model,
        fixed_batch=opened.fixed_batch,
        notes=opened.notes,
    )


def torch_source(
    ref: str,
    workdir: Path,
    *,
    input_shape: tuple[int, ...] | None = None,
    calibration_samples: int | None = None,
    test_samples: int | None = None,
    seed: int = 0,
) -> SourceModel:
    """A zoo model or ``package.module:factory``, exported to ONNX in ``workdir``.

    The built-in early-exit model comes with its held-out data: the validation
    split calibrates the exits, the test split ships in the bundle.
    """
    from partitioner.datasets import load_digits_task
    from partitioner.export import export_onnx, resolve_model

    spec = resolve_model(ref, input_shape)
    name = _safe_name(spec.name)
    path = export_onnx(spec, workdir / f"{name}.onnx")
    test_set = None
    if spec.name.startswith("branchynet"):
        val = load_digits_task("val", calibration_samples, seed=seed)
        test = load_digits_task("test", test_samples, seed=seed)
        samples, labels = val.images, val.labels
        source = f"digits task, validation split ({len(val)} samples, seed {seed})"
        test_set = (test.images, test.labels)
    else:
        samples = _random_samples(spec.input_shape, RANDOM_SAMPLES, seed)
        labels = None
        source = f"random normal inputs (seed {seed}, {RANDOM_SAMPLES} samples)"
    return SourceModel(
        name=name,
        onnx_path=path,
        outputs=(spec.output_names[0],),
        exits=tuple(spec.exit_names),
        inputs=(TensorSpec("input", tuple(spec.input_shape), "float32"),),
        samples={"input": np.asarray(samples, dtype=np.float32)},
        labels=labels,
        sample_source=source,
        class_names=spec.class_names,
        test_set=test_set,
    )


def load_source(
    ref: str,
    workdir: Path,
    *,
    exits: Sequence[str] = (),
    input_shape: tuple[int, ...] | None = None,
    calibration_samples: int | None = None,
    test_samples: int | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    samples: Path | None = None,
) -> SourceModel:
    """Resolve ``ref``: an ``.onnx`` path, a zoo name, or ``package.module:factory``."""
    if ref.endswith(".onnx") or Path(ref).is_file():
        return onnx_source(Path(ref), exits, input_shapes=input_shapes, samples=samples)
    return torch_source(
        ref,
        workdir,
        input_shape=input_shape,
        calibration_samples=calibration_samples,
        test_samples=test_samples,
    )
