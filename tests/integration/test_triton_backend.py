"""TritonBackend against a real Triton server answers exactly like the embedded backend.

The server (``tritonserver`` of nvidia-pytriton, python backend only) serves
the python-backend copy of each bundle's ``cloud/``; the activations sent are
the real ones, the bundle's head segments run on its test inputs. Servers
start once per bundle for the module and stop, stubs and all, at its end.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import wire
from cloud_node.backends import OnnxRuntimeBackend
from cloud_node.process import start_cloud_process, stop_process
from cloud_node.server import CloudConfig, CloudNode
from cloud_node.triton_backend import TritonBackend, tail_model_name
from edge_node.head import HeadRunner
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, Cut, segment_chain
from edgesplit.errors import BackendError
from partitioner.triton import python_backend_repository
from tests.conftest import edge_cli_rows, free_port
from tests.tritonserver import (
    RunningTriton,
    TritonInstall,
    find_triton,
    process_group_alive,
    triton_server,
)

RTOL = ATOL = 1e-5
SAMPLES = 4
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class Served:
    bundle: Bundle
    server: RunningTriton

    @property
    def tails(self) -> list[Cut]:
        return [c for c in self.bundle.manifest.cuts if c.tail is not None]

    def backend(self, **kwargs: object) -> TritonBackend:
        return TritonBackend(self.bundle, self.server.grpc_url, **kwargs)  # type: ignore[arg-type]


class Servers:
    """One Triton server per bundle, started on first use, all stopped at the module's end."""

    def __init__(self, request: pytest.FixtureRequest, root: Path, stack: ExitStack) -> None:
        self._request = request
        self._root = root
        self._stack = stack
        self._install: TritonInstall | None = None
        self._served: dict[str, Served] = {}
        self.pids: list[int] = []

    @property
    def install(self) -> TritonInstall:
        if self._install is None:
            self._install = find_triton()  # no venv: fails and says to run `make test`
        return self._install

    def get(self, fixture: str) -> Served:
        if fixture not in self._served:
            bundle: Bundle = self._request.getfixturevalue(fixture)
            self._served[fixture] = Served(bundle, self.start(bundle, fixture))
        return self._served[fixture]

    def start(self, bundle: Bundle, label: str, *, drop: tuple[str, ...] = ()) -> RunningTriton:
        """Serve ``bundle``'s python-backend repository, less the models in ``drop``."""
        root = self._root / f"{label}-{len(self.pids)}"
        python_backend_repository(bundle, root / "repository", threads=1)
        for model in drop:
            shutil.rmtree(root / "repository" / model)
        server = self._stack.enter_context(
            triton_server(root / "repository", root / "server", install=self.install)
        )
        self.pids.append(server.pid)
        return server


@pytest.fixture(scope="module")
def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    with ExitStack() as stack:
        started = Servers(request, tmp_path_factory.mktemp("triton-backend"), stack)
        yield started
    for pid in started.pids:
        assert not process_group_alive(pid), "tritonserver or a python stub outlived the tests"


@pytest.fixture(params=["untrained_bundle", "resnet18_bundle"])
def served(request: pytest.FixtureRequest, servers: Servers) -> Served:
    return servers.get(request.param)


@pytest.fixture
def untrained(servers: Servers) -> Served:
    return servers.get("untrained_bundle")


def _inputs(bundle: Bundle, count: int) -> np.ndarray:
    """The bundle's test inputs (repeated to ``count``), or seeded random ones."""
    path = bundle.root / "data" / "test.npz"
    if path.is_file():
        with np.load(path) as data:
            inputs = data["inputs"]
        inputs = np.resize(inputs, (count, *inputs.shape[1:]))
        return np.ascontiguousarray(inputs, dtype=np.float32)
    shape = bundle.manifest.model.input.shape
    return np.random.default_rng(0).standard_normal((count, *shape), dtype=np.float32)


def _activations(bundle: Bundle, cut: Cut, count: int = SAMPLES) -> dict[str, np.ndarray]:
    """The cut's tensors the edge would send: the cut's head segments run on test inputs."""
    start = {bundle.manifest.model.input.name: _inputs(bundle, count)}
    heads = HeadRunner(bundle, threads=1)
    head = heads.run(segment_chain(bundle.manifest, cut), start, threshold=None)
    return head.tensors(cut.names)


