"""A bundle's tails served by a real Triton server answer exactly like ONNX Runtime.

The server here (``tritonserver`` from nvidia-pytriton, in ``.venv-triton``)
has the python backend only, so it serves the python-backend copy of the
bundle's ``cloud/`` (:func:`partitioner.triton.python_backend_repository`):
the same model names, inputs, outputs, batch size and dynamic batching, and
the same ``model.onnx`` run by ONNX Runtime inside Triton. The activations
sent are the real ones: the bundle's head segments run on test inputs.
"""

from __future__ import annotations

import functools
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from edge_node.head import HeadRunner
from edgesplit.bundle import Bundle, Cut, segment_chain
from edgesplit.onnxrt import create_session
from experiments.loadgen import sample
from partitioner.triton import python_backend_repository
from tests.tritonserver import (
    RunningTriton,
    TritonStartError,
    TritonUnavailable,
    find_triton,
    process_group_alive,
    triton_server,
)

RTOL = ATOL = 1e-5
SAMPLES = 4


@dataclass(frozen=True)
class Served:
    bundle: Bundle
    server: RunningTriton
    models: list[str]

    @property
    def tails(self) -> list[Cut]:
        return [c for c in self.bundle.manifest.cuts if c.tail is not None]


@pytest.fixture(scope="module", params=["untrained_bundle", "resnet18_bundle"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A real Triton server on the bundle's tails, stopped (stubs and all) afterwards."""
    bundle: Bundle = request.getfixturevalue(request.param)
    root = tmp_path_factory.mktemp(f"triton-{request.param}")
    install = find_triton()  # no venv: fails and says to run `make test`
    models = python_backend_repository(bundle, root / "repository", threads=1)
    with triton_server(root / "repository", root / "server", install=install) as server:
        yield Served(bundle, server, models)
    assert not process_group_alive(server.pid), "tritonserver or a python stub outlived the test"


def _activations(
    heads: HeadRunner, bundle: Bundle, cut: Cut, inputs: np.ndarray
) -> dict[str, np.ndarray]:
    """The cut's tensors the edge would send: the cut's head segments run on ``inputs``."""
    start = {bundle.manifest.model.input.name: inputs}
    return heads.run(segment_chain(bundle.manifest, cut), start, threshold=None).tensors(cut.names)


def _rows(values: dict[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    return {name: value[rows] for name, value in values.items()}


def _grpc_infer(
    client: grpcclient.InferenceServerClient,
    cut: Cut,
    values: dict[str, np.ndarray] | np.ndarray,
    output: str,
) -> np.ndarray:
    """One request with every tensor of ``cut`` (a lone array: a single-tensor cut's)."""
    if isinstance(values, np.ndarray):
        values = {cut.name: values}
    requests = []
    for name in cut.names:
        value = values[name]
        request = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        request.set_data_from_numpy(value)
        requests.append(request)
    wanted = [grpcclient.InferRequestedOutput(output)]
    result = client.infer(cut.tail or "", requests, outputs=wanted).as_numpy(output)
    assert result is not None, f"{cut.tail}: no output {output!r} in the response"
    return result


@pytest.mark.integration
@pytest.mark.slow
def test_every_tail_is_loaded_and_ready(served: Served) -> None:
    client = httpclient.InferenceServerClient(served.server.http_url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert set(index) == {c.tail for c in served.tails} == set(served.models)
        for cut in served.tails:
            name = cut.tail or ""
            assert index[name].get("state") == "READY", (
                name,
                index[name],
                served.server.log_tail(),
            )
            assert client.is_model_ready(name)
            # The server's view of the config: what the bundle declared for this cut.
            config = client.get_model_config(name)
            assert config["backend"] == "python" and config["max_batch_size"] == 16
            assert "dynamic_batching" in config
            assert [(i["name"], i["dims"]) for i in config["input"]] == [
                (t.name, list(t.shape)) for t in cut.tensors
            ]
            metadata = client.get_model_metadata(name)
            assert metadata["inputs"] == [
                {"name": t.name, "datatype": "FP32", "shape": [-1, *t.shape]} for t in cut.tensors
            ]
            assert [o["name"] for o in metadata["outputs"]] == [served.bundle.manifest.model.output]
    finally:
        client.close()
    assert served.server.ready_s < 120
    if served.bundle.manifest.model.name == "resnet18":  # tails of several inputs were served
        assert any(len(c.tensors) > 1 for c in served.tails)


@pytest.mark.integration
@pytest.mark.slow
def test_every_cut_answers_like_onnx_runtime_one_sample_and_a_batch(served: Served) -> None:
    bundle, m = served.bundle, served.bundle.manifest
    inputs = sample(bundle, SAMPLES)
    heads = HeadRunner(bundle, threads=1)
    client = grpcclient.InferenceServerClient(served.server.grpc_url)
    latencies = []
    try:
        for cut in served.tails:
            activation = _activations(heads, bundle, cut, inputs)
            for tensor in cut.tensors:
                assert activation[tensor.name].shape == (SAMPLES, *tensor.shape), cut.id
            tail = create_session(bundle.tail_path(cut), threads=1)
            expected = tail.run([m.model.output], activation)[0]

            began = time.perf_counter()
            one = _grpc_infer(client, cut, _rows(activation, slice(0, 1)), m.model.output)
            latencies.append(time.perf_counter() - began)
            np.testing.assert_allclose(one, expected[:1], rtol=RTOL, atol=ATOL, err_msg=cut.id)

            batch = _grpc_infer(client, cut, activation, m.model.output)
            assert batch.shape == expected.shape == (SAMPLES, *m.edge_only.shape), cut.id
            np.testing.assert_allclose(batch, expected, rtol=RTOL, atol=ATOL, err_msg=cut.id)
    finally:
        client.close()
    assert len(latencies) == len(served.tails)


@pytest.mark.integration
@pytest.mark.slow
def test_concurrent_requests_are_batched_together_and_each_answered(served: Served) -> None:
    bundle, m = served.bundle, served.bundle.manifest
    cut = next(c for c in served.tails if c.kind == "inner" and len(c.tensors) == 1)
    count = 16
    heads = HeadRunner(bundle, threads=1)
    activation = _activations(heads, bundle, cut, sample(bundle, count))[cut.name]
    expected = create_session(bundle.tail_path(cut), threads=1).run(
        [m.model.output], {cut.name: activation}
    )[0]
    client = grpcclient.InferenceServerClient(served.server.grpc_url)
    try:
        before = client.get_inference_statistics(cut.tail or "").model_stats[0]
        answers: queue.Queue[tuple[int, np.ndarray | Exception]] = queue.Queue()

        def answered(
            i: int, result: grpcclient.InferResult | None, error: Exception | None
        ) -> None:
            if error is not None or result is None:
                answers.put((i, error or RuntimeError("no result and no error")))
            else:
                answers.put((i, result.as_numpy(m.model.output)))

        # All sent before any is answered: they queue up behind the running batch.
        for i in range(count):
            request = grpcclient.InferInput(cut.name, [1, *cut.shape], "FP32")
            request.set_data_from_numpy(activation[i : i + 1])
            client.async_infer(cut.tail or "", [request], callback=functools.partial(answered, i))
        results = dict(answers.get(timeout=60) for _ in range(count))
        assert sorted(results) == list(range(count))
        for i, value in results.items():
            assert not isinstance(value, Exception), (i, value)
            np.testing.assert_allclose(
                value, expected[i : i + 1], rtol=RTOL, atol=ATOL, err_msg=str(i)
            )
        after = client.get_inference_statistics(cut.tail or "").model_stats[0]
    finally:
        client.close()
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == count
    # Dynamic batching gathered queued requests into fewer runs of model.py.
    assert executions < count, (executions, count)
    assert max(s.batch_size for s in after.batch_stats) > 1


@pytest.mark.integration
@pytest.mark.slow
def test_a_malformed_request_gets_an_error_and_the_server_stays_up(served: Served) -> None:
    m = served.bundle.manifest
    cut = [c for c in served.tails if len(c.tensors) == 1][-1]
    client = grpcclient.InferenceServerClient(served.server.grpc_url)
    try:
        wrong = np.zeros((1, *cut.shape, 2), dtype=np.float32)
        with pytest.raises(InferenceServerException, match="shape"):
            _grpc_infer(client, cut, wrong, m.model.output)
        too_big = np.zeros((17, *cut.shape), dtype=np.float32)
        with pytest.raises(InferenceServerException, match="batch"):
            _grpc_infer(client, cut, too_big, m.model.output)
        ok = _grpc_infer(client, cut, np.zeros((1, *cut.shape), np.float32), m.model.output)
        assert ok.shape == (1, *m.edge_only.shape)
        assert client.is_model_ready(cut.tail or "")
    finally:
        client.close()


@pytest.mark.integration
@pytest.mark.slow
def test_the_stock_repository_is_refused_by_this_python_only_triton(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    """Why the python-backend copy exists: this server has no onnxruntime backend.

    If this fails because the server came up, the Triton here gained the
    onnxruntime backend: serve ``cloud/`` as it is and drop the detour.
    """
    with pytest.raises(TritonStartError) as failed:
        with triton_server(untrained_bundle.root / "cloud", tmp_path, install=find_triton()):
            pass
    log = failed.value.log.read_text(errors="replace")
    assert "unable to find backend library for backend 'onnxruntime'" in log
    assert "failed to load all models" in log
    assert "exited with code 1" in str(failed.value)


@pytest.mark.integration
def test_a_missing_triton_venv_is_a_failure_that_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(TritonUnavailable, match=r"no Triton server venv; run `make test`"):
        find_triton(tmp_path / ".venv-triton")
