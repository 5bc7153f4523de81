"""The edge's ZeroMQ client: one DEALER socket, requests with a deadline."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import zmq

import wire
from edgesplit.errors import TransportError, WireError
from wire.message import MetaValue


@dataclass(frozen=True)
class Reply:
    """A decoded reply and how long the round trip took."""

    message: wire.Message
    arrays: dict[str, np.ndarray]
    round_trip_s: float


class CloudClient:
    """Sends wire messages to a cloud node and waits for the matching reply.

    Replies that arrive after their deadline are recognised by request id
    and discarded, so a late answer never pairs with the wrong request.
    """

    def __init__(self, endpoint: str, limits: wire.Limits | None = None) -> None:
        self.endpoint = endpoint
        self.limits = limits or wire.Limits()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise TransportError(f"cannot connect to {endpoint}: {exc.strerror}") from exc
        self._next_id = 1
        self.stale_replies = 0

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket and its context."""
        self._socket.close(linger=0)
        self._context.term()

    def new_id(self) -> int:
        """A fresh request id."""
        self._next_id += 1
        return self._next_id

    def request(
        self,
        kind: str,
        arrays: Mapping[str, np.ndarray] | None,
        *,
        codec: str = "raw",
        meta: Mapping[str, MetaValue] | None = None,
        timeout_s: float,
    ) -> tuple[Reply | None, int]:
        """Send one request; return (reply or ``None`` on timeout, bytes sent).

        Raises:
            WireError: the reply was not valid wire format.
        """
        request_id = self.new_id()
        frames = wire.encode_message(kind, request_id, arrays, codec=codec, meta=meta)
        sent = sum(memoryview(f).nbytes for f in frames)
        started = time.perf_counter()
        self._socket.send_multipart(frames, copy=False)
        deadline = started + timeout_s
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or not self._socket.poll(max(1, int(left * 1000)), zmq.POLLIN):
                return None, sent
            parts = self._socket.recv_multipart(copy=False)
            message, values = wire.decode_message(parts, self.limits)
            # An error with id 0 answers a request whose header the cloud could not read.
            if message.request_id == request_id or (
                message.kind == "error" and message.request_id == 0
            ):
                return Reply(message, values, time.perf_counter() - started), sent
            self.stale_replies += 1

    def measure_rtt(self, timeout_s: float, pings: int = 5) -> tuple[float, Reply]:
        """The fastest round trip of ``pings`` pings, and the last ``pong``.

        Raises:
            TransportError: a ping went unanswered within ``timeout_s``.
        """
        round_trips = []
        reply = None
        for _ in range(max(1, pings)):
            reply = self.ping(timeout_s)
            if reply is None:
                raise TransportError(
                    f"cloud at {self.endpoint} did not answer a ping in {timeout_s:g} s"
                )
            round_trips.append(reply.round_trip_s)
        assert reply is not None  # the loop ran at least once
        return min(round_trips), reply

    def ping(self, timeout_s: float) -> Reply | None:
        """A ``ping``; the ``pong`` names the cloud's bundle and backend."""
        try:
            reply, _ = self.request("ping", None, timeout_s=timeout_s)
        except WireError as exc:
            raise TransportError(f"{self.endpoint}: invalid reply to ping: {exc}") from exc
        return reply
