"""Over-the-air bundle updates on the edge: heartbeat, download, verify, switch, probation.

Between two requests, at most every ``interval_s``, the edge says ``hello`` to
the cloud with its bundle, version, update state and its health over the
bundle serving (requests, errors, latency percentiles). The cloud's ``welcome`` names the bundle the
edge should run. When that is another bundle, the edge:

1. downloads the release archive in a background thread, over the same
   authenticated ZeroMQ channel in chunks, or from the offer's URL, into
   ``state_dir/downloads``, checking the sha256 the offer announced;
2. verifies it (:func:`edgesplit.release.unpack_release`): the signature when
   verification keys are configured (an unsigned release is then refused), its
   sequence against the release committed last (an older one is a rollback,
   refused unless ``allow_downgrade``), that it holds the edge's part only (no
   tail), the bundle's id against the release and every edge file against the
   manifest; and stages it in ``state_dir/bundles/<id>``, loading its head
   sessions there;
3. switches between two requests: requests already started finish on the old
   bundle, the next one runs on the new;
4. keeps the old bundle loaded for a probation window: a request whose head
   fails on the new bundle is answered by the old one; when at least
   ``min_requests`` requests have run on the new bundle its error rate and
   median latency are compared with the old one's last window, and a
   regression switches back at once (rolled back; that release is never taken
   again). After ``probation_s`` without a regression the new bundle is
   committed: ``state_dir/current`` names it, so a restart serves it, and
   ``state_dir/sequence.json`` keeps its release's sequence.

Nothing here blocks a request for long: the hello is sent and collected
without waiting, and downloads, checks and session loading run off the
request path.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_node.head import HeadRunner
from edge_node.records import Outcome
from edge_node.transport import CloudClient, Pending, Reply
from edgesplit.bundle import Bundle, load_bundle, sha256_file
from edgesplit.errors import (
    BundleError,
    ConfigError,
    EdgesplitError,
    RollbackError,
    TransportError,
    UpdateError,
    WireError,
)
from edgesplit.release import (
    EDGE_NAMES,
    MAX_RELEASE_BYTES,
    RELEASE,
    check_sequence,
    edge_only,
    is_bundle_id,
    parse_release,
    unpack_release,
    verify_signature,
)

log = logging.getLogger(__name__)

CURRENT = "current"
REFUSED = "refused.json"
#: The sequence of the release committed last, and its bundle: older ones are refused.
SEQUENCE = "sequence.json"
_WINDOW = 500
_DOWNLOAD_ATTEMPTS = 3
#: Chunks asked for ahead of the one being written.
_WINDOW_CHUNKS = 4


@dataclass(frozen=True)
class UpdateConfig:
    """How the edge takes updates.

    Attributes:
        state_dir: where releases are downloaded, staged and committed.
        name: this edge's name in the fleet (the CURVE key's name wins at the cloud).
        interval_s: seconds between heartbeats.
        probation_s: seconds a new bundle serves before it is committed.
        min_requests: requests on a new bundle (and of the old one's window) needed
            to judge it; a regression found with this many rolls back at once.
        max_error_increase: tolerated rise of the error rate (absolute, 0..1).
        max_latency_ratio: tolerated ratio of median latencies, new / old.
        verify_keys: Ed25519 public keys a release must be signed by; ``None``:
            signatures are not required (hashes are still checked).
        fetch_timeout_s: deadline of one chunk (or of the URL's connection).
        keep: committed bundles kept in the store (the current one included).
        accept: take assigned bundles; ``False`` only reports to the fleet view.
        base: the id of the bundle the edge is configured with; a commit records it,
            and a restart serves the committed bundle only while the configured one
            is still this (a newly deployed bundle wins over an older update).
        base_root: the configured bundle's directory: assigned back to it (a rollout
            stopped), the edge switches to it from there, without a download.
        download_bps: most bits per second a download may take (``None``: as fast as
            the link goes); on a thin uplink, leave room for the offloaded tensors.
        allow_downgrade: take a release older than the one committed (a lower
            sequence); off, such a release is refused as a rollback.
    """

    state_dir: Path
    name: str = "edge"
    interval_s: float = 10.0
    probation_s: float = 60.0
    min_requests: int = 20
    max_error_increase: float = 0.05
    max_latency_ratio: float = 1.5
    verify_keys: tuple[Any, ...] | None = None
    fetch_timeout_s: float = 10.0
    keep: int = 2
    accept: bool = True
    base: str = ""
    base_root: Path | None = None
    download_bps: float | None = None
    allow_downgrade: bool = False

    def __post_init__(self) -> None:
        for key in ("interval_s", "probation_s", "fetch_timeout_s", "max_latency_ratio"):
            value = getattr(self, key)
            if not value > 0 or math.isinf(value):
                raise ConfigError(f"update {key}={value!r}: expected a number > 0")


@dataclass
class Health:
    """Outcomes of one bundle: how many failed, how long they took."""

    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    failed: deque[bool] = field(default_factory=lambda: deque(maxlen=_WINDOW))

    def add(self, outcome: Outcome) -> None:
        """Count ``outcome``: an error is an answer the decision did not plan (a fallback)."""
        self.latencies.append(outcome.latency_s)
        self.failed.append(outcome.finished == "fallback")

    @property
    def window(self) -> int:
        """Outcomes in the window."""
        return len(self.failed)

    def error_rate(self) -> float:
        """Errors per request over the window (NaN when empty)."""
        return sum(self.failed) / len(self.failed) if self.failed else math.nan

    def percentile_ms(self, q: float, skip: int = 0) -> float:
        """Latency percentile over the window, ms, leaving out the first ``skip`` (NaN if none)."""
        values = list(self.latencies)[skip:]
        return float(np.percentile(values, q) * 1e3) if values else math.nan


@dataclass
class _Staged:
    bundle: Bundle
    version: str
    runner: HeadRunner
    policy: Any
    sequence: int = 0  # its release's; 0: the configured bundle or an unsequenced release


@dataclass
class Verdict:
    """A probation's outcome and its figures."""

    regressed: bool
    reason: str


def judge(old: Health, new: Health, config: UpdateConfig, final: bool) -> Verdict | None:
    """Compare the new bundle's health with the old one's; ``None``: no verdict yet.

    Errors are judged as soon as ``min_requests`` ran on the new bundle: a rise
    rolls back at once. Latency is judged only at the end of probation
    (``final``), over the requests after the first fifth (at most 20), which
    warm the new sessions and caches: a verdict on a few cold requests would
    roll back a healthy bundle.
    """
    if new.window < config.min_requests:
        return None
    new_rate = new.error_rate()
    base_rate = old.error_rate() if old.window >= config.min_requests else 0.0
    figures = f"error rate {new_rate:.1%} vs {base_rate:.1%}"
    if new_rate > base_rate + config.max_error_increase:
        return Verdict(True, f"{figures} (tolerated +{config.max_error_increase:.0%})")
    if not final:
        return None
    if old.window >= config.min_requests:
        new_p50 = new.percentile_ms(50, skip=min(new.window // 5, 20))
        base_p50 = old.percentile_ms(50)
        figures += f", p50 {new_p50:.1f} ms vs {base_p50:.1f} ms"
        if new_p50 > base_p50 * config.max_latency_ratio:
            return Verdict(True, f"{figures} (tolerated x{config.max_latency_ratio:g})")
    return Verdict(False, figures)


class Updater:
    """Takes the bundle the cloud assigns, safely; hooks into an :class:`EdgeNode`.

    Args:
        config: see :class:`UpdateConfig`.
        version: the release version of the bundle serving at start.
        client_factory: a new :class:`CloudClient` to the same cloud (for downloads,
            on their own socket); ``None`` (no cloud): URLs only.
        make_runner: head sessions for a staged bundle (same providers as the node's).
        make_policy: the policy for a staged bundle (raises ConfigError if the edge's
            configuration cannot serve it, e.g. a fixed cut it lacks).
    """

    def __init__(
        self,
        config: UpdateConfig,
        version: str,
        client_factory: Callable[[], CloudClient] | None,
        make_runner: Callable[[Bundle], HeadRunner],
        make_policy: Callable[[Bundle], Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.version = version
        self._client_factory = client_factory
        self._make_runner = make_runner
        self._make_policy = make_policy
        self._clock = clock
        self.state = "serving"
        self.note = ""
        self.candidate = ""
        self.health = Health()
        self._old_health = Health()
        self._old_version = ""
        self._hello: Pending | None = None
        self._next_hello = -math.inf
        self._worker: threading.Thread | None = None
        self._staged: _Staged | None = None
        self._failure: tuple[str, str, bool] | None = None  # (bundle id, message, permanent)
        self._switched_at: float | None = None
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.refused: set[str] = _read_refused(config.state_dir / REFUSED)
        #: (sequence, bundle id) of the release committed last; ``None``: none with one.
        self.committed_sequence = read_sequence(config.state_dir)
        self._sequence = 0  # of the bundle on probation
        # Refused as rollbacks: not written to refused.json, so that an operator who
        # then allows downgrades gets them at the next offer.
        self._older: set[str] = set()
        _clean_leftovers(config.state_dir, config.base_root)

    # -- hooks called by the node ------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        """Count an outcome against the bundle that answered it."""
        on_old = (
            self._switched_at is not None
            and outcome.bundle != self.candidate
            and outcome.reason != "head_failed"  # the new bundle failed; the old one answered
        )
        (self._old_health if on_old else self.health).add(outcome)

    def tick(self, node: Any, now: float) -> None:
        """Heartbeat, take finished downloads, switch, judge; between two requests.

        Never raises: an update that cannot go on (a full disk, say) is logged and
        counted, and the request that called this is served all the same.
        """
        try:
            self._tick(node, now)
        except Exception as exc:  # noqa: BLE001 - the request must be served regardless
            log.exception("update step failed; serving on error=%s", exc)
            self.note = f"update step failed: {type(exc).__name__}: {exc}"[:300]
            node.metrics.updates.labels("error").inc()

    def _tick(self, node: Any, now: float) -> None:
        self._heartbeat(node, now)
        with self._lock:
            staged, self._staged = self._staged, None
            failure, self._failure = self._failure, None
        if failure is not None:
            self._refuse(node, *failure)
        if staged is not None:
            self._switch(node, staged)
        if self.state == "probation":
            self._probation(node)

    # -- heartbeat ---------------------------------------------------------------------------

    def _heartbeat(self, node: Any, now: float) -> None:
        if self._next_hello == -math.inf:
            node.metrics.bundle_info.labels(node.bundle.id[:12], self.version).set(1)
        client = node.client
        if client is None:
            return
        if self._hello is not None:
            try:
                reply = client.poll(self._hello)
            except (WireError, TransportError) as exc:
                log.warning("invalid welcome from the cloud error=%s", exc)
                reply, self._hello = None, None
            if reply is not None:
                self._hello = None
                self._welcome(node, reply.message.kind, dict(reply.message.meta))
            elif (
                self._hello is not None
                and time.perf_counter() > self._hello.sent_at + self.config.fetch_timeout_s
            ):
                client.abandon(self._hello)
                self._hello = None
        if self._hello is None and now >= self._next_hello:
            self._next_hello = now + self.config.interval_s
            try:
                self._hello = client.send("hello", None, meta=self.status(node))
            except TransportError:
                self._hello = None

    def status(self, node: Any) -> dict[str, Any]:
        """What the heartbeat tells the cloud."""
        h = self.health
        return {
            "name": self.config.name,
            "bundle": node.bundle.id,
            "version": self.version,
            "state": self.state,
            "requests": h.window,
            "errors": sum(h.failed),
            "p50_ms": _finite(h.percentile_ms(50)),
            "p95_ms": _finite(h.percentile_ms(95)),
            "candidate": self.candidate,
            "note": self.note[:300],
        }

    def _welcome(self, node: Any, kind: str, meta: dict[str, Any]) -> None:
        if kind != "welcome":
            log.warning("the cloud does not take heartbeats (%s): %s", kind, meta.get("message"))
            return
        assigned = meta.get("assigned")
        if not isinstance(assigned, str) or not assigned or assigned == node.bundle.id:
            return
        if not is_bundle_id(assigned):
            self.note = f"ignored an assignment that is not a bundle id: {assigned[:20]!r}"
            return
        if not self.config.accept:
            if self.note != f"not taking {assigned[:12]} (updates off)":
                self.note = f"not taking {assigned[:12]} (updates off)"
                log.info("update offered bundle=%s; updates are off", assigned[:12])
            return
        if self.state in ("downloading", "probation") or assigned in self.refused:
            return
        if node.spare is not None and node.spare[0].id == assigned:
            return
        if self._local(assigned) is None and not _downloadable(meta):
            # The stable bundle after a promotion, say: nothing to download it from. Not a
            # refusal: a later offer (or a redeployment) may bring it.
            note = f"assigned bundle {assigned[:12]} is not on this edge and not offered"
            if self.note != note:
                self.note = note
                log.warning("update %s", note)
            return
        self._start_download(node, assigned, meta)

    def _local(self, bundle_id: str) -> Path | None:
        """Where ``bundle_id`` already is on this edge: the configured bundle or the store."""
        if bundle_id == self.config.base and self.config.base_root is not None:
            return self.config.base_root
        kept = self.config.state_dir / "bundles" / bundle_id
        return kept if (kept / "manifest.json").is_file() else None

    # -- download, verify, stage (background thread) -----------------------------------------

    def _start_download(self, node: Any, bundle_id: str, offer: dict[str, Any]) -> None:
        self.state, self.candidate = "downloading", bundle_id
        self.note = f"version {offer.get('version')}"
        self._event(node, "offered", f"{bundle_id[:12]} ({offer.get('version')})")
        input_spec = node.bundle.manifest.model.input
        self._worker = threading.Thread(
            target=self._download_and_stage,
            args=(bundle_id, offer, input_spec),
            name="edgesplit-update",
            daemon=True,
        )
        self._worker.start()

    def _download_and_stage(self, bundle_id: str, offer: dict[str, Any], input_spec: Any) -> None:
        downloads = self.config.state_dir / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        archive = downloads / f"{bundle_id}.tar"
        try:
            kept = self._local(bundle_id)
            if kept is not None:
                # Taken before (a rollout stopped, a bundle committed then left): hash every
                # file again rather than trust the disk, and check its signature and
                # sequence again.
                bundle, sequence = self._reuse(kept, bundle_id)
                self._stage(bundle, str(offer.get("version") or ""), input_spec, sequence)
                return
            sha, size = offer["sha256"], offer["size"]
            if size > MAX_RELEASE_BYTES:
                raise UpdateError(
                    f"offer of {bundle_id[:12]}: {size} bytes, over the limit of "
                    f"{MAX_RELEASE_BYTES}"
                )
            url = offer.get("url")
            if isinstance(url, str) and url:
                self._fetch_url(url, archive, size)
            else:
                self._fetch_chunks(bundle_id, archive, size, offer.get("chunk"))
            if sha256_file(archive) != sha:
                raise _Retryable(
                    f"download of {bundle_id[:12]}: its sha256 does not match the offer's "
                    f"{sha[:12]}: corrupt"
                )
            release, bundle = unpack_release(
                archive,
                self.config.state_dir / "bundles",
                verify_keys=None
                if self.config.verify_keys is None
                else list(self.config.verify_keys),
                role="edge",
                committed=self._floor(),
            )
            if release.bundle_id != bundle_id:
                raise UpdateError(
                    f"offered bundle {bundle_id[:12]} but the release holds "
                    f"{release.bundle_id[:12]}"
                )
            self._stage(bundle, release.version, input_spec, release.sequence)
        except _Retryable as exc:
            with self._lock:
                self._failure = (bundle_id, str(exc), False)
        except RollbackError as exc:
            with self._lock:
                self._older.add(bundle_id)
                self._failure = (bundle_id, str(exc), True)
        except (UpdateError, ConfigError) as exc:
            # What the release is: unsigned, tampered, invalid, or not for this edge.
            with self._lock:
                self._failure = (bundle_id, str(exc), True)
        except Exception as exc:  # noqa: BLE001 - disk, network, a session (GPU memory...)
            # Local or passing trouble: tried again, refused after the last attempt.
            with self._lock:
                self._failure = (bundle_id, f"{type(exc).__name__}: {exc}", False)
        finally:
            archive.unlink(missing_ok=True)

    def _reuse(self, root: Path, bundle_id: str) -> tuple[Bundle, int]:
        """A bundle already on this edge, checked again as if it had just arrived.

        Returns it and its release's sequence (0 for the configured bundle: the
        operator's own choice is never a rollback).
        """
        try:
            bundle = load_bundle(root, verify="edge")
        except BundleError as exc:
            raise UpdateError(f"bundle {bundle_id[:12]} on this edge is damaged: {exc}") from exc
        if bundle.id != bundle_id:
            raise UpdateError(f"{root} holds bundle {bundle.id[:12]}, not {bundle_id[:12]}")
        if root == self.config.base_root:
            return bundle, 0
        keys = self.config.verify_keys
        try:
            release = parse_release((root / RELEASE).read_bytes(), root)
        except OSError as exc:
            if keys is not None:
                raise UpdateError(f"{root}: no {RELEASE} kept with the bundle") from exc
            release = None
        if release is not None and release.bundle_id != bundle_id:
            raise UpdateError(f"{root}: {RELEASE} names another bundle")
        if keys is not None:
            # A bundle stored before a verify key was configured must be signed too.
            assert release is not None
            verify_signature(release, list(keys), str(root))
        floor = self._floor()
        if release is not None:
            # Re-assigned a release the store kept: a rollback too if it is older.
            check_sequence(release, floor, str(root))
            return bundle, release.sequence
        if floor is not None:
            raise RollbackError(
                f"{root}: rollback refused: bundle {bundle_id[:12]} has no {RELEASE}, so no "
                f"sequence, older than the committed release's {floor[0]}; to take it anyway "
                "set [update] allow_downgrade = true on this edge"
            )
        return bundle, 0

    def _floor(self) -> tuple[int, str] | None:
        """What a release must not be older than: the committed one's, unless downgrades go."""
        return None if self.config.allow_downgrade else self.committed_sequence

    def _stage(self, bundle: Bundle, version: str, input_spec: Any, sequence: int = 0) -> None:
        """Load a checked bundle's sessions and policy; the next tick switches to it."""
        if bundle.manifest.model.input != input_spec:
            raise UpdateError(
                f"bundle {bundle.id[:12]} takes input {bundle.manifest.model.input}, this edge "
                f"feeds {input_spec}"
            )
        runner = self._make_runner(bundle)
        runner.warm(bundle.manifest.cuts)
        policy = self._make_policy(bundle)
        with self._lock:
            self._staged = _Staged(bundle, version or bundle.id[:12], runner, policy, sequence)

    def _fetch_chunks(self, bundle_id: str, archive: Path, size: int, chunk: object) -> None:
        """Download the archive in chunks over ZeroMQ, several asked for ahead.

        ``_WINDOW_CHUNKS`` are in flight ahead of the one being written: on a long
        round trip one at a time would idle the link between chunks.
        """
        if self._client_factory is None:
            raise _Retryable("no cloud connection to download over and no URL in the offer")
        step = chunk if isinstance(chunk, int) and 0 < chunk <= 4 * 1024 * 1024 else 256 * 1024
        client = self._client_factory()
        ahead: deque[tuple[int, int, Pending | None]] = deque()
        offset = 0
        pace = self._pacer()
        if self.config.download_bps is not None:
            ahead_most = 1  # paced: one chunk at a time keeps the rate even
        else:
            ahead_most = _WINDOW_CHUNKS
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

    def _pacer(self) -> Callable[[int], None]:
        """A function to call after each block: sleeps to hold ``download_bps``."""
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
            raise _Retryable(
                f"cannot reach the cloud to download within {self.config.fetch_timeout_s:g} s"
            )

    def _fetch_meta(self, bundle_id: str, offset: int, length: int) -> dict[str, Any]:
        """A ``fetch``'s meta; the name is the hello's, so the cloud knows it offered this edge."""
        return {"bundle": bundle_id, "offset": offset, "length": length, "name": self.config.name}

    def _ask(self, client: CloudClient, bundle_id: str, offset: int, length: int) -> Pending | None:
        try:
            return client.send("fetch", None, meta=self._fetch_meta(bundle_id, offset, length))
        except TransportError:
            return None

    def _take(
        self, client: CloudClient, pending: Pending, offset: int, length: int
    ) -> bytes | None:
        """A chunk asked for ahead, or ``None`` when it was lost, late or wrong."""
        try:
            reply = client.wait(pending, pending.sent_at + self.config.fetch_timeout_s)
            return None if reply is None else _chunk(reply, offset, length)
        except (WireError, _Retryable):
            return None

    def _fetch_one(self, client: CloudClient, bundle_id: str, offset: int, length: int) -> bytes:
        problem = ""
        for _ in range(3):
            try:
                reply, _ = client.request(
                    "fetch",
                    None,
                    meta=self._fetch_meta(bundle_id, offset, length),
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
        raise _Retryable(f"chunk offset={offset} of {bundle_id[:12]} failed 3 times: {problem}")

    def _fetch_url(self, url: str, archive: Path, size: int) -> None:
        if not url.startswith(("http://", "https://")):
            raise UpdateError(f"offer URL {url[:80]!r}: expected http:// or https://")
        try:
            with urllib.request.urlopen(url, timeout=self.config.fetch_timeout_s) as response:
                with archive.open("wb") as fh:
                    copied = 0
                    pace = self._pacer()
                    while block := response.read(256 * 1024):
                        copied += len(block)
                        if copied > size:
                            raise _Retryable(f"{url}: longer than the offer's {size} bytes")
                        fh.write(block)
                        pace(len(block))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise _Retryable(f"download {url}: {exc}") from exc

    # -- switch, probation, rollback ---------------------------------------------------------

    def _switch(self, node: Any, staged: _Staged) -> None:
        old_bundle, old_runner, _ = node.switch(staged.bundle, staged.runner, staged.policy)
        node.spare = (old_bundle, old_runner)
        self._old_health, self.health = self.health, Health()
        self._old_version, self.version = self.version, staged.version
        self._switched_at = self._clock()
        self._sequence = staged.sequence
        self.state = "probation"
        self.note = f"on probation from {old_bundle.id[:12]}"
        self._gauge(node, old_bundle.id, self._old_version, staged.bundle.id, staged.version)
        self._event(node, "switched", f"{old_bundle.id[:12]} -> {staged.bundle.id[:12]}")

    def _probation(self, node: Any) -> None:
        assert self._switched_at is not None
        final = self._clock() - self._switched_at >= self.config.probation_s
        verdict = judge(self._old_health, self.health, self.config, final)
        if verdict is None:
            return
        if verdict.regressed:
            self._rollback(node, verdict.reason)
        else:
            self._commit(node, verdict.reason)

    def _rollback(self, node: Any, reason: str) -> None:
        assert node.spare is not None
        bad, bad_version = node.bundle, self.version
        bundle, runner = node.spare
        node.switch(bundle, runner, self._make_policy(bundle))
        node.spare = None
        self.version, self._old_version = self._old_version, ""
        self.health, self._old_health = self._old_health, Health()
        self._switched_at = None
        self._sequence = 0
        self._gauge(node, bad.id, bad_version, bundle.id, self.version)
        self.state, self.candidate, self.note = "rolled_back", bad.id, f"rolled back: {reason}"
        self._event(node, "rolled_back", f"{bad.id[:12]}: {reason}")
        self._remember_refused(bad.id)
        self._discard(bad.id)

    def _commit(self, node: Any, figures: str) -> None:
        node.spare = None
        self._switched_at = None
        self._old_health = Health()
        _write_atomic(
            self.config.state_dir / CURRENT,
            json.dumps(
                {
                    "bundle": node.bundle.id,
                    "version": self.version,
                    "base": self.config.base,
                    "path": str(node.bundle.root),
                }
            ),
        )
        if self._sequence:
            # The configured bundle (sequence 0) leaves the mark as it was: going back to
            # it is the operator's choice, not a release's.
            self.committed_sequence = (self._sequence, node.bundle.id)
            _write_atomic(
                self.config.state_dir / SEQUENCE,
                json.dumps(
                    {"sequence": self._sequence, "bundle": node.bundle.id, "version": self.version}
                ),
            )
        self.state, self.candidate, self.note = "serving", "", f"committed: {figures}"
        self._event(node, "committed", f"{node.bundle.id[:12]} ({figures})")
        self._prune(node.bundle.id)

    def _refuse(self, node: Any, bundle_id: str, message: str, permanent: bool) -> None:
        attempts = self._attempts.get(bundle_id, 0) + 1
        self._attempts[bundle_id] = attempts
        if not permanent and attempts < _DOWNLOAD_ATTEMPTS:
            # A transfer gone wrong: the next heartbeat's offer is taken again.
            self.state, self.candidate = "retrying", bundle_id
            self.note = f"attempt {attempts} of {_DOWNLOAD_ATTEMPTS} failed: {message}"
            self._event(node, "retrying", f"{bundle_id[:12]}: {message}")
            return
        self.state, self.candidate, self.note = "refused", bundle_id, message
        self._event(node, "refused", f"{bundle_id[:12]}: {message}")
        self._remember_refused(bundle_id, persist=bundle_id not in self._older)
        if bundle_id != node.bundle.id and (node.spare is None or node.spare[0].id != bundle_id):
            self._discard(bundle_id)

    def _discard(self, bundle_id: str) -> None:
        """Delete a refused bundle from the store (never anything outside it)."""
        kept = self.config.state_dir / "bundles" / bundle_id
        if is_bundle_id(bundle_id) and kept.is_dir():
            shutil.rmtree(kept, ignore_errors=True)

    def _remember_refused(self, bundle_id: str, persist: bool = True) -> None:
        self.refused.add(bundle_id)
        if persist:
            kept = self.refused - self._older
            _write_atomic(self.config.state_dir / REFUSED, json.dumps(sorted(kept)))

    def _prune(self, current: str) -> None:
        store = self.config.state_dir / "bundles"
        if not store.is_dir():
            return
        kept = sorted(
            (p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in [p for p in kept if p.name != current][max(0, self.config.keep - 1) :]:
            shutil.rmtree(old, ignore_errors=True)

    def _gauge(self, node: Any, old: str, old_version: str, new: str, version: str) -> None:
        gauge = node.metrics.bundle_info
        gauge.labels(old[:12], old_version).set(0)
        gauge.labels(new[:12], version).set(1)

    def _event(self, node: Any, result: str, detail: str) -> None:
        node.metrics.updates.labels(result).inc()
        self.events.append((result, detail))
        level = logging.WARNING if result in ("refused", "rolled_back") else logging.INFO
        log.log(level, "update %s %s", result, detail)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait for a download in progress to finish (tests and shutdown)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout_s)
            return not worker.is_alive()
        return True


class _Retryable(UpdateError):
    """A download that may succeed if tried again (the offer stays takeable)."""


def committed_bundle(state_dir: Path, base: str | None = None) -> tuple[Bundle, str] | None:
    """The bundle an update committed in ``state_dir`` and its version, if it loads.

    With ``base``, only if that update was taken over the bundle of id ``base``
    (the edge is still configured as it was then).
    """
    path = state_dir / CURRENT
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds no JSON object")
        if base is not None and data.get("base") != base:
            log.info("%s: committed over another configured bundle; serving the configured", path)
            return None
        where = Path(data.get("path") or state_dir / "bundles" / data["bundle"])
        bundle = load_bundle(where, verify="edge")
    except (OSError, ValueError, KeyError, TypeError, EdgesplitError) as exc:
        log.warning("committed bundle in %s does not load, using the configured one: %s", path, exc)
        return None
    if bundle.id != data["bundle"]:
        return None
    return bundle, str(data.get("version", ""))


def read_sequence(state_dir: Path) -> tuple[int, str] | None:
    """``(sequence, bundle id)`` of the release committed last in ``state_dir``, if any.

    A file that does not read is logged and taken as none: the edge must not stop
    serving over it (a release is then judged as on a fresh edge).
    """
    path = state_dir / SEQUENCE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s does not read, no committed sequence: %s", path, exc)
        return None
    sequence = data.get("sequence") if isinstance(data, dict) else None
    bundle = data.get("bundle") if isinstance(data, dict) else None
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        log.warning("%s holds no sequence, none committed: %r", path, data)
        return None
    return sequence, bundle if isinstance(bundle, str) else ""


def _chunk(reply: Reply, offset: int, length: int) -> bytes:
    """The bytes of a ``chunk`` reply to a fetch of ``length`` bytes at ``offset``.

    Raises:
        _Retryable: the cloud refused, or sent a chunk of another size or type.
    """
    data = reply.arrays.get("data")
    if reply.message.kind != "chunk" or data is None:
        raise _Retryable(
            f"the cloud refused chunk offset={offset}: {reply.message.meta.get('message')}"
        )
    if data.dtype != np.uint8 or data.ndim != 1 or data.size != length:
        raise _Retryable(f"chunk offset={offset} has {data.size} bytes, asked {length}")
    return data.tobytes()


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _downloadable(offer: dict[str, Any]) -> bool:
    """Whether an offer says where and what to download: a sha256 and a size."""
    sha, size = offer.get("sha256"), offer.get("size")
    return (
        isinstance(sha, str)
        and is_bundle_id(sha)
        and isinstance(size, int)
        and not isinstance(size, bool)
        and size > 0
    )


def _clean_leftovers(state_dir: Path, base_root: Path | None = None) -> None:
    """Partial downloads and half-unpacked stagings of a run that was stopped.

    Also what an edge never needs in its store: a bundle taken before releases for
    edges existed holds its tails too (``cloud/``); only the edge's part is kept.
    """
    for partial in (state_dir / "downloads").glob("*.tar"):
        partial.unlink(missing_ok=True)
    store = state_dir / "bundles"
    for staging in store.glob(".staging-*"):
        shutil.rmtree(staging, ignore_errors=True)
    for kept in store.glob("*"):
        if not is_bundle_id(kept.name) or not kept.is_dir() or kept == base_root:
            continue
        if edge_only(kept):
            continue
        for extra in kept.iterdir():
            if extra.name in EDGE_NAMES:
                continue
            if extra.is_dir() and not extra.is_symlink():
                shutil.rmtree(extra, ignore_errors=True)
            else:
                extra.unlink(missing_ok=True)


def _read_refused(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return {x for x in data if isinstance(x, str)} if isinstance(data, list) else set()


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


__all__ = [
    "Health",
    "UpdateConfig",
    "Updater",
    "Verdict",
    "committed_bundle",
    "judge",
    "read_sequence",
]
