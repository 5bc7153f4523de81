"""One frozen type per message kind: what each kind says, field by field.

The data plane: an edge's :class:`InferRequest` (the cut's tensors) is
answered by a :class:`Result` (the tail's outputs), a :class:`Busy` (run it
yourself; the queue's delay) or an :class:`ErrorReply` (a stable code); a
:class:`Ping` by a :class:`Pong`. The fleet's control plane: an edge's
:class:`Hello` heartbeat is answered by a :class:`Welcome` (its assigned
bundle, maybe an offer to download); a :class:`Fetch` by a :class:`Chunk` of
the release; an admin's :class:`FleetQuery` by a :class:`FleetReport`.

Every type has its ``request_id`` first (an answer echoes its request's) and
its ``kind`` as a class attribute. Scalar fields travel in the header's
``meta`` under their names (:mod:`wire.fields` checks them); tensors travel
in frames of their own. Constructing a message checks nothing: ``wire.encode``
checks what is sent, ``wire.decode`` what is received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from wire.fields import at_least
from wire.limits import DEFAULT_LIMITS, Limits
from wire.tensors import AnyTensor, arrays_of


@dataclass(frozen=True, eq=False)  # tensors are arrays: no field-by-field equality
class InferRequest:
    """An edge's request: run the tail of ``cut`` of ``bundle`` on ``tensors``.

    Attributes:
        request_id: the edge's id, echoed by the answer.
        bundle: the id of the bundle the edge runs (the cloud refuses another).
        cut: the cut's id in that bundle.
        tensors: the cut's tensors (one per tensor of a multi-tensor cut), batch
            first: arrays to send, arrays decoded, or payloads kept encoded.
    """

    kind: ClassVar[str] = "infer"
    request_id: int
    bundle: str = ""
    cut: str = ""
    tensors: tuple[AnyTensor, ...] = ()

    def arrays(self, limits: Limits = DEFAULT_LIMITS) -> dict[str, np.ndarray]:
        """The tensors' arrays by name (an encoded one decoded here, against ``limits``)."""
        return arrays_of(self.tensors, limits)


@dataclass(frozen=True, eq=False)  # tensors are arrays: no field-by-field equality
class Result:
    """The cloud's answer to an :class:`InferRequest`: the tail's outputs and its timing.

    Attributes:
        tensors: the outputs, rows of this request only.
        queue_s: seconds the request waited before its batch ran (everything
            but the tail's compute: the queue, decoding, a hop to a replica).
        compute_s: seconds the tail computed the batch.
        cut: the cut that was run.
        batch: requests in the batch the request ran in (its compute is shared).
    """

    kind: ClassVar[str] = "result"
    request_id: int
    tensors: tuple[AnyTensor, ...] = ()
    queue_s: float = at_least(0.0, 0.0, finite=True)
    compute_s: float = at_least(0.0, 0.0, finite=True)
    cut: str = ""
    batch: int = at_least(1, 1)

    def arrays(self, limits: Limits = DEFAULT_LIMITS) -> dict[str, np.ndarray]:
        """The outputs by name (an encoded one decoded here, against ``limits``)."""
        return arrays_of(self.tensors, limits)


@dataclass(frozen=True)
class Busy:
    """The cloud cannot take the request now: the edge runs it itself.

    Attributes:
        queue_s: the delay the cloud announces (its queue's expected wait):
            the edge keeps its requests for that long.
        depth: requests waiting in the cloud's queue.
        message: why, for people.
    """

    kind: ClassVar[str] = "busy"
    #: Sent as the ``code`` field too, as an :class:`ErrorReply`'s.
    code: ClassVar[str] = "busy"
    request_id: int
    queue_s: float = at_least(0.0, 0.0, finite=True)
    depth: int = at_least(0, 0)
    message: str = ""


@dataclass(frozen=True)
class ErrorReply:
    """A request refused or failed.

    Attributes:
        code: a stable label (``header``, ``payload``, ``decompression``, ``shape``,
            ``bundle_mismatch``, ``unknown_cut``, ``kind``, ``backend``, ``forbidden``...).
        message: what and where, for people.
    """

    kind: ClassVar[str] = "error"
    request_id: int
    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class Ping:
    """Is the cloud there, and what does it serve? Answered by a :class:`Pong`."""

    kind: ClassVar[str] = "ping"
    request_id: int


