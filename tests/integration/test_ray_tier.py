"""The cloud tier on a real local Ray cluster (2 CPUs): parity, replica loss, scaling, bad input.

One cluster for the module (Ray takes seconds to start); each test deploys
its own Serve application and deletes it afterwards. The ingress is a real
:class:`CloudNode` on a loopback port; edges talk to it over ZeroMQ.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

import wire
from cloud_node.backends import OnnxRuntimeBackend
from cloud_node.ray_tier import RayBackend, RayTierConfig
from cloud_node.server import CloudConfig
from edge_node.node import EdgeConfig, EdgeNode, Outcome
from edge_node.transport import CloudClient, Reply
from edgesplit.bundle import Bundle
from edgesplit.errors import ConfigError
from offload_policy import Decision, FixedPolicy
from tests.conftest import RunningCloud

ray = pytest.importorskip("ray", reason="Ray is installed with the test extra")
serve = pytest.importorskip("ray.serve")

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A local 2-CPU Ray cluster with Serve, shut down after the module."""
    temp = tmp_path_factory.mktemp("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _temp_dir=str(temp),
    )
    serve.start(proxy_location="Disabled")
    yield
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def tier(cluster: None, request: pytest.FixtureRequest) -> Iterator[list[RayBackend]]:
    """Backends made by a test; their Serve apps are deleted after it."""
    made: list[RayBackend] = []
    yield made
    for backend in made:
        backend.close()
        serve.delete(backend.config.app)


def _config(app: str, **kwargs: object) -> RayTierConfig:
    base: dict[str, object] = {
        "app": app,
        "replica_cpus": 0.5,
        "threads": 1,
        "start_timeout_s": 60.0,
        "request_timeout_s": 10.0,
    }
    base.update(kwargs)
    return RayTierConfig(**base)  # type: ignore[arg-type]


def _inputs(bundle: Bundle, rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        cut.id: rng.standard_normal((rows, *cut.shape), dtype=np.float32)
        for cut in bundle.manifest.cuts
        if cut.tail is not None
    }


def _infer(client: CloudClient, bundle: Bundle, cut_id: str, x: np.ndarray) -> Reply | None:
    cut = bundle.manifest.cut(cut_id)
    request = wire.InferRequest(client.new_id(), bundle.id, cut_id, (wire.Tensor(cut.name, x),))
    reply, _ = client.call(request, timeout_s=15.0)
    return reply


