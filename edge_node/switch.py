"""How the edge node and its updater talk: events in, a switch request out.

The node drives; the updater never sees it. Between two requests the node
reports a tick (its clock's ``now`` and the bundles it holds), then asks for at
most one :data:`SwitchRequest`, carries it out and says so
(:meth:`BundleUpdates.switched`); after each request it reports the outcome
(:meth:`BundleUpdates.record`). The updater builds what a switch needs (head
sessions, a policy) off the request path, so carrying one out is a few
assignments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edge_node.head import HeadRunner
from edge_node.records import Outcome
from edgesplit.bundle import Bundle
from offload_policy import Policy


@dataclass(frozen=True)
class SwitchTo:
    """Serve ``bundle`` from the next request on; keep the bundle serving now as the spare.

    The spare stays loaded while the new bundle is on probation: a request whose
    models fail on the new bundle is answered by it.
    """

    bundle: Bundle
    runner: HeadRunner
    policy: Policy


@dataclass(frozen=True)
class SwitchBack:
    """Serve the spare (``bundle``) again, with ``policy``; the bundle on probation goes."""

    bundle: Bundle
    policy: Policy


@dataclass(frozen=True)
class DropSpare:
    """The bundle on probation was committed: the spare can be let go."""


SwitchRequest = SwitchTo | SwitchBack | DropSpare
"""What the updater may ask of the node between two requests."""


class BundleUpdates(Protocol):
    """What the node reports to its updater, and asks of it (:class:`edge_node.update.Updater`).

    None of these raises: an update that cannot go on is the updater's to log and
    report; the request that called is served all the same.
    """

    def tick(self, now: float, serving: Bundle, spare: Bundle | None) -> None:
        """Between two requests: ``now`` on the node's clock, the bundle serving, the spare."""
        ...

    def next_switch(self) -> SwitchRequest | None:
        """The switch to carry out before the next request, if any (asked once a tick)."""
        ...

    def switched(self, request: SwitchRequest, now: float) -> None:
        """``request`` was carried out at ``now``: the next request runs on what it named."""
        ...

    def declined(self, request: SwitchRequest, reason: str) -> None:
        """The node cannot carry out ``request`` (``reason``) and serves on as before.

        The updater drops the request (it is not asked for again) and decides what
        follows: a switch back that cannot be done leaves the bundle serving in place.
        """
        ...

    def record(self, outcome: Outcome) -> None:
        """One request's outcome (which bundle answered, how, how long it took)."""
        ...


__all__ = ["BundleUpdates", "DropSpare", "Policy", "SwitchBack", "SwitchRequest", "SwitchTo"]
