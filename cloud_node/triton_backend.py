"""The Triton backend: a bundle's tails served by a Triton Inference Server, over gRPC.

The server serves the bundle's ``cloud/`` repository (a stock Triton) or its
python-backend copy (``edgesplit triton-repository``); the models keep the
names the partitioner gave them, ``<model>__tail__<cut>``. On construction
the backend waits for the server, checks that every tail is loaded and that
each model's inputs and outputs are the cut's, so a wrong deployment fails at
start rather than on the first request. All tritonclient and gRPC errors are
converted to :class:`BackendError` here, once.

Thread-safety: one ``tritonclient.grpc.InferenceServerClient`` holds one gRPC
channel, and gRPC channels are thread-safe; ``infer`` builds its request
from arguments only, so worker threads share the client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloud_node.tail import DecodingBackend
from edgesplit.bundle import Bundle, Cut
from edgesplit.errors import BackendError

try:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype
except ImportError as exc:  # the runtime extras leave it out: say how to get it
    raise BackendError(
        f"the triton backend needs tritonclient with gRPC ({exc}); "
        "install it with `pip install 'edgesplit[triton]'` or use --backend onnxruntime"
    ) from exc

DEFAULT_URL = "127.0.0.1:8001"
_TAIL_INFIX = "__tail__"
_REPOSITORY_HINT = (
    "write the repository with `edgesplit triton-repository --bundle BUNDLE --out DIR` "
    "(or serve the bundle's cloud/ on a Triton with the onnxruntime backend) and start "
    "tritonserver with --model-repository DIR"
)
# After a refused connection gRPC backs off up to 120 s before it tries again; a
# server that comes up while we wait should be seen within a second.
_RECONNECT_BACKOFF_MS = 1000
_POLL_S = 0.05


@dataclass(frozen=True)
class _Tail:
    """What the server has for one cut: model name, tensor names, batch limit."""

    model: str
    inputs: tuple[tuple[str, str], ...]  # (name, Triton datatype), the cut's tensors in order
    outputs: tuple[str, ...]  # the final outputs the tail computes
    max_batch: int  # 0: the model does not batch; one request takes any batch


def tail_model_name(bundle: Bundle, cut: Cut, model_prefix: str | None = None) -> str:
    """The Triton model serving ``cut``'s tail: ``<prefix>__tail__<cut id>``.

    The partitioner names tails ``<model name>__tail__<cut id>`` (``cut.tail``
    in the manifest); ``model_prefix`` replaces the model name, for a
    repository deployed under another name.
    """
    if cut.tail is None:
        raise BackendError(f"cut {cut.id} is edge-only: it has no tail to serve")
    if model_prefix is None:
        return cut.tail
    return f"{model_prefix}{_TAIL_INFIX}{cut.id}"


class TritonBackend(DecodingBackend):
    """Tails run by a Triton server, one gRPC client shared by every thread.

    Args:
        bundle: the bundle whose tails the server serves.
        url: the server's gRPC address, ``host:port``.
        timeout_s: longest one inference may take, end to end (seconds).
        ready_timeout_s: how long construction waits for the server (seconds).
        model_prefix: model name prefix of the tails (default: the bundle's
            model name, as ``edgesplit partition`` names them).
        clock: monotonic seconds, for the readiness deadline.

    Raises:
        BackendError: the server is not ready within ``ready_timeout_s``, a
            tail is not loaded, or a model's inputs or outputs are not the cut's.
    """

    name = "triton"

    def __init__(
        self,
        bundle: Bundle,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float = 10.0,
        ready_timeout_s: float = 30.0,
        model_prefix: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bundle = bundle
        self._clock = clock
        self.url = url
        self.provider = f"triton@{url}"
        self.timeout_s = timeout_s
        # Readiness and metadata calls at start: bounded by the ready timeout, not by
        # the inference one (which may be far shorter).
        self._control_timeout_s = max(1.0, ready_timeout_s)
        self._lock = threading.Lock()
        self._client: Any = _connect(url)
        try:
            deadline = clock() + ready_timeout_s
            self._wait_server_ready(deadline, ready_timeout_s)
            cuts = [c for c in bundle.manifest.cuts if c.tail is not None]
            names = {c.id: tail_model_name(bundle, c, model_prefix) for c in cuts}
            self._check_loaded(list(names.values()), deadline)
            self._tails = {c.id: self._check_model(c, names[c.id]) for c in cuts}
        except BaseException:
            self.close()
            raise

    def infer(self, cut: Cut, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the tail of ``cut`` on Triton; batches past the model's limit go in parts.

        The arrays returned are read-only views of the response's bytes.
        """
        tail = self._tails.get(cut.id)
        if tail is None:
            raise BackendError(f"no tail served for cut {cut.id} (edge-only cuts have none)")
        names = [name for name, _ in tail.inputs]
        if set(inputs) != set(names):
            raise BackendError(
                f"cut {cut.id}: model {tail.model} expects inputs {names}, got {sorted(inputs)}"
            )
        rows = {int(v.shape[0]) if v.ndim else 0 for v in inputs.values()}
        if len(rows) != 1 or 0 in rows:
            raise BackendError(
                f"cut {cut.id}: model {tail.model} needs one batch of at least one row for "
                f"every input, got {sorted(rows)}"
            )
        total = rows.pop()
        step = tail.max_batch or total
        parts = [
            self._infer_once(tail, {n: v[i : i + step] for n, v in inputs.items()})
            for i in range(0, total, step)
        ]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in tail.outputs}

    def close(self) -> None:
        """Close the gRPC channel; later calls fail with a BackendError."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _infer_once(self, tail: _Tail, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        client = self._client
        if client is None:
            raise BackendError(f"Triton at {self.url} is closed")
        requests = []
        for name, expected in tail.inputs:
            value = values[name]
            datatype = np_to_triton_dtype(value.dtype)
            if datatype != expected:
                raise BackendError(
                    f"model {tail.model}: input {name} takes {expected}, got dtype={value.dtype}"
                )
            request = grpcclient.InferInput(name, list(value.shape), datatype)
            request.set_data_from_numpy(value)
            requests.append(request)
        try:
            result = client.infer(
                tail.model,
                requests,
                outputs=[grpcclient.InferRequestedOutput(name) for name in tail.outputs],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise BackendError(self._explain(tail.model, exc)) from exc
        except ValueError as exc:  # gRPC: "Cannot invoke RPC on closed channel!"
            raise BackendError(f"Triton at {self.url}: model {tail.model}: {exc}") from exc
        outputs = {}
        for name in tail.outputs:
            output = result.as_numpy(name)
            if output is None:
                raise BackendError(
                    f"Triton at {self.url}: model {tail.model} returned no output {name!r}"
                )
            outputs[name] = output
        return outputs

    def _explain(self, model: str, exc: InferenceServerException) -> str:
        status = str(exc.status() or "")
        if status.endswith("DEADLINE_EXCEEDED"):
            return (
                f"Triton at {self.url}: model {model} did not answer within "
                f"timeout_s={self.timeout_s:g}"
            )
        return f"Triton at {self.url}: model {model} failed: status={status} {exc.message()}"

    def _wait_server_ready(self, deadline: float, ready_timeout_s: float) -> None:
        """Poll the server until it says ready; a BackendError naming the URL at the deadline."""
        why = "no answer"
        while True:
            left = deadline - self._clock()
            if left <= 0:
                raise BackendError(
                    f"Triton at {self.url} not ready after ready_timeout_s={ready_timeout_s:g} "
                    f"({why}); start tritonserver with --grpc-port on that address or pass the "
                    "right URL"
                )
            try:
                if self._client.is_server_ready(client_timeout=min(left, 1.0)):
                    return
                why = "server live but not ready: models still loading or one failed"
            except InferenceServerException as exc:
                why = f"{exc.status()}: {exc.message()}"
            time.sleep(min(_POLL_S, max(0.0, deadline - self._clock())))

    def _check_loaded(self, names: Sequence[str], deadline: float) -> None:
        """Every model in ``names`` ready; waits while one is still loading."""
        while True:
            index = self._call("repository index", self._client.get_model_repository_index)
            states = {m.name: (m.state, m.reason) for m in index.models}
            missing = {n: states.get(n) for n in names if not self._model_ready(n)}
            loading = [n for n, s in missing.items() if s is not None and s[0] == "LOADING"]
            if not missing:
                return
            if not loading or self._clock() > deadline:
                break
            time.sleep(_POLL_S)
        listed = ", ".join(
            f"{n} ({'not in the repository' if s is None else ': '.join(x for x in s if x)})"
            for n, s in missing.items()
        )
        raise BackendError(
            f"Triton at {self.url} does not serve {len(missing)} of the {len(names)} tails of "
            f"bundle {self.bundle.id[:12]}: {listed}; {_REPOSITORY_HINT}"
        )

    def _model_ready(self, model: str) -> bool:
        try:
            return bool(self._client.is_model_ready(model, client_timeout=self._control_timeout_s))
        except InferenceServerException:  # some servers answer "unknown model" with an error
            return False

    def _check_model(self, cut: Cut, model: str) -> _Tail:
        """The model's metadata must be the cut's: its tensors as inputs, the outputs it lacks."""
        metadata = self._call(f"model {model}", self._client.get_model_metadata, model)
        config = self._call(f"model {model}", self._client.get_model_config, model).config
        expected_in = [
            (t.name, np_to_triton_dtype(np.dtype(t.dtype)), _batched(t.shape)) for t in cut.tensors
        ]
        found_in = [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs]
        outputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.outputs}
        problems = []
        if not _same_tensors(sorted(found_in), sorted(expected_in)):
            problems.append(f"inputs {found_in}, expected {expected_in}")
        finals = {t.name: t for t in self.bundle.manifest.edge_only.tensors}
        wanted = tuple(o for o in self.bundle.manifest.model.outputs if o not in cut.edge_outputs)
        for name in wanted:
            final = finals[name]
            expected_out = (np_to_triton_dtype(np.dtype(final.dtype)), _batched(final.shape))
            found_out = outputs.get(name)
            if found_out is None or not _same_tensors(
                [(name, *found_out)], [(name, *expected_out)]
            ):
                problems.append(
                    f"output {name!r} is {found_out}, expected {expected_out}; "
                    f"outputs: {sorted(outputs)}"
                )
        if problems:
            raise BackendError(
                f"Triton at {self.url}: model {model} does not match cut {cut.id} of bundle "
                f"{self.bundle.id[:12]}: {'; '.join(problems)}; serve this bundle's repository"
            )
        inputs = tuple((name, datatype) for name, datatype, _ in expected_in)
        return _Tail(model, inputs, wanted, int(config.max_batch_size))

    def _call(self, what: str, method: Any, *args: Any) -> Any:
        """A control call (readiness, metadata) with the ready timeout's bound."""
        try:
            return method(*args, client_timeout=self._control_timeout_s)
        except InferenceServerException as exc:
            raise BackendError(
                f"Triton at {self.url}: {what}: status={exc.status()} {exc.message()}"
            ) from exc


def _connect(url: str) -> Any:
    """A gRPC client with tritonclient's defaults, but reconnecting within a second."""
    keepalive = grpcclient.KeepAliveOptions()
    options = [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS),
    ]
    try:
        return grpcclient.InferenceServerClient(url, channel_args=options)
    except (InferenceServerException, ValueError) as exc:
        raise BackendError(f"Triton at {url}: cannot create a gRPC client: {exc}") from exc


def _batched(shape: tuple[int, ...]) -> list[int]:
    """Triton's shape of a batched tensor of per-sample ``shape``."""
    return [-1, *shape]


def _same_tensors(
    found: Sequence[tuple[str, str, list[int]]], expected: Sequence[tuple[str, str, list[int]]]
) -> bool:
    """Equal, a per-sample scalar (declared ``dims: [1]``, reshaped) matching ``[-1, 1]`` too."""
    if len(found) != len(expected):
        return False
    for (f_name, f_type, f_shape), (e_name, e_type, e_shape) in zip(found, expected, strict=True):
        scalar_ok = e_shape == [-1] and f_shape == [-1, 1]
        if f_name != e_name or f_type != e_type or (f_shape != e_shape and not scalar_ok):
            return False
    return True