def _ask(endpoint: str, bundle: Bundle, xs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    output = bundle.manifest.model.output
    got = {}
    with CloudClient(endpoint) as client:
        for cut_id, x in xs.items():
            reply = _infer(client, bundle, cut_id, x)
            assert reply is not None, f"no reply for {cut_id}"
            assert isinstance(reply.message, wire.Result), reply.message
            got[cut_id] = reply.message.arrays()[output]
    return got


def _assert_same_as_embedded(
    bundle: Bundle, backend: RayBackend, xs: dict[str, np.ndarray]
) -> RunningCloud:
    """Ask a node on ``backend`` and an embedded node the same; the answers must agree."""
    on_ray = RunningCloud(
        bundle, backend=backend, config=CloudConfig(bind="tcp://127.0.0.1:*", workers=4)
    )
    embedded = RunningCloud(bundle)
    try:
        a = _ask(on_ray.endpoint, bundle, xs)
        b = _ask(embedded.endpoint, bundle, xs)
    finally:
        on_ray.stop()
        embedded.stop()
    assert set(a) == set(xs)
    for cut_id in xs:
        np.testing.assert_allclose(a[cut_id], b[cut_id], rtol=1e-5, atol=1e-5)
        assert (a[cut_id].argmax(1) == b[cut_id].argmax(1)).all()
    return on_ray


def test_results_equal_the_single_process_node(
    untrained_bundle: Bundle, tier: list[RayBackend]
) -> None:
    backend = RayBackend(untrained_bundle, _config("parity"))
    tier.append(backend)
    assert backend.replica_counts() == {"RUNNING": 1}
    assert "onnxruntime" in backend.provider
    xs = _inputs(untrained_bundle, rows=3, seed=1)
    on_ray = _assert_same_as_embedded(untrained_bundle, backend, xs)
    assert len(xs) >= 5 and on_ray.node.counts["ok"] == len(xs)


def test_cuts_of_several_tensors_run_on_the_replicas_like_in_process(
    text_bundle: Bundle, tier: list[RayBackend]
) -> None:
    from edge_node.head import HeadRunner
    from edgesplit.bundle import segment_chain
    from partitioner.byom_zoo import sample_inputs

    backend = RayBackend(text_bundle, _config("multi"))
    tier.append(backend)
    on_ray = RunningCloud(text_bundle, backend=backend)
    embedded = RunningCloud(text_bundle)
    heads = HeadRunner(text_bundle, threads=1)
    inputs = sample_inputs("text_encoder", 2, seed=3)
    cuts = [c for c in text_bundle.manifest.cuts if c.tail and len(c.tensors) > 1]
    try:
        with CloudClient(on_ray.endpoint) as ray_client, CloudClient(embedded.endpoint) as local:
            for cut in cuts:
                head = heads.run(segment_chain(text_bundle.manifest, cut), inputs, None)
                tensors = wire.tensors_of(head.tensors(cut.names))
                answers = []
                for client in (ray_client, local):
                    request = wire.InferRequest(client.new_id(), text_bundle.id, cut.id, tensors)
                    reply, _ = client.call(request, timeout_s=15.0)
                    assert reply is not None and isinstance(reply.message, wire.Result), cut.id
                    answers.append(reply.message.arrays()["logits"])
                np.testing.assert_allclose(answers[0], answers[1], rtol=1e-5, atol=1e-6)
    finally:
        on_ray.stop()
        embedded.stop()
    assert len(cuts) >= 5 and on_ray.node.counts["ok"] == len(cuts)


def test_replicas_calling_triton_answer_like_the_single_process_node(
    untrained_bundle: Bundle, tier: list[RayBackend], tmp_path: Path
) -> None:
    """Triton on Ray: each replica is a tritonclient in front of a real Triton server."""
    from partitioner.triton import python_backend_repository
    from tests.tritonserver import triton_server

    python_backend_repository(untrained_bundle, tmp_path / "repository", threads=1)
    with triton_server(tmp_path / "repository", tmp_path / "server") as server:
        backend = RayBackend(
            untrained_bundle,
            _config("triton", backend="triton", triton_url=server.grpc_url, replica_cpus=0.25),
        )
        tier.append(backend)
        assert "triton" in backend.provider and server.grpc_url in backend.provider
        _assert_same_as_embedded(untrained_bundle, backend, _inputs(untrained_bundle, 2, seed=4))


def _replica_actor(backend: RayBackend) -> str:
    """The Ray actor name of the (one) replica serving ``backend``."""
    return str(backend._handle.describe.remote().result(timeout_s=60)["actor"])


@pytest.mark.parametrize("ingresses", [1, 2])
def test_replica_killed_mid_stream_loses_nothing(
    untrained_bundle: Bundle, tier: list[RayBackend], ingresses: int
) -> None:
    """One edge per ingress; with two, both ingresses share the one replica of one app."""
    backends = []
    for _ in range(ingresses):  # the second joins the app the first deployed
        backends.append(RayBackend(untrained_bundle, _config("kill", request_timeout_s=8.0)))
        tier.append(backends[-1])
    nodes = [
        RunningCloud(
            untrained_bundle,
            backend=backend,
            config=CloudConfig(bind="tcp://127.0.0.1:*", workers=4),
        )
        for backend in backends
    ]
    before = _replica_actor(backends[0])
    assert {_replica_actor(b) for b in backends} == {before}  # one replica, shared
    shape = untrained_bundle.manifest.model.input.shape
    xs = np.random.default_rng(2).standard_normal((300, 1, *shape), dtype=np.float32)
    policy = FixedPolicy(Decision("c03", None, "int8+lz4"), untrained_bundle.manifest.edge_only.id)
    killed: dict[str, float] = {}
    started = threading.Barrier(ingresses + 1)

    def kill_replica() -> None:
        started.wait(timeout=30)
        time.sleep(0.6)
        ray.kill(ray.get_actor(before, namespace="serve"), no_restart=True)
        killed["at"] = time.monotonic()

    def edge(endpoint: str, out: dict[str, object]) -> None:
        outcomes: list[tuple[float, Outcome]] = []
        with CloudClient(endpoint) as client:
            node = EdgeNode(
                untrained_bundle,
                policy,
                client,
                EdgeConfig(timeout_s=1.0, backoff_s=0.2, max_backoff_s=0.5, pipeline_depth=4),
            )
            node.check_cloud()
            started.wait(timeout=30)
            for outcome in node.stream(iter(xs)):
                outcomes.append((time.monotonic(), outcome))
            # Until a replacement replica serves again (Ray restarts it), at most 60 s.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                o = node.infer(xs[0])
                outcomes.append((time.monotonic(), o))
                if o.finished == "cloud" and time.monotonic() > killed.get("at", 1e18) + 0.5:
                    break
                time.sleep(0.02)
        out.update(node=node, outcomes=outcomes)

    results: list[dict[str, object]] = [{} for _ in nodes]
    threads = [threading.Thread(target=kill_replica)] + [
        threading.Thread(target=edge, args=(running.endpoint, out))
        for running, out in zip(nodes, results, strict=True)
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(timeout=180)
    finally:
        for running in nodes:
            running.stop()
    felt = sum(b.retries + b.lost for b in backends)
    for running, out in zip(nodes, results, strict=True):
        node = out["node"]
        outcomes = out["outcomes"]
        assert isinstance(node, EdgeNode) and isinstance(outcomes, list)
        answered = [o for _, o in outcomes]
        # Every request answered exactly once at the edge, cloud or local.
        assert len(answered) >= len(xs)
        assert sum(node.counts[k] for k in ("cloud", "edge", "fallback")) == len(answered)
        # The ingress answered every request it received exactly once (after its drain): as
        # many results and busy replies as its edge sent, whether it still waited or not.
        served = running.node.counts
        reasons = Counter(o.reason for o in answered if o.finished == "fallback")
        sent = node.counts["cloud"] + reasons["timeout"] + reasons["busy"]
        assert served["ok"] + served["busy"] == sent, (served, node.counts, reasons)
        assert not [k for k in served if k.startswith("error")], served
        felt += served["busy"] + reasons["timeout"]
        after = [o for t, o in outcomes if t > killed["at"]]
        assert after and after[-1].finished == "cloud"
        print(
            f"replica kill, {ingresses} ingress(es): {len(answered)} answered, busy "
            f"{served['busy']}, fallbacks {dict(reasons)}"
        )
    # The kill was felt (a retry, a busy reply, or requests that waited for the replacement
    # past the edge's deadline and finished locally), and Ray replaced the replica.
    assert felt >= 1
    replacement = _replica_actor(backends[0])
    assert replacement != before
    print(f"replaced {before} -> {replacement}, retries {[b.retries for b in backends]}")


def test_a_replica_decodes_the_frames_as_sent_and_answers_a_bad_one_with_its_code(
    untrained_bundle: Bundle, tier: list[RayBackend]
) -> None:
    """The ingress hands the replica the wire's bytes (int8+lz4), not a decoded float32."""
    backend = RayBackend(untrained_bundle, _config("encoded"))
    tier.append(backend)
    running = RunningCloud(
        untrained_bundle, backend=backend, config=CloudConfig(bind="tcp://127.0.0.1:*")
    )
    cut = untrained_bundle.manifest.cut("c03")
    x = np.random.default_rng(5).standard_normal((2, *cut.shape), dtype=np.float32)
    request = wire.InferRequest(1, untrained_bundle.id, cut.id, (wire.Tensor(cut.name, x),))
    good = wire.encode(request, "int8+lz4")
    bad = list(good)
    bad[1] = b"\xff" * len(good[1])  # the declared length: only decoding finds it out
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 20_000)
    sock.connect(running.endpoint)
    try:
        replies: dict[str, list[Any]] = {}
        for frames in (good, bad, good):
            sock.send_multipart(frames)
            message = wire.decode(sock.recv_multipart())
            replies.setdefault(message.kind, []).append(message)
    finally:
        sock.close()
        running.stop()
    assert [m.code for m in replies["error"]] == ["decompression"]
    assert len(replies["result"]) == 2
    embedded = OnnxRuntimeBackend(untrained_bundle, threads=1)
    decoded = wire.decode(good).arrays()[cut.name]  # type: ignore[union-attr]
    expected = embedded.infer(cut, {cut.name: decoded})[untrained_bundle.manifest.model.output]
    output = replies["result"][0].arrays()[untrained_bundle.manifest.model.output]
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    sent = running.node.metrics.registry.get_sample_value("edgesplit_cloud_backend_bytes_total")
    assert sent == 3 * len(good[1]) < decoded.nbytes  # encoded bytes went to the replica
    assert running.node.counts["error_decompression"] == 1


def test_scales_from_one_to_two_replicas_under_load(
    untrained_bundle: Bundle, tier: list[RayBackend]
) -> None:
    config = _config(
        "scale",
        min_replicas=1,
        max_replicas=2,
        target_ongoing_requests=1.0,
        max_ongoing_requests=2,
        upscale_delay_s=0.5,
        downscale_delay_s=600.0,
    )
    backend = RayBackend(untrained_bundle, config)
    tier.append(backend)
    assert backend.replica_counts() == {"RUNNING": 1}
    running = RunningCloud(
        untrained_bundle,
        backend=backend,
        config=CloudConfig(bind="tcp://127.0.0.1:*", workers=config.dispatchers, queue_size=256),
    )
    cut = untrained_bundle.manifest.cut("c00")
    x = np.random.default_rng(3).standard_normal((1, *cut.shape), dtype=np.float32)
    stop = threading.Event()
    queue_s: list[float] = []
    compute_s: list[float] = []
    lock = threading.Lock()

    def edge() -> None:
        with CloudClient(running.endpoint) as client:
            while not stop.is_set():
                reply = _infer(client, untrained_bundle, cut.id, x)
                if reply is not None and isinstance(reply.message, wire.Result):
                    with lock:
                        queue_s.append(reply.message.queue_s)
                        compute_s.append(reply.message.compute_s)

    edges = [threading.Thread(target=edge) for _ in range(8)]
    for t in edges:
        t.start()
    counts: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            counts = backend.replica_counts()
            if counts.get("RUNNING", 0) >= 2:
                break
            time.sleep(0.25)
    finally:
        stop.set()
        for t in edges:
            t.join()
        running.stop()
    assert counts.get("RUNNING", 0) == 2, counts
    gauge = running.node.metrics.registry.get_sample_value("edgesplit_cloud_replicas")
    assert gauge is not None and gauge >= 1
    # The replies' queue time is the real backlog (ingress queue, Serve's queue, the hops):
    # with 8 edges on 1-2 replicas a request waits longer than the tail computes.
    assert queue_s and float(np.median(queue_s)) > float(np.median(compute_s))
    # The queue estimate divides by the running replicas (cached for a second).
    deadline = time.monotonic() + 5
    while backend.parallelism() != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert backend.parallelism() == 2


def test_a_replica_too_slow_to_answer_gets_busy_replies(
    untrained_bundle: Bundle, tier: list[RayBackend]
) -> None:
    """No replica answer within request_timeout_s: each admitted request is answered busy."""
    backend = RayBackend(untrained_bundle, _config("slow", request_timeout_s=0.0005))
    tier.append(backend)
    running = RunningCloud(
        untrained_bundle,
        backend=backend,
        config=CloudConfig(bind="tcp://127.0.0.1:*", workers=2, busy_retry_s=0.5),
    )
    cut = untrained_bundle.manifest.cut("c03")
    x = np.zeros((1, *cut.shape), dtype=np.float32)
    try:
        with CloudClient(running.endpoint) as client:
            replies = [_infer(client, untrained_bundle, cut.id, x) for _ in range(5)]
    finally:
        running.stop()
    for reply in replies:
        assert reply is not None and isinstance(reply.message, wire.Busy)
        assert reply.message.code == "busy"
        assert reply.message.queue_s >= 0.5
        assert "no replica answered within" in reply.message.message
    assert running.node.counts["busy_backend"] == 5 and running.node.counts["ok"] == 0
    assert backend.lost == 5


def test_too_few_resources_is_a_clear_error(untrained_bundle: Bundle, cluster: None) -> None:
    began = time.monotonic()
    with pytest.raises(ConfigError, match=r"has 2 CPU\(s\) in all but 3 replica"):
        RayBackend(
            untrained_bundle, _config("greedy", min_replicas=3, max_replicas=3, replica_cpus=1.0)
        )
    with pytest.raises(ConfigError, match=r"GPU"):
        RayBackend(untrained_bundle, _config("gpu", replica_gpus=1.0))
    assert time.monotonic() - began < 5


def test_bundle_missing_on_the_worker_is_a_clear_error(
    untrained_bundle: Bundle, cluster: None, tmp_path: Path
) -> None:
    began = time.monotonic()
    with pytest.raises(ConfigError, match=r"is not on Ray node"):
        RayBackend(untrained_bundle, _config("missing", bundle_path=tmp_path / "nowhere"))
    assert time.monotonic() - began < 60
    # The failed app is deleted, not left retrying forever.
    deadline = time.monotonic() + 20
    while "missing" in serve.status().applications and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "missing" not in serve.status().applications


def test_other_bundle_on_the_worker_is_refused(
    untrained_bundle: Bundle, branchynet_bundle: Bundle, cluster: None
) -> None:
    with pytest.raises(ConfigError, match=r"deploy the same bundle everywhere"):
        RayBackend(untrained_bundle, _config("other", bundle_path=branchynet_bundle.root))
