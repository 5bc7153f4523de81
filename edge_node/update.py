"""Over-the-air bundle updates on the edge: the state machine that takes a release.

Between two requests the node ticks the :class:`Updater`
(:mod:`edge_node.switch`). At most every ``interval_s`` it says ``hello``
(:mod:`edge_node.heartbeat`) with the edge's bundle, version, update state and
health; the cloud's ``welcome`` names the bundle the edge should run. When that
is another bundle, the updater:

1. downloads its release on a background thread (:mod:`edge_node.download`),
   checks it and unpacks it into the store (:mod:`edge_node.bundle_store`:
   signature, sequence, edge part only, every file's hash), and loads its head
   sessions there;
2. asks the node to switch between two requests: requests already started
   finish on the old bundle, the next runs on the new, the old kept loaded;
3. judges the new bundle on probation (:mod:`edge_node.probation`): a
   regression asks the node to switch back at once (the release is never taken
   again); ``probation_s`` without one commits it, and a restart serves it.

Nothing here blocks a request for long, and every time is the node's clock's.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path

import wire
from edge_node.bundle_store import BundleStore, committed_bundle, read_sequence
from edge_node.config import UpdateConfig
from edge_node.download import Downloader, Offer
from edge_node.head import HeadRunner
from edge_node.heartbeat import Heartbeat
from edge_node.metrics import EdgeMetrics
from edge_node.probation import Health, Verdict, judge
from edge_node.records import Outcome
from edge_node.staging import Failure, Staged, take
from edge_node.switch import DropSpare, SwitchBack, SwitchRequest, SwitchTo
from edge_node.transport import CloudClient
from edgesplit.bundle import Bundle, TensorSpec
from edgesplit.release import is_bundle_id
from offload_policy import Policy

log = logging.getLogger(__name__)

_DOWNLOAD_ATTEMPTS = 3


class Updater:
    """Takes the bundle the cloud assigns, safely; an edge node's :class:`BundleUpdates`.

    Args:
        config: see :class:`~edge_node.config.UpdateConfig`.
        version: the release version of the bundle serving at start.
        client_factory: a new :class:`CloudClient` to the same cloud (for downloads,
            on their own socket); ``None`` (no cloud): URLs only.
        make_runner: head sessions for a staged bundle (same providers as the node's).
        make_policy: the policy for a staged bundle (raises ConfigError if the edge's
            configuration cannot serve it, e.g. a fixed cut it lacks).
        client: the node's own client, for the heartbeats (between requests, on the
            node's thread); ``None``: no heartbeats.
        metrics: where update events and the bundle-info gauge are counted: give the
            node's, so that one registry exports both.

    Attributes:
        state: ``serving``, ``downloading``, ``probation``, ``retrying``, ``refused`` or
            ``rolled_back``, as the heartbeat reports it.
        note: the latest update note, as the heartbeat reports it.
        candidate: the bundle being taken (or refused last).
        events: ``(result, detail)`` of every update event, in order.
    """

    def __init__(
        self,
        config: UpdateConfig,
        version: str,
        client_factory: Callable[[], CloudClient] | None,
        make_runner: Callable[[Bundle], HeadRunner],
        make_policy: Callable[[Bundle], Policy],
        *,
        client: CloudClient | None = None,
        metrics: EdgeMetrics | None = None,
    ) -> None:
        self.config = config
        self.version = version
        self.store = BundleStore(config)
        self.downloader = Downloader(config, client_factory)
        self.metrics = metrics or EdgeMetrics()
        self._heartbeats = (
            None
            if client is None
            else Heartbeat(client, config.interval_s, timeout_s=config.fetch_timeout_s)
        )
        self._make_runner = make_runner
        self._make_policy = make_policy
        self.state = "serving"
        self.note = ""
        self.candidate = ""
        self.health = Health()
        self.events: list[tuple[str, str]] = []
        self._old_health = Health()
        self._old_version = ""
        self._announced = False  # the bundle-info gauge, set at the first tick
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._staged: Staged | None = None  # set by the worker
        self._failure: Failure | None = None  # set by the worker
        self._attempts: dict[str, int] = {}
        # What the node holds, as its latest tick said.
        self._serving: Bundle | None = None
        self._spare: Bundle | None = None
        # The switch asked for and not yet carried out, and what it finishes.
        self._request: SwitchRequest | None = None
        self._next: Staged | None = None
        self._verdict: Verdict | None = None
        self._probation_since: float | None = None
        self._sequence = 0  # of the bundle on probation

    @property
    def refused(self) -> set[str]:
        """Bundle ids refused (never taken again while this edge runs)."""
        return self.store.refused

    @property
    def committed_sequence(self) -> tuple[int, str] | None:
        """``(sequence, bundle id)`` of the release committed last; ``None``: none with one."""
        return self.store.committed_sequence

    # -- what the node reports and asks (edge_node.switch.BundleUpdates) ----------------------

    def record(self, outcome: Outcome) -> None:
        """Count an outcome against the bundle that answered it."""
        on_old = (
            self._probation_since is not None
            and outcome.bundle != self.candidate
            and outcome.reason != "head_failed"  # the new bundle failed; the old one answered
        )
        (self._old_health if on_old else self.health).add(outcome)

    def tick(self, now: float, serving: Bundle, spare: Bundle | None) -> None:
        """Heartbeat, take finished downloads, judge probation; between two requests.

        Never raises: an update that cannot go on (a full disk, say) is logged and
        counted, and the request that called this is served all the same.
        """
        self._serving, self._spare = serving, spare
        self._guarded(lambda: self._tick(now, serving))

    def next_switch(self) -> SwitchRequest | None:
        """The switch to carry out before the next request; the same until :meth:`switched`."""
        return self._request

    def switched(self, request: SwitchRequest, now: float) -> None:
        """The node carried out ``request`` at ``now``: probation starts, or ends."""
        if request is not self._request:
            log.warning("update switch not asked for ignored request=%s", type(request).__name__)
            return
        self._request = None
        self._guarded(lambda: self._switched(request, now))

    def declined(self, request: SwitchRequest, reason: str) -> None:
        """The node cannot carry out ``request``: drop it, and serve on what the node serves."""
        if request is not self._request:
            log.warning(
                "update decline of a switch not asked for ignored request=%s",
                type(request).__name__,
            )
            return
        self._request = None
        self._guarded(lambda: self._declined(request, reason))

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait for a download in progress to finish (tests and shutdown)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout_s)
            return not worker.is_alive()
        return True

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the request must be served regardless
            log.exception("update step failed; serving on error=%s", exc)
            self.note = f"update step failed: {type(exc).__name__}: {exc}"[:300]
            self.metrics.updates.labels("error").inc()

    def _tick(self, now: float, serving: Bundle) -> None:
        self._heartbeat(now, serving)
        with self._lock:
            failure, self._failure = self._failure, None
            # A bundle staged while a switch is still asked for waits for the next tick.
            staged = None
            if self._request is None:
                staged, self._staged = self._staged, None
        if failure is not None:
            self._refuse(failure)
        if self._request is not None:
            return
        if staged is not None:
            self._next = staged
            self._request = SwitchTo(staged.bundle, staged.runner, staged.policy)
        elif self._probation_since is not None:
            self._probation(now)

    # -- heartbeat ---------------------------------------------------------------------------

    def _heartbeat(self, now: float, serving: Bundle) -> None:
        if not self._announced:
            self._announced = True
            self.metrics.bundle_info.labels(serving.id[:12], self.version).set(1)
        if self._heartbeats is None:
            return
        reply = self._heartbeats.collect(now)
        if reply is not None:
            self._welcome(reply.message)
        self._heartbeats.send_due(now, lambda request_id: self.status(serving, request_id))

    def status(self, serving: Bundle, request_id: int = 0) -> wire.Hello:
        """What the heartbeat tells the cloud, serving ``serving``."""
        h = self.health
        return wire.Hello(
            request_id,
            name=self.config.name,
            bundle=serving.id,
            version=self.version,
            state=self.state,
            requests=h.window,
            errors=sum(h.failed),
            p50_ms=_finite(h.percentile_ms(50)),
            p95_ms=_finite(h.percentile_ms(95)),
            candidate=self.candidate,
            note=self.note[:300],
        )

    def _welcome(self, welcome: wire.AnyMessage) -> None:
        serving = self._serving
        assert serving is not None, "a welcome before the first tick"
        if not isinstance(welcome, wire.Welcome):
            text = welcome.message if isinstance(welcome, wire.Busy | wire.ErrorReply) else ""
            log.warning("the cloud does not take heartbeats (%s): %s", welcome.kind, text)
            return
        assigned = welcome.assigned
        if not assigned or assigned == serving.id:
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
        if self._spare is not None and self._spare.id == assigned:
            return
        offer = Offer.from_welcome(welcome)
        if self.store.local(assigned) is None and not offer.downloadable:
            # The stable bundle after a promotion, say: nothing to download it from. Not a
            # refusal: a later offer (or a redeployment) may bring it.
            note = f"assigned bundle {assigned[:12]} is not on this edge and not offered"
            if self.note != note:
                self.note = note
                log.warning("update %s", note)
            return
        self._start_download(offer, serving.manifest.model.inputs)

    # -- download, verify, stage (background thread) -----------------------------------------

    def _start_download(self, offer: Offer, input_spec: tuple[TensorSpec, ...]) -> None:
        self.state, self.candidate = "downloading", offer.bundle_id
        self.note = f"version {offer.version}"
        self._event("offered", f"{offer.bundle_id[:12]} ({offer.version})")
        self._worker = threading.Thread(
            target=self._download_and_stage,
            args=(offer, input_spec),
            name="edgesplit-update",
            daemon=True,
        )
        self._worker.start()

    def _download_and_stage(self, offer: Offer, input_spec: tuple[TensorSpec, ...]) -> None:
        outcome = take(
            offer, input_spec, self.store, self.downloader, self._make_runner, self._make_policy
        )
        with self._lock:
            if isinstance(outcome, Staged):
                self._staged = outcome
            else:
                self._failure = outcome

    def _reuse(self, root: Path, bundle_id: str) -> tuple[Bundle, int]:
        """A bundle already on this edge, checked again (see :meth:`BundleStore.reuse`)."""
        return self.store.reuse(root, bundle_id)

    # -- switch, probation, rollback, commit ------------------------------------------------

    def _switched(self, request: SwitchRequest, now: float) -> None:
        if isinstance(request, SwitchTo):
            self._on_probation(request, now)
        elif isinstance(request, SwitchBack):
            self._rolled_back(request)
        else:
            self._committed()

    def _declined(self, request: SwitchRequest, reason: str) -> None:
        if isinstance(request, SwitchTo):
            # The node serves on the bundle it had: the staged one is not taken.
            staged, self._next = self._next, None
            bundle_id = request.bundle.id if staged is None else staged.bundle.id
            message = f"the node declined the switch: {reason}"
            self._refuse(Failure(bundle_id, message, permanent=True))
        elif isinstance(request, SwitchBack):
            self._rollback_declined(reason)
        else:
            # Healthy, committed; the node keeps the spare loaded (its own to let go).
            log.warning("update node kept its spare: %s", reason)
            self._committed()

    def _rollback_declined(self, reason: str) -> None:
        """A switch back the node cannot do: the bundle on probation serves on, refused.

        It is not committed (a restart serves the committed bundle) and never taken
        again; probation ends, so it is judged (and logged) once.
        """
        bad = self._serving
        assert bad is not None and self._verdict is not None
        why = self._verdict.reason
        self._probation_since = None
        self._verdict = None
        self._sequence = 0
        self._old_health, self._old_version = Health(), ""
        self.state, self.candidate = "refused", bad.id
        self.note = f"regressed ({why}) but could not roll back: {reason}; serving it"[:300]
        self._event("refused", f"{bad.id[:12]}: {self.note}")
        self.store.refuse(bad.id)

    def _on_probation(self, request: SwitchTo, now: float) -> None:
        staged, self._next = self._next, None
        old = self._serving
        assert staged is not None and old is not None
        self._old_health, self.health = self.health, Health()
        self._old_version, self.version = self.version, staged.version
        self._probation_since = now
        self._sequence = staged.sequence
        self._serving, self._spare = request.bundle, old
        self.state = "probation"
        self.note = f"on probation from {old.id[:12]}"
        self._gauge(old.id, self._old_version, request.bundle.id, staged.version)
        self._event("switched", f"{old.id[:12]} -> {request.bundle.id[:12]}")

    def _probation(self, now: float) -> None:
        assert self._probation_since is not None
        final = now - self._probation_since >= self.config.probation_s
        verdict = judge(self._old_health, self.health, self.config, final)
        if verdict is None:
            return
        self._verdict = verdict
        if verdict.regressed:
            spare = self._spare
            if spare is None:
                # Judged once: probation ends with the bundle serving, refused.
                self._rollback_declined("the node keeps no bundle to go back to")
                return
            self._request = SwitchBack(spare, self._make_policy(spare))
        else:
            self._request = DropSpare()

    def _rolled_back(self, request: SwitchBack) -> None:
        bad, bad_version = self._serving, self.version
        assert bad is not None and self._verdict is not None
        reason = self._verdict.reason
        self._serving, self._spare = request.bundle, None
        self.version, self._old_version = self._old_version, ""
        self.health, self._old_health = self._old_health, Health()
        self._probation_since = None
        self._sequence = 0
        self._gauge(bad.id, bad_version, request.bundle.id, self.version)
        self.state, self.candidate, self.note = "rolled_back", bad.id, f"rolled back: {reason}"
        self._event("rolled_back", f"{bad.id[:12]}: {reason}")
        self.store.refuse(bad.id)
        self.store.discard(bad.id)

    def _committed(self) -> None:
        serving = self._serving
        assert serving is not None and self._verdict is not None
        figures = self._verdict.reason
        self._spare = None
        self._probation_since = None
        self._old_health = Health()
        self.store.commit(serving, self.version, self._sequence)
        self.state, self.candidate, self.note = "serving", "", f"committed: {figures}"
        self._event("committed", f"{serving.id[:12]} ({figures})")

    def _refuse(self, failure: Failure) -> None:
        bundle_id, message = failure.bundle_id, failure.message
        attempts = self._attempts.get(bundle_id, 0) + 1
        self._attempts[bundle_id] = attempts
        if not failure.permanent and attempts < _DOWNLOAD_ATTEMPTS:
            # A transfer gone wrong: the next heartbeat's offer is taken again.
            self.state, self.candidate = "retrying", bundle_id
            self.note = f"attempt {attempts} of {_DOWNLOAD_ATTEMPTS} failed: {message}"
            self._event("retrying", f"{bundle_id[:12]}: {message}")
            return
        self.state, self.candidate, self.note = "refused", bundle_id, message
        self._event("refused", f"{bundle_id[:12]}: {message}")
        self.store.refuse(bundle_id, rollback=failure.rollback)
        held = {b.id for b in (self._serving, self._spare) if b is not None}
        if bundle_id not in held:
            self.store.discard(bundle_id)

    def _gauge(self, old: str, old_version: str, new: str, version: str) -> None:
        gauge = self.metrics.bundle_info
        gauge.labels(old[:12], old_version).set(0)
        gauge.labels(new[:12], version).set(1)

    def _event(self, result: str, detail: str) -> None:
        self.metrics.updates.labels(result).inc()
        self.events.append((result, detail))
        level = logging.WARNING if result in ("refused", "rolled_back") else logging.INFO
        log.log(level, "update %s %s", result, detail)


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
