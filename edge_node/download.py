"""Downloading a release archive: in chunks over the cloud channel, or from a URL, at a capped rate.

The cloud's ``welcome`` offers a release as an :class:`Offer` (its sha256 and
size, and a URL or a chunk size). :class:`Downloader` fetches it into a file,
several chunks asked for ahead over its own ZeroMQ socket (the same
authenticated channel the edge sends tensors on), or from the URL, pacing
itself to ``download_bps``; the archive's sha256 must be the offer's. What may
succeed if tried again raises :class:`TransientUpdateError`; what the offer
itself is (too big, a URL that is not http) raises :class:`UpdateError`.

It runs on the updater's background thread, never on the request path.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import wire
from edge_node.config import UpdateConfig
from edge_node.transport import CloudClient, Pending, Reply
from edgesplit.bundle import sha256_file
from edgesplit.errors import TransportError, UpdateError, WireError
from edgesplit.release import MAX_RELEASE_BYTES, is_bundle_id

#: Chunks asked for ahead of the one being written.
WINDOW_CHUNKS = 4
CHUNK_BYTES = 256 * 1024
MAX_CHUNK_BYTES = 4 * 1024 * 1024


class TransientUpdateError(UpdateError):
    """A download that may succeed if tried again (the offer stays takeable)."""


@dataclass(frozen=True)
class Offer:
    """A release the cloud offers: what to download and how to check it.

    Attributes:
        bundle_id: the bundle assigned (the release's bundle id).
        version: the release's version label ("" when the offer gives none).
        sha256: the archive's sha256 (``None``: nothing to download).
        size: the archive's size, bytes (``None``: nothing to download).
        url: where to download it instead of over ZeroMQ (http or https).
        chunk: the chunk size the cloud serves, bytes (``None``: the default).
    """

    bundle_id: str
    version: str = ""
    sha256: str | None = None
    size: int | None = None
    url: str | None = None
    chunk: int | None = None

    @classmethod
    def from_welcome(cls, welcome: wire.Welcome) -> Offer:
        """The offer a ``welcome`` makes; an empty size or a digest that is not one is none."""
        sha = welcome.sha256
        return cls(
            welcome.assigned,
            version=welcome.version or "",
            sha256=sha if sha is not None and is_bundle_id(sha) else None,
            size=welcome.size or None,
            url=welcome.url or None,
            chunk=welcome.chunk,
        )

    @property
    def downloadable(self) -> bool:
        """Whether the offer says what to download: a sha256 and a size."""
        return self.sha256 is not None and self.size is not None


class Downloader:
    """Fetches offered archives (see the module's docstring).

    Args:
        config: ``fetch_timeout_s``, ``download_bps`` and ``name`` (each ``fetch``
            names the edge, so the cloud knows it offered this edge the release).
        client_factory: a new :class:`CloudClient` to the cloud, for a download on its
            own socket; ``None`` (no cloud): URLs only.
    """

    def __init__(
        self, config: UpdateConfig, client_factory: Callable[[], CloudClient] | None
    ) -> None:
        self.config = config
        self._client_factory = client_factory

    def fetch(self, offer: Offer, archive: Path) -> None:
        """Download ``offer`` into ``archive`` and check its sha256.

        Raises:
            UpdateError: the offer is over the size limit or its URL is not http(s).
            TransientUpdateError: the download broke or its sha256 is not the offer's.
        """
        if offer.sha256 is None or offer.size is None:
            raise TransientUpdateError(f"the offer of {offer.bundle_id[:12]} names no archive")
        if offer.size > MAX_RELEASE_BYTES:
            raise UpdateError(
                f"offer of {offer.bundle_id[:12]}: {offer.size} bytes, over the limit of "
                f"{MAX_RELEASE_BYTES}"
            )
        if offer.url is not None:
            self.from_url(offer.url, archive, offer.size)
        else:
            self.chunks(offer.bundle_id, archive, offer.size, offer.chunk)
        if sha256_file(archive) != offer.sha256:
            raise TransientUpdateError(
                f"download of {offer.bundle_id[:12]}: its sha256 does not match the offer's "
                f"{offer.sha256[:12]}: corrupt"
            )

    def chunks(self, bundle_id: str, archive: Path, size: int, chunk: int | None) -> None:
        """Download the archive in chunks over ZeroMQ, several asked for ahead.

        ``WINDOW_CHUNKS`` are in flight ahead of the one being written: on a long
        round trip one at a time would idle the link between chunks.
        """
        if self._client_factory is None:
            raise TransientUpdateError(
                "no cloud connection to download over and no URL in the offer"
            )
        step = chunk if chunk is not None and chunk <= MAX_CHUNK_BYTES else CHUNK_BYTES
        client = self._client_factory()
        ahead: deque[tuple[int, int, Pending | None]] = deque()
        offset = 0
        pace = self._pacer()
        # Paced, one chunk at a time keeps the rate even.
        ahead_most = 1 if self.config.download_bps is not None else WINDOW_CHUNKS
        try:
            self._connected(client)
            with archive.open("wb") as fh:
                while offset < size or ahead:
                    while offset < size and len(ahead) < ahead_most:
                        length = min(step, size - offset)
                        ahead.append((offset, length, self._ask(client, bundle_id, offset, length)))
                        offset += length
                    start, length, pending = ahead.popleft()
                    data = None if pending is None else self._take(client, pending, start, length)
                    if data is None:  # lost or refused on the way: once more, alone
                        data = self._fetch_one(client, bundle_id, start, length)
                    fh.write(data)
                    pace(len(data))
        finally:
            client.close()

    def from_url(self, url: str, archive: Path, size: int) -> None:
        """Download ``url`` (http or https) into ``archive``, at most ``size`` bytes."""
        if not url.startswith(("http://", "https://")):
            raise UpdateError(f"offer URL {url[:80]!r}: expected http:// or https://")
        try:
            with urllib.request.urlopen(url, timeout=self.config.fetch_timeout_s) as response:
                with archive.open("wb") as fh:
                    copied = 0
                    pace = self._pacer()
                    while block := response.read(CHUNK_BYTES):
                        copied += len(block)
                        if copied > size:
                            raise TransientUpdateError(
                                f"{url}: longer than the offer's {size} bytes"
                            )
                        fh.write(block)
                        pace(len(block))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TransientUpdateError(f"download {url}: {exc}") from exc

    def _pacer(self) -> Callable[[int], None]:
        """A function to call after each block: sleeps to hold ``download_bps``.

        Real time on purpose: the pace is a rate on the wire, kept by sleeping on
        this background thread.
        """
        rate = self.config.download_bps
        began = time.perf_counter()
        done = 0

        def pace(nbytes: int) -> None:
            nonlocal done
            done += nbytes
            if rate is not None:
                ahead_s = done * 8.0 / rate - (time.perf_counter() - began)
                if ahead_s > 0:
                    time.sleep(ahead_s)

        return pace

    def _connected(self, client: CloudClient) -> None:
        """Wait for the new socket's connection (it refuses to queue before it is up)."""
        if client.ping(self.config.fetch_timeout_s) is None:
            raise TransientUpdateError(
                f"cannot reach the cloud to download within {self.config.fetch_timeout_s:g} s"
            )

    def _fetch(self, client: CloudClient, bundle_id: str, offset: int, length: int) -> wire.Fetch:
        """A ``fetch``; the name is the hello's, so the cloud knows it offered this edge."""
        return wire.Fetch(client.new_id(), bundle_id, offset, length, self.config.name)

    def _ask(self, client: CloudClient, bundle_id: str, offset: int, length: int) -> Pending | None:
        try:
            return client.send(self._fetch(client, bundle_id, offset, length))
        except TransportError:
            return None

    def _take(
        self, client: CloudClient, pending: Pending, offset: int, length: int
    ) -> bytes | None:
        """A chunk asked for ahead, or ``None`` when it was lost, late or wrong."""
        try:
            reply = client.wait(pending, self.config.fetch_timeout_s)
            return None if reply is None else _chunk(reply, offset, length)
        except (WireError, TransientUpdateError):
            return None

    def _fetch_one(self, client: CloudClient, bundle_id: str, offset: int, length: int) -> bytes:
        problem = ""
        for _ in range(3):
            try:
                reply, _ = client.call(
                    self._fetch(client, bundle_id, offset, length),
                    timeout_s=self.config.fetch_timeout_s,
                )
            except (TransportError, WireError) as exc:
                problem = str(exc)
                time.sleep(0.2)
                continue
            if reply is None:
                problem = f"no answer within {self.config.fetch_timeout_s:g} s"
                continue
            return _chunk(reply, offset, length)
        raise TransientUpdateError(
            f"chunk offset={offset} of {bundle_id[:12]} failed 3 times: {problem}"
        )


def _chunk(reply: Reply, offset: int, length: int) -> bytes:
    """The bytes of a ``chunk`` reply to a fetch of ``length`` bytes at ``offset``.

    Raises:
        TransientUpdateError: the cloud refused, or sent a chunk of another size.
    """
    chunk = reply.message
    if not isinstance(chunk, wire.Chunk):
        why = chunk.message if isinstance(chunk, wire.Busy | wire.ErrorReply) else chunk.kind
        raise TransientUpdateError(f"the cloud refused chunk offset={offset}: {why}")
    if len(chunk.data) != length:
        raise TransientUpdateError(
            f"chunk offset={offset} has {len(chunk.data)} bytes, asked {length}"
        )
    return chunk.data


__all__ = ["Downloader", "Offer", "TransientUpdateError"]
