"""Ask a cloud node for its fleet view, as an admin: every page, one connection.

The cloud answers a ``FleetQuery`` with one page of edges (by name) and the
cursor of the next; :func:`fleet_report` asks page by page until the last and
returns the whole view (the JSON document the cloud's fleet view writes, with
every edge), after a rollout change to ``fraction`` if one is given.
"""

from __future__ import annotations

import json
from typing import Any

import wire
from edge_node.transport import CloudClient
from edgesplit.errors import TransportError


def fleet_report(
    client: CloudClient, timeout_s: float, fraction: float | None = None
) -> dict[str, Any]:
    """The fleet view with every edge (``fraction``: first set the rollout's share).

    Raises:
        TransportError: no answer within ``timeout_s``, a refusal (a key not in the
            cloud's fleet admins), or pages that do not advance.
    """
    op = "status" if fraction is None else "rollout"
    report = _page(client, wire.FleetQuery(client.new_id(), op, fraction), timeout_s)
    edges = report["edges"]
    while report.get("next") is not None:
        cursor = report["next"]
        report = _page(client, wire.FleetQuery(client.new_id(), "status", after=cursor), timeout_s)
        if report.get("next") is not None and report["next"] <= cursor:
            raise TransportError(f"{client.endpoint}: the fleet view's pages do not advance")
        edges += report["edges"]
    report["edges"] = edges
    report.pop("next", None)
    return report


def _page(client: CloudClient, query: wire.FleetQuery, timeout_s: float) -> dict[str, Any]:
    """One ``fleet`` request and its ``report`` (one page of the fleet view)."""
    reply, _ = client.call(query, timeout_s=timeout_s)
    if reply is None:
        raise TransportError(f"{client.endpoint}: no answer within {timeout_s:g} s")
    message = reply.message
    if isinstance(message, (wire.ErrorReply, wire.Busy)):
        raise TransportError(f"{client.endpoint} refused: {message.code}: {message.message}")
    if not isinstance(message, wire.FleetReport):
        raise TransportError(f"{client.endpoint}: answered {message.kind}, not a fleet report")
    report: dict[str, Any] = json.loads(message.json)
    return report
