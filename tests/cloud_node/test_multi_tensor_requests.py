"""A cut of several tensors on the wire: each request checked tensor by tensor, answered exactly.

The model is a text encoder with two inputs (``input_ids``, ``attention_mask``):
its cuts carry the mask (int64) beside the activations, so a request holds
tensors of several dtypes. A real cloud node serves it over real ZeroMQ
sockets; the edge runs as the ``edgesplit edge`` process on an ``.npz``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import wire
from edge_node.head import HeadRunner
from edgesplit.bundle import Bundle, Cut, segment_chain
from edgesplit.onnxrt import create_session
from tests.conftest import RunningCloud, ask_cloud

MODEL = "text_encoder"  # the model of the text_bundle fixture


@pytest.fixture(scope="module")
def running(text_bundle: Bundle) -> Iterator[RunningCloud]:
    cloud = RunningCloud(text_bundle)
    yield cloud
    cloud.stop()


def _inputs(count: int) -> dict[str, np.ndarray]:
    from partitioner.byom_zoo import sample_inputs

    return sample_inputs(MODEL, count, seed=5)


def _widest(bundle: Bundle) -> Cut:
    return max((c for c in bundle.manifest.cuts if c.tail), key=lambda c: len(c.tensors))


def _tensors(bundle: Bundle, cut: Cut, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    head = HeadRunner(bundle, threads=1).run(segment_chain(bundle.manifest, cut), inputs, None)
    return head.tensors(cut.names)


def _call(endpoint: str, request: wire.InferRequest) -> wire.AnyMessage:
    return ask_cloud(endpoint, request)


def test_the_cuts_carry_the_mask_beside_the_activations(text_bundle: Bundle) -> None:
    cut = _widest(text_bundle)
    assert len(cut.tensors) >= 3
    dtypes = {t.dtype for t in cut.tensors}
    assert "int64" in dtypes and "float32" in dtypes, cut.tensors


def test_a_request_of_every_tensor_is_answered_like_the_tail(
    text_bundle: Bundle, running: RunningCloud
) -> None:
    inputs = _inputs(2)
    for cut in (c for c in text_bundle.manifest.cuts if c.tail):
        tensors = _tensors(text_bundle, cut, inputs)
        request = wire.InferRequest(3, text_bundle.id, cut.id, wire.tensors_of(tensors))
        reply = _call(running.endpoint, request)
        assert isinstance(reply, wire.Result), (cut.id, reply)
        tail = create_session(text_bundle.tail_path(cut), threads=1)
        expected = tail.run(None, tensors)[0]
        np.testing.assert_allclose(reply.arrays()["logits"], expected, rtol=1e-5, atol=1e-6)


def _edit(tensors: dict[str, np.ndarray], how: str) -> dict[str, np.ndarray]:
    names = list(tensors)
    if how == "missing":
        return {n: tensors[n] for n in names[:-1]}
    if how == "reordered":
        return {n: tensors[n] for n in reversed(names)}
    if how == "extra":
        return {**tensors, "stowaway": np.zeros((1, 4), np.float32)}
    if how == "dtype":
        mask = next(n for n in names if tensors[n].dtype == np.int64)
        return {**tensors, mask: tensors[mask].astype(np.float32)}
    if how == "rows":
        first = names[0]
        return {**tensors, first: np.concatenate([tensors[first]] * 2)}
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing", r"takes \d+ tensor\(s\) .* in this order, got"),
        ("reordered", r"in this order, got"),
        ("extra", r"in this order, got"),
        ("dtype", r"has dtype float32, expected int64"),
        ("rows", r"has 1 rows, not 2|has 2 rows, not 1"),
    ],
)
def test_a_tensor_list_that_does_not_match_the_cut_is_refused_and_the_node_serves_on(
    text_bundle: Bundle, running: RunningCloud, how: str, message: str
) -> None:
    cut = _widest(text_bundle)
    tensors = _tensors(text_bundle, cut, _inputs(1))
    bad = wire.InferRequest(4, text_bundle.id, cut.id, wire.tensors_of(_edit(tensors, how)))
    reply = _call(running.endpoint, bad)
    assert isinstance(reply, wire.ErrorReply), reply
    assert reply.code == "shape" and reply.request_id == 4, reply
    assert f"cut {cut.id}" in reply.message and "\n" not in reply.message
    import re

    assert re.search(message, reply.message), reply.message
    good = wire.InferRequest(5, text_bundle.id, cut.id, wire.tensors_of(tensors))
    assert isinstance(_call(running.endpoint, good), wire.Result)


def test_the_edge_process_answers_an_npz_of_two_inputs_through_the_cloud(
    text_bundle: Bundle, running: RunningCloud, tmp_path: Path
) -> None:
    inputs = _inputs(6)
    np.savez(tmp_path / "inputs.npz", **inputs)
    cut = _widest(text_bundle)
    out = tmp_path / "results.jsonl"
    result = subprocess.run(
        [
            sys.executable, "-m", "edgesplit", "edge",
            "--bundle", str(text_bundle.root), "--connect", running.endpoint, "--insecure",
            "--inputs", str(tmp_path / "inputs.npz"),
            "--policy", "fixed", "--cut", cut.id, "--threshold", "off", "--codec", "raw",
            "--results", str(out),
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "logits" in result.stdout and "prediction = argmax of logits" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {r["finished"] for r in rows} == {"cloud"}
    whole = create_session(text_bundle.root.parent / f"{MODEL}.onnx", threads=1)
    expected = whole.run(["logits"], inputs)[0]
    for i, row in enumerate(rows):
        got = np.asarray(row["outputs"]["logits"]["values"], dtype=np.float32)
        np.testing.assert_allclose(got, expected[i : i + 1], rtol=1e-5, atol=1e-5)
        assert row["prediction"] == [int(expected[i].argmax())]


def test_an_npz_missing_an_input_is_one_line(
    text_bundle: Bundle, running: RunningCloud, tmp_path: Path
) -> None:
    np.savez(tmp_path / "half.npz", input_ids=_inputs(2)["input_ids"])
    result = subprocess.run(
        [
            sys.executable, "-m", "edgesplit", "edge", "--bundle", str(text_bundle.root),
            "--inputs", str(tmp_path / "half.npz"),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "no array for input(s) ['attention_mask']" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
