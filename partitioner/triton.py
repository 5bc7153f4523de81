"""Triton model configurations for the bundle's tails.

Built as data (:func:`tail_config`), then written as protobuf text
(:func:`to_pbtxt`), so the tests can parse it into Triton's ModelConfig.
:func:`python_backend_repository` rewrites a bundle's repository for a
Triton that has the python backend but not the onnxruntime one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from edgesplit.bundle import Bundle, TensorSpec
from edgesplit.errors import BundleError, ModelError

_TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}

ONNX_PLATFORM = "onnxruntime_onnx"


def tail_config(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    *,
    max_batch_size: int = 16,
    max_queue_delay_us: int = 1000,
) -> dict[str, Any]:
    """The configuration of one tail model served by Triton's ONNX Runtime backend.

    Dims exclude the batch dimension, which Triton adds (``max_batch_size``);
    dynamic batching gathers concurrent requests for the same cut. A tensor
    with one value per sample (shape ``()``) is declared ``dims: [ 1 ]`` with
    an empty ``reshape``, since Triton wants at least one dim.
    """
    if max_batch_size < 1:
        raise ModelError(
            f"Triton model {name!r}: max_batch_size={max_batch_size}; tails are batched, "
            "so it must be at least 1"
        )

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        if spec.dtype not in _TRITON_TYPES:
            raise ModelError(f"tensor {spec.name!r}: dtype {spec.dtype} has no Triton type")
        if not spec.shape:
            return {
                "name": spec.name,
                "data_type": _TRITON_TYPES[spec.dtype],
                "dims": [1],
                "reshape": {"shape": []},
            }
        return {"name": spec.name, "data_type": _TRITON_TYPES[spec.dtype], "dims": list(spec.shape)}

    return {
        "name": name,
        "platform": ONNX_PLATFORM,
        "max_batch_size": max_batch_size,
        "input": [tensor(s) for s in inputs],
        "output": [tensor(s) for s in outputs],
        "dynamic_batching": {"max_queue_delay_microseconds": max_queue_delay_us},
    }


def to_pbtxt(config: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of a config dict (enum fields are written bare).

    A dict becomes a message block (an empty dict, an empty block: a set but
    empty message such as ``reshape``); a list of dicts, repeated blocks; a
    list of scalars, ``key: [ a, b ]`` (an empty one is left out).
    """
    pad = "  " * indent
    lines = []
    for key, value in config.items():
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            continue
        if isinstance(value, list) and not isinstance(value[0], dict):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(key, v) for v in value)} ]")
            continue
        for item in items:
            if isinstance(item, dict):
                lines.append(f"{pad}{key} {{")
                lines.append(to_pbtxt(item, indent + 1))
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_scalar(key, item)}")
    return "\n".join(line for line in lines if line)


_ENUM_FIELDS = frozenset({"data_type", "kind", "format"})
# C escapes that protobuf's text format reads back (Python's and Triton's C++ parser).
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _scalar(key: str, value: Any) -> str:
    if key in _ENUM_FIELDS:
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + "".join(_escape(ch) for ch in str(value)) + '"'


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"\\{ord(ch):03o}"
    return ch


# The model.py of every python-backend tail: generic, it reads names from the config.
_PYTHON_MODEL = '''"""A bundle tail on Triton's python backend: model.onnx, run by ONNX Runtime.

Written by edgesplit (partitioner.triton.python_backend_repository). The
requests that the dynamic batcher gathers are concatenated along the batch
axis, run once on the CPU, and split back into one response each.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]
        parameters = config.get("parameters", {})
        threads = parameters.get("intra_op_thread_count", {}).get("string_value", "0")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )

    def execute(self, requests):
        feeds = {name: [] for name in self.inputs}
        sizes = []
        for request in requests:
            for name in self.inputs:
                feeds[name].append(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
            sizes.append(len(feeds[self.inputs[0]][-1]))
        try:
            results = self.session.run(
                self.outputs, {name: np.concatenate(parts) for name, parts in feeds.items()}
            )
        except Exception as exc:  # every request gets the error, the model stays up
            error = pb_utils.TritonError(f"ONNX Runtime failed on {sum(sizes)} samples: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(result[start : start + size]))
                for name, result in zip(self.outputs, results)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
'''


def python_backend_repository(bundle: Bundle, out_dir: Path, *, threads: int = 0) -> list[str]:
    """Write a copy of ``bundle``'s Triton repository that a python-backend-only Triton serves.

    A stock Triton serves the bundle's ``cloud/`` as it is (``platform:
    "onnxruntime_onnx"``). A Triton without the onnxruntime backend (the
    ``tritonserver`` that ``nvidia-pytriton`` ships, say) serves this copy
    instead: per tail, ``config.pbtxt`` with ``backend: "python"`` in place
    of the platform and otherwise the same name, inputs, outputs, batch size
    and dynamic batching, plus one CPU instance; ``1/model.onnx`` (a hard
    link where the file system allows, else a copy); and ``1/model.py``,
    which runs that ONNX file with ONNX Runtime on the CPU, requests batched
    together by Triton concatenated into one run. The server's Python
    environment needs numpy and onnxruntime.

    Args:
        bundle: a loaded bundle (its ``cloud/`` files were checked on load).
        out_dir: the repository to write; created, and must not exist or be empty.
        threads: ONNX Runtime intra-op threads per tail (0: its default).

    Returns:
        The names of the models written, in the manifest's cut order.

    Raises:
        BundleError: ``out_dir`` is not empty, or a tail's directory or config
            is not what ``edgesplit partition`` writes.
    """
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BundleError(f"{out_dir}: exists and is not an empty directory; choose a new one")
    names = [cut.tail for cut in bundle.manifest.cuts if cut.tail is not None]
    if not names:
        raise BundleError(f"{bundle.root}: the bundle has no tail (every cut is edge-only)")
    extra = to_pbtxt(
        {
            "instance_group": [{"kind": "KIND_CPU", "count": 1}],
            "parameters": [
                {"key": "intra_op_thread_count", "value": {"string_value": str(threads)}}
            ],
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = bundle.root / "cloud" / name
        config = _python_backend_config(source / "config.pbtxt", name)
        if not (source / "1" / "model.onnx").is_file():
            raise BundleError(f"{source}: no 1/model.onnx; re-run `edgesplit partition`")
        target = out_dir / name
        (target / "1").mkdir(parents=True)
        (target / "config.pbtxt").write_text(f"{config}\n{extra}\n")
        _link_or_copy(source / "1" / "model.onnx", target / "1" / "model.onnx")
        (target / "1" / "model.py").write_text(_PYTHON_MODEL)
    return names


def _python_backend_config(path: Path, name: str) -> str:
    """The text of a tail's config with ``backend: "python"`` in place of its platform."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read: {exc}; re-run `edgesplit partition`") from exc
    platform = f'platform: "{ONNX_PLATFORM}"'
    if lines.count(platform) != 1 or lines.count(f"name: {_scalar('name', name)}") != 1:
        raise BundleError(
            f"{path}: not the config `edgesplit partition` writes for {name} "
            f"(expected one top-level {platform} and name); re-run `edgesplit partition`"
        )
    return "\n".join('backend: "python"' if line == platform else line for line in lines)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
