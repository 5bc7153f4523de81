"""``python -m experiments.netlink``: the shaped links' command line.

``relay`` runs a :class:`~experiments.relay.DelayRelay` until SIGTERM (a
:class:`~experiments.shaped_link.ShapedLink` starts one inside its cloud
namespace this way); ``cleanup`` deletes the namespaces killed runs left
(:func:`~experiments.netns.cleanup_stale`).

The link itself lives in three modules: :mod:`experiments.shaped_link`
(namespaces + veth + tbf), :mod:`experiments.relay` (the user-space relay)
and :mod:`experiments.trace_replay` (a trace played live on a link).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from edgesplit.errors import EdgesplitError
from experiments.netns import NS_PREFIX, cleanup_stale
from experiments.relay import DelayRelay
from experiments.shaped_link import DEFAULT_RELAY_QUEUE_BYTES


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """``relay``: run a DelayRelay until SIGTERM; ``cleanup``: delete stale namespaces."""
    parser = argparse.ArgumentParser(prog="python -m experiments.netlink")
    commands = parser.add_subparsers(dest="command", required=True)
    relay = commands.add_parser("relay", help="delay a TCP service by a fixed time each way")
    relay.add_argument("--listen", type=_address, required=True, help="HOST:PORT (port 0: any)")
    relay.add_argument("--to", type=_address, required=True, help="HOST:PORT to forward to")
    relay.add_argument("--delay-ms", type=float, required=True, help="one-way delay, ms")
    relay.add_argument("--queue-bytes", type=int, default=DEFAULT_RELAY_QUEUE_BYTES)
    cleanup = commands.add_parser("cleanup", help="delete namespaces left by killed runs")
    cleanup.add_argument("--prefix", default=NS_PREFIX)
    cleanup.add_argument("--older-than-s", type=float, default=None)
    cleanup.add_argument("--all", action="store_true", help="every namespace with the prefix")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "cleanup":
            for name in cleanup_stale(args.prefix, args.older_than_s, everything=args.all):
                sys.stdout.write(f"deleted {name}\n")
            return 0
        server = DelayRelay(args.listen, args.to, args.delay_ms / 1e3, queue_bytes=args.queue_bytes)
    except (EdgesplitError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    host, port = server.address
    sys.stdout.write(f"listening {host}:{port}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