def _activation(bundle: Bundle, cut: Cut, count: int = SAMPLES) -> np.ndarray:
    """The tensor of a single-tensor cut the edge would send."""
    return _activations(bundle, cut, count)[cut.name]


def _assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], label: str) -> None:
    assert set(got) == set(expected), label
    for name, value in expected.items():
        assert got[name].shape == value.shape, (label, name)
        np.testing.assert_allclose(got[name], value, rtol=RTOL, atol=ATOL, err_msg=label)


def test_every_cut_answers_like_onnx_runtime_one_sample_and_a_batch(served: Served) -> None:
    bundle = served.bundle
    embedded = OnnxRuntimeBackend(bundle, threads=1)
    triton = served.backend()
    try:
        assert triton.name == "triton" and triton.url == served.server.grpc_url
        for cut in served.tails:
            activation = _activations(bundle, cut)
            for tensor in cut.tensors:
                assert activation[tensor.name].shape == (SAMPLES, *tensor.shape), cut.id
            for rows in (slice(0, 1), slice(None)):
                inputs = {name: value[rows] for name, value in activation.items()}
                _assert_same(triton.infer(cut, inputs), embedded.infer(cut, inputs), cut.id)
    finally:
        triton.close()
        embedded.close()


def test_a_batch_past_the_models_limit_goes_in_parts(untrained: Served) -> None:
    cut = untrained.tails[1]
    activation = _activation(untrained.bundle, cut, count=37)  # the models take 16 at most
    inputs = {cut.name: activation}
    expected = OnnxRuntimeBackend(untrained.bundle, threads=1).infer(cut, inputs)
    with_triton = untrained.backend()
    try:
        _assert_same(with_triton.infer(cut, inputs), expected, cut.id)
    finally:
        with_triton.close()


