"""Triton model configurations for the bundle's tails.

Built as data (:func:`tail_config`), then written as protobuf text
(:func:`to_pbtxt`), so the tests can parse it into Triton's ModelConfig.
"""

from __future__ import annotations

from typing import Any

from edgesplit.bundle import TensorSpec
from edgesplit.errors import ModelError

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
    dynamic batching gathers concurrent requests for the same cut.
    """

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        if spec.dtype not in _TRITON_TYPES:
            raise ModelError(f"tensor {spec.name!r}: dtype {spec.dtype} has no Triton type")
        return {"name": spec.name, "data_type": _TRITON_TYPES[spec.dtype], "dims": list(spec.shape)}

    return {
        "name": name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": max_batch_size,
        "input": [tensor(s) for s in inputs],
        "output": [tensor(s) for s in outputs],
        "dynamic_batching": {"max_queue_delay_microseconds": max_queue_delay_us},
    }


def to_pbtxt(config: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of a config dict (enum fields are written bare)."""
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


def _scalar(key: str, value: Any) -> str:
    if key in _ENUM_FIELDS:
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
