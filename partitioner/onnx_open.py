"""Open an ONNX file from any exporter: checked, shapes pinned, batch axis made free.

What exporters write varies: the batch fixed to 1 (``torch.onnx.export``
without ``dynamic_axes``, most converters), dynamic image sizes, no
``value_info``, initializers listed as graph inputs, nodes out of order.
:func:`open_onnx` turns any of these into a model edgesplit can profile and
split, or says in one line what is wrong:

- whatever onnx or ONNX Runtime raise while loading and checking becomes a
  :class:`~edgesplit.errors.ModelError` naming the file and the problem;
- dynamic dimensions other than the batch are pinned by the user
  (``--input-shape NAME=1x3x640x640``);
- a batch axis fixed to 1 is made symbolic where the graph allows it (a
  ``Reshape`` whose constant target starts with that 1 is made to keep the
  batch instead), checked by comparing a batch of two with two single runs;
  where that fails the model is served one sample at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from edgesplit.bundle import TensorSpec
from edgesplit.errors import ModelError
from edgesplit.onnxrt import create_session
from partitioner.graph import graph_inputs, topological_nodes

BATCH = "batch"
"""The name of the symbolic batch axis edgesplit gives a model."""

_ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


@dataclass(frozen=True)
class OpenedModel:
    """A model ready to prepare.

    Attributes:
        model: the graph, nodes in topological order, inputs pinned, batch free
            where it could be.
        inputs: each input's name, per-sample shape and dtype.
        fixed_batch: the model runs one sample at a time (its batch axis is 1
            and could not be made free).
        notes: what was changed, for the user.
    """

    model: onnx.ModelProto
    inputs: tuple[TensorSpec, ...]
    fixed_batch: bool
    notes: tuple[str, ...] = ()


def load_model(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file; one line naming the file for anything wrong."""
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except (OSError, ValueError, DecodeError, RuntimeError) as exc:
        raise ModelError(f"{path}: cannot be loaded as ONNX: {_one_line(exc)}") from None
    if not model.graph.node:
        raise ModelError(f"{path}: the graph has no nodes")
    if not model.graph.output:
        raise ModelError(f"{path}: the graph has no outputs")
    try:  # before the checker, which refuses nodes out of order (some converters write so)
        nodes = topological_nodes(model)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    if list(nodes) != list(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: not a valid ONNX model: {_one_line(exc)}") from None
    return model


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _dims(info: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    return list(info.type.tensor_type.shape.dim)


def _input_specs(
    path: Path, model: onnx.ModelProto, pins: Mapping[str, tuple[int, ...]]
) -> tuple[list[TensorSpec], bool]:
    """Each input's per-sample shape (pins applied) and whether the batch is fixed to 1."""
    names = graph_inputs(model)
    if not names:
        raise ModelError(f"{path}: the graph has no inputs (only constants): nothing to split")
    unknown = sorted(set(pins) - set(names))
    if unknown:
        raise ModelError(f"--input-shape names {unknown}, which are not inputs of {path}: {names}")
    specs, fixed = [], []
    for info in model.graph.input:
        if info.name in names:
            spec, fixed_one = _input_spec(path, info, pins.get(info.name))
            specs.append(spec)
            fixed.append(fixed_one)
    return specs, any(fixed)


def _input_spec(
    path: Path, info: onnx.ValueInfoProto, pin: tuple[int, ...] | None
) -> tuple[TensorSpec, bool]:
    """One input's per-sample shape (``pin`` applied, written into ``info``), batch fixed to 1."""
    elem = info.type.tensor_type.elem_type
    if elem not in _ONNX_DTYPES:
        raise ModelError(
            f"{path}: input {info.name!r} has element type "
            f"{onnx.TensorProto.DataType.Name(elem)}, which edgesplit does not feed"
        )
    dims = _dims(info)
    if pin is not None and len(pin) != len(dims):
        raise ModelError(
            f"--input-shape {info.name}={'x'.join(map(str, pin))}: rank {len(pin)}, but "
            f"input {info.name!r} has rank {len(dims)}"
        )
    if not dims:
        raise ModelError(f"{path}: input {info.name!r} is a scalar; edgesplit needs a batch axis")
    first = dims[0].dim_value if dims[0].HasField("dim_value") else None
    if first is not None and first != 1:
        raise ModelError(
            f"{path}: input {info.name!r} has its batch fixed to {first}; "
            "re-export with batch 1 or a dynamic batch"
        )
    shape = []
    for i, dim in enumerate(dims[1:], start=1):
        size = dim.dim_value if dim.HasField("dim_value") else None
        if size is not None and size <= 0:
            raise ModelError(f"{path}: input {info.name!r} dimension {i} has size {size}")
        if pin is not None and size is not None and pin[i] != size:
            raise ModelError(
                f"--input-shape {info.name}: dimension {i} is {pin[i]}, but the model "
                f"fixes it to {size}"
            )
        if pin is not None:
            size = pin[i]
        if size is None:
            raise ModelError(
                f"{path}: input {info.name!r} dimension {i} is dynamic "
                f"({dim.dim_param or '?'}); pin it with --input-shape "
                f"{info.name}=1x{'x'.join(str(d.dim_value or 'N') for d in dims[1:])}"
            )
        shape.append(size)
        dim.Clear()
        dim.dim_value = size
    return TensorSpec(info.name, tuple(shape), _ONNX_DTYPES[elem]), first == 1


def _symbolic_batch(info: onnx.ValueInfoProto) -> None:
    """Name ``info``'s first axis :data:`BATCH` (whatever it was)."""
    dims = _dims(info)
    if dims:
        dims[0].Clear()
        dims[0].dim_param = BATCH


def _free_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with the batch axis of inputs and outputs symbolic, Reshape targets adapted."""
    free = onnx.ModelProto()
    free.CopyFrom(model)
    inputs = set(graph_inputs(free))
    for info in [*(i for i in free.graph.input if i.name in inputs), *free.graph.output]:
        _symbolic_batch(info)
    del free.graph.value_info[:]
    constants = {init.name: init for init in free.graph.initializer}
    for node in free.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    for node in free.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        target = numpy_helper.to_array(constants[node.input[1]])
        if target.ndim == 1 and target.size and target[0] == 1:
            changed = target.copy()
            changed[0] = 0  # keep the input's first axis: the batch
            name = f"{node.input[1]}__batch_free"
            if name not in constants:
                tensor = numpy_helper.from_array(changed.astype(target.dtype), name)
                free.graph.initializer.append(tensor)
                constants[name] = tensor
            node.input[1] = name
    return free


def _runs_batched(free: onnx.ModelProto, model: onnx.ModelProto, feeds: dict) -> bool:
    """Whether ``free`` on a batch of two equals ``model`` on each sample alone."""
    try:
        single = create_session(model.SerializeToString(), ("CPUExecutionProvider",), 1)
        batched = create_session(free.SerializeToString(), ("CPUExecutionProvider",), 1)
        both = batched.run(None, feeds)
        for row in range(2):
            alone = single.run(None, {k: v[row : row + 1] for k, v in feeds.items()})
            for a, b in zip(alone, both, strict=True):
                if b.shape[:1] != (2,) or not np.allclose(
                    a, b[row : row + 1], rtol=1e-4, atol=1e-5
                ):
                    return False
    except Exception:  # noqa: BLE001 - any failure means: not batchable this way
        return False
    return True


def open_onnx(
    path: Path, pins: Mapping[str, tuple[int, ...]] | None = None, seed: int = 0
) -> OpenedModel:
    """Load, check and adapt ``path`` (see the module's docstring).

    Raises:
        ModelError: anything wrong with the file or the pins, in one line.
    """
    model = load_model(path)
    specs, fixed_one = _input_specs(path, model, dict(pins or {}))
    try:
        create_session(model.SerializeToString(), ("CPUExecutionProvider",), 1)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several unrelated types
        raise ModelError(f"{path}: ONNX Runtime cannot load it: {_one_line(exc)}") from None
    notes: list[str] = []
    fixed = False
    if fixed_one:
        free = _free_batch(model)
        feeds = random_inputs(free, specs, 2, seed)
        if _runs_batched(free, model, feeds):
            model = free
            notes.append("the batch axis was fixed to 1; made dynamic (checked: same outputs)")
        else:
            fixed = True
            notes.append(
                "the batch axis is fixed to 1 and could not be freed: one sample at a time"
            )
    else:
        for info in model.graph.output:
            dims = _dims(info)
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
                _symbolic_batch(info)
    return OpenedModel(model, tuple(specs), fixed, tuple(notes))


def _index_bound(model: onnx.ModelProto, name: str) -> int | None:
    """Rows of the table an integer input indexes (``Gather`` on an initializer), if any."""
    tables = {init.name: tuple(init.dims) for init in model.graph.initializer}
    frontier, seen = {name}, set()
    while frontier:
        tensor = frontier.pop()
        seen.add(tensor)
        for node in model.graph.node:
            if tensor not in node.input:
                continue
            if node.op_type == "Gather" and node.input[1] == tensor and node.input[0] in tables:
                return tables[node.input[0]][0]
            if node.op_type in ("Cast", "Unsqueeze", "Reshape", "Squeeze", "Identity"):
                frontier.update(o for o in node.output if o not in seen)
    return None


def random_inputs(
    model: onnx.ModelProto, specs: Sequence[TensorSpec], count: int, seed: int
) -> dict[str, np.ndarray]:
    """Random inputs of the right dtype: normal floats, valid indices, 0/1 masks."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = (count, *spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.8
        else:
            bound = _index_bound(model, spec.name)
            if bound is not None:
                feeds[spec.name] = rng.integers(0, bound, shape).astype(dtype)
            else:  # a mask: ones, then zeros from a random length on
                last = shape[-1] if len(shape) > 1 else 1
                keep = rng.integers(max(1, last // 2), last + 1, size=shape[:-1] or (1,))
                mask = np.arange(last) < keep[..., None]
                feeds[spec.name] = mask.reshape(shape).astype(dtype)
    return feeds
