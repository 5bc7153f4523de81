"""The split invariant: for every cut, tail(head(x)) equals the unsplit model's output."""

from __future__ import annotations

import numpy as np
import pytest

from edgesplit.bundle import Bundle, Cut, segment_chain
from edgesplit.onnxrt import create_session

# Float32 sub-models run the same kernels on the same values; differences come
# only from graph optimizations applied differently to each sub-model.
ATOL = 1e-4
RTOL = 1e-4


def _reference(bundle: Bundle, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the unsplit ONNX model the bundle was cut from."""
    source = bundle.root.parent / f"{bundle.manifest.model.name}.onnx"
    session = create_session(source, threads=1)
    values = session.run(None, {session.get_inputs()[0].name: x})
    return {o.name: v for o, v in zip(session.get_outputs(), values, strict=True)}


def _split_run(bundle: Bundle, cut: Cut, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run the head segments then the tail of ``cut``; also collect the exits the head computed."""
    manifest = bundle.manifest
    values = {manifest.model.input.name: x}
    exits: dict[str, np.ndarray] = {}
    for segment in segment_chain(manifest, cut):
        session = create_session(bundle.root / segment.file, threads=1)
        outputs = session.run(None, {name: values[name] for name in segment.inputs})
        named = {o.name: v for o, v in zip(session.get_outputs(), outputs, strict=True)}
        values.update(named)
        if segment.exit:
            exits[segment.exit] = named[segment.exit]
    if cut.tail is not None:
        session = create_session(bundle.tail_path(cut), threads=1)
        assert [i.name for i in session.get_inputs()] == list(cut.names)
        outputs = session.run(None, {name: values[name] for name in cut.names})
        values.update(zip([o.name for o in session.get_outputs()], outputs, strict=True))
    return values[manifest.model.output], exits


def _check_every_cut(bundle: Bundle, x: np.ndarray) -> int:
    manifest = bundle.manifest
    reference = _reference(bundle, x)
    for cut in manifest.cuts:
        output, exits = _split_run(bundle, cut, x)
        np.testing.assert_allclose(
            output,
            reference[manifest.model.output],
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"cut {cut.id} ({cut.names})",
        )
        assert set(exits) == set(cut.exits), cut.id
        for name, value in exits.items():
            np.testing.assert_allclose(
                value,
                reference[name],
                rtol=RTOL,
                atol=ATOL,
                err_msg=f"exit {name} in the head of {cut.id}",
            )
    return len(manifest.cuts)


def test_builtin_model_every_cut_composes_to_the_full_model(branchynet_bundle: Bundle) -> None:
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32), dtype=np.float32)
    assert _check_every_cut(branchynet_bundle, x) >= 10


@pytest.mark.slow
def test_resnet18_every_cut_composes_to_the_full_model(resnet18_bundle: Bundle) -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224), dtype=np.float32)
    # conv1, relu, maxpool, 8 residual blocks (add + relu each), pool, flatten, fc: 23
    # single-tensor cuts, and cuts of two tensors inside the blocks (the skip and the branch).
    singles = [c for c in resnet18_bundle.manifest.cuts if len(c.tensors) == 1]
    assert len(singles) == 23
    assert _check_every_cut(resnet18_bundle, x) > 23


def test_cuts_are_ordered_and_bracketed(branchynet_bundle: Bundle) -> None:
    cuts = branchynet_bundle.manifest.cuts
    assert cuts[0].kind == "input" and cuts[0].tail is not None and cuts[0].head == ()
    assert cuts[-1].kind == "output" and cuts[-1].tail is None
    assert [c.index for c in cuts] == list(range(len(cuts)))
    # Exits before a cut only grow with depth.
    assert all(len(a.exits) <= len(b.exits) for a, b in zip(cuts, cuts[1:], strict=False))
    assert cuts[-1].exits == branchynet_bundle.manifest.model.exits


def test_measured_sizes_follow_the_codecs(branchynet_bundle: Bundle) -> None:
    for cut in branchynet_bundle.manifest.cuts[:-1]:
        sizes = cut.encoded_bytes
        # Header-free payload sizes: quantizing shrinks by exactly 2x and 4x.
        assert sizes["raw"] == cut.raw_bytes
        assert sizes["fp16"] == cut.raw_bytes / 2
        assert sizes["int8"] == cut.raw_bytes / 4
