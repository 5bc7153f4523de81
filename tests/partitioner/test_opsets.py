"""ONNX files of opsets 11 to 20, batch free or fixed, from torch's TorchScript and dynamo
exporters: opened, cut, and recomposed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgesplit.onnxrt import create_session
from partitioner.prepare import prepare
from partitioner.sources import onnx_source


class _Skip(nn.Module):
    """A stem, a block whose input skips past two convolutions, upsampled to the input size."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.relu(self.b(torch.relu(self.a(x))))
        z = nn.functional.interpolate(y + x, size=x.shape[-2:])
        return self.head(z.reshape(z.shape[0], -1))


def _export(path: Path, opset: int, dynamic: bool) -> Path:
    torch.manual_seed(0)
    module = _Skip().eval()
    if opset == 0:  # the dynamo exporter (torch.export), its default opset
        batch = torch.export.Dim("batch", min=1, max=64)
        shapes = ({0: batch},) if dynamic else None
        with torch.no_grad():
            torch.onnx.export(
                module,
                (torch.zeros(2 if dynamic else 1, 3, 8, 8),),
                str(path),
                dynamo=True,
                input_names=["x"],
                output_names=["y"],
                dynamic_shapes=shapes,
            )
        return path
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None
    with torch.no_grad():
        torch.onnx.export(
            module,
            (torch.zeros(1, 3, 8, 8),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=axes,
        )
    return path


@pytest.mark.parametrize("opset", [11, 13, 17, 20, 0], ids=["11", "13", "17", "20", "dynamo"])
@pytest.mark.parametrize("dynamic", [True, False])
def test_every_cut_recomposes_the_model(tmp_path: Path, opset: int, dynamic: bool) -> None:
    path = _export(tmp_path / f"skip{opset}.onnx", opset, dynamic)
    versions = {o.domain: o.version for o in onnx.load(str(path)).opset_import}
    assert opset == 0 or versions[""] == opset
    source = onnx_source(path)
    prepared = prepare(source)
    assert any(len(c.tensors) > 1 for c in prepared.cuts), "no cut inside the skip"
    whole = create_session(path, threads=1)
    x = source.samples["x"][:1]
    expected = whole.run(None, {"x": x})[0]
    for plan in prepared.cuts:
        values = {"x": x}
        if plan.kind != "input":
            head = create_session(prepared.head(plan).SerializeToString(), threads=1)
            feeds = {i.name: values[i.name] for i in head.get_inputs()}
            outs = head.run(None, feeds)
            values.update(zip([o.name for o in head.get_outputs()], outs, strict=True))
        if plan.kind == "output":
            got = values["y"]
        else:
            tail = create_session(prepared.tail(plan).SerializeToString(), threads=1)
            got = tail.run(None, {n: values[n] for n in plan.names})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=plan.id)