@dataclass(frozen=True)
class Pong:
    """The cloud's answer to a :class:`Ping`.

    Attributes:
        bundle: the id of the bundle the cloud serves first.
        bundles: every bundle id it serves, comma-separated (a rollout serves two).
        backend: what runs its tails (``onnxruntime``, ``triton``, ``ray``).
        queue_s: the expected wait of a request admitted now, seconds.
    """

    kind: ClassVar[str] = "pong"
    request_id: int
    bundle: str = ""
    bundles: str = ""
    backend: str = ""
    queue_s: float = at_least(0.0, 0.0, finite=True)

    @property
    def served(self) -> tuple[str, ...]:
        """The bundle ids the cloud serves (``bundles``, else ``bundle``)."""
        return tuple(self.bundles.split(",")) if self.bundles else (self.bundle,)


@dataclass(frozen=True)
class Hello:
    """An edge's heartbeat: which bundle it runs and how healthy it is there.

    Attributes:
        name: the edge's name (told apart from others sharing its key).
        bundle: the id of the bundle it runs.
        version: that bundle's release version.
        state: its update state (``serving``, ``downloading``, ``probation``...).
        requests: requests in its current health window.
        errors: of those, the ones that failed.
        p50_ms: median latency over the window, ``None`` when unknown.
        p95_ms: 95th percentile latency, ``None`` when unknown.
        candidate: the bundle it is trying, refused or rolled back (else empty).
        note: a short remark, for people.
    """

    kind: ClassVar[str] = "hello"
    request_id: int
    name: str = ""
    bundle: str = ""
    version: str = ""
    state: str = "serving"
    requests: int = at_least(0, 0)
    errors: int = at_least(0, 0)
    p50_ms: float | None = at_least(0.0, finite=True)
    p95_ms: float | None = at_least(0.0, finite=True)
    candidate: str = ""
    note: str = ""


@dataclass(frozen=True)
class Welcome:
    """The cloud's answer to a :class:`Hello`: the bundle the edge should run.

    Attributes:
        assigned: that bundle's id; empty: keep what it runs.
        version: its release version.
        group: ``A`` (stable) or ``B`` (the rollout's candidate).
        sha256: an offer's edge archive digest (``None``: nothing to download).
        size: the archive's bytes.
        chunk: bytes to ask for in one :class:`Fetch`.
        url: where to download the archive instead (``None``: over this channel).
        note: a remark (``over the key's rate``...).
    """

    kind: ClassVar[str] = "welcome"
    request_id: int
    assigned: str = ""
    version: str | None = None
    group: str = ""
    sha256: str | None = None
    size: int | None = at_least(0)
    chunk: int | None = at_least(1)
    url: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Fetch:
    """An edge asks for ``length`` bytes at ``offset`` of the release of ``bundle``.

    Attributes:
        name: the edge's name, as its :class:`Hello` gives it (only an edge
            offered the release gets its bytes).
    """

    kind: ClassVar[str] = "fetch"
    request_id: int
    bundle: str = ""
    offset: int = at_least(0, 0)
    length: int = at_least(0, 0)
    name: str = ""


@dataclass(frozen=True)
class Chunk:
    """Bytes of a release at ``offset``: the answer to a :class:`Fetch`."""

    kind: ClassVar[str] = "chunk"
    request_id: int
    offset: int = at_least(0, 0)
    data: bytes = b""


@dataclass(frozen=True)
class FleetQuery:
    """An admin's question to the fleet's control plane.

    Attributes:
        op: ``status`` (one page of the fleet view) or ``rollout`` (set the share
            of the fleet offered the release).
        fraction: ``rollout``: the share, 0..1.
        after: ``status``: the page starts after this edge's name.
        limit: ``status``: most edges in the page.
    """

    kind: ClassVar[str] = "fleet"
    request_id: int
    op: str = "status"
    fraction: float | None = None
    after: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class FleetReport:
    """One page of the fleet view, as UTF-8 JSON: the answer to a :class:`FleetQuery`."""

    kind: ClassVar[str] = "report"
    request_id: int
    json: bytes = b""


AnyMessage = (
    InferRequest
    | Result
    | Busy
    | ErrorReply
    | Ping
    | Pong
    | Hello
    | Welcome
    | Fetch
    | Chunk
    | FleetQuery
    | FleetReport
)
"""Any message of the format."""

MESSAGE_TYPES: tuple[type[AnyMessage], ...] = (
    InferRequest,
    Result,
    Busy,
    ErrorReply,
    Ping,
    Pong,
    Hello,
    Welcome,
    Fetch,
    Chunk,
    FleetQuery,
    FleetReport,
)
"""One type per kind, in the order of ``wire.KINDS``."""