def test_worker_threads_share_one_backend(untrained: Served) -> None:
    bundle = untrained.bundle
    cuts = untrained.tails
    activations = {c.id: _activation(bundle, c) for c in cuts}
    embedded = OnnxRuntimeBackend(bundle, threads=1)
    expected = {c.id: embedded.infer(c, {c.name: activations[c.id]}) for c in cuts}
    triton = untrained.backend()
    failures: list[str] = []

    def work(worker: int) -> None:
        for i in range(12):
            cut = cuts[(worker + i) % len(cuts)]
            try:
                _assert_same(
                    triton.infer(cut, {cut.name: activations[cut.id]}), expected[cut.id], cut.id
                )
            except (AssertionError, BackendError) as exc:
                failures.append(f"worker {worker} request {i} cut {cut.id}: {exc}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    finally:
        triton.close()
    assert failures == []


def test_a_tail_missing_from_the_server_fails_at_construction_naming_it(
    untrained: Served, servers: Servers
) -> None:
    bundle = untrained.bundle
    dropped = untrained.tails[1].tail or ""
    partial = servers.start(bundle, "partial", drop=(dropped,))
    with pytest.raises(BackendError) as refused:
        TritonBackend(bundle, partial.grpc_url, ready_timeout_s=10)
    message = str(refused.value)
    assert f"{dropped} (not in the repository)" in message
    assert f"does not serve 1 of the {len(untrained.tails)} tails" in message
    assert partial.grpc_url in message and "edgesplit triton-repository" in message
    # The others are there: only the missing one is named.
    others = [c.tail or "" for c in untrained.tails if c.tail != dropped]
    assert others and not any(f"{name} (" in message for name in others)


def test_a_model_prefix_names_other_models(untrained: Served) -> None:
    bundle = untrained.bundle
    cut = untrained.tails[0]
    assert tail_model_name(bundle, cut) == cut.tail
    assert tail_model_name(bundle, cut, bundle.manifest.model.name) == cut.tail
    with pytest.raises(BackendError, match=r"elsewhere__tail__c00 \(not in the repository\)"):
        untrained.backend(model_prefix="elsewhere", ready_timeout_s=5)


def test_an_unreachable_url_fails_within_the_ready_timeout(untrained: Served) -> None:
    url = f"127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(BackendError, match=rf"Triton at {url} not ready after ready_timeout_s=1"):
        TritonBackend(untrained.bundle, url, ready_timeout_s=1.0)
    elapsed = time.monotonic() - began
    assert 1.0 <= elapsed < 3.0, elapsed


def test_a_wrong_request_is_a_backend_error_and_the_backend_keeps_serving(
    untrained: Served,
) -> None:
    cut = untrained.tails[-1]
    model = cut.tail or ""
    triton = untrained.backend()
    try:
        wrong_shape = np.zeros((1, *cut.shape, 2), dtype=np.float32)
        with pytest.raises(BackendError, match=rf"model {model} failed: .*shape"):
            triton.infer(cut, {cut.name: wrong_shape})
        with pytest.raises(BackendError, match=r"takes FP32, got dtype=float64"):
            triton.infer(cut, {cut.name: np.zeros((1, *cut.shape))})
        with pytest.raises(BackendError, match=r"expects inputs"):
            triton.infer(cut, {"other": np.zeros((1, *cut.shape), np.float32)})
        with pytest.raises(BackendError, match=r"at least one"):
            triton.infer(cut, {cut.name: np.zeros((0, *cut.shape), np.float32)})
        with pytest.raises(BackendError, match=r"edge-only"):
            triton.infer(untrained.bundle.manifest.edge_only, {})
        ok = triton.infer(cut, {cut.name: np.zeros((1, *cut.shape), np.float32)})
        assert ok[untrained.bundle.manifest.model.output].shape == (
            1,
            *untrained.bundle.manifest.edge_only.shape,
        )
    finally:
        triton.close()
    with pytest.raises(BackendError, match="closed"):
        triton.infer(cut, {cut.name: np.zeros((1, *cut.shape), np.float32)})


def test_a_request_past_its_timeout_is_a_backend_error(untrained: Served) -> None:
    cut = untrained.tails[0]
    triton = untrained.backend(timeout_s=1e-6)
    try:
        with pytest.raises(BackendError, match=r"did not answer within timeout_s=1e-06"):
            triton.infer(cut, {cut.name: _activation(untrained.bundle, cut)})
    finally:
        triton.close()


def test_the_cloud_node_over_zeromq_answers_like_the_embedded_backend(
    untrained: Served,
) -> None:
    bundle = untrained.bundle
    embedded = OnnxRuntimeBackend(bundle, threads=1)
    node = CloudNode(bundle, untrained.backend(), CloudConfig(bind="tcp://127.0.0.1:*"))
    with node:
        thread = threading.Thread(target=node.serve_forever, daemon=True)
        thread.start()
        try:
            with CloudClient(node.endpoint or "") as client:
                for cut in untrained.tails:
                    arrays = {cut.name: _activation(bundle, cut)}
                    request = wire.InferRequest(
                        client.new_id(), bundle.id, cut.id, wire.tensors_of(arrays)
                    )
                    reply, _ = client.call(request, timeout_s=30)
                    assert reply is not None, cut.id
                    assert isinstance(reply.message, wire.Result), (cut.id, reply.message)
                    _assert_same(reply.message.arrays(), embedded.infer(cut, arrays), cut.id)
                pong = client.ping(timeout_s=10)
                assert pong is not None and isinstance(pong.message, wire.Pong)
                assert pong.message.backend == "triton"
        finally:
            node.stop()
            thread.join(timeout=10)
    assert not thread.is_alive(), "cloud node thread did not stop"
    embedded.close()


def test_edge_and_cloud_processes_with_the_triton_backend_answer_like_the_embedded_one(
    untrained: Served, tmp_path: Path
) -> None:
    """`edgesplit cloud --backend triton` and `edgesplit edge` as processes: same answers."""
    bundle = untrained.bundle
    predictions = {}
    for backend in ("triton", "onnxruntime"):
        extra = ["--insecure", "--backend", backend, "--triton-url", untrained.server.grpc_url]
        proc, endpoint = start_cloud_process(
            bundle.root, "tcp://127.0.0.1:*", tmp_path / f"{backend}.log", extra=extra
        )
        try:
            rows = edge_cli_rows(bundle, endpoint, tmp_path / f"{backend}.jsonl", 40)
        finally:
            assert stop_process(proc) == 0
        assert [r["finished"] for r in rows] == ["cloud"] * 40
        predictions[backend] = [r["prediction"] for r in rows]
        log = (tmp_path / f"{backend}.log").read_text()
        assert f"backend {backend}" in log
    assert predictions["triton"] == predictions["onnxruntime"]
