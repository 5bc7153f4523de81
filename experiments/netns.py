"""Network namespaces for shaped links: add, delete, and clean up those of killed runs.

Each :class:`~experiments.shaped_link.ShapedLink` makes two namespaces named
``<prefix>edge-<pid>-<hex4>`` and ``<prefix>cloud-<pid>-<hex4>``; the pid
lets :func:`cleanup_stale` tell a namespace whose owner was killed from one
in use. Needs root and iproute2 (``ip``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence

from edgesplit.errors import ConfigError, EdgesplitError

log = logging.getLogger(__name__)

#: Namespace names start with this; :func:`cleanup_stale` matches on it.
NS_PREFIX = "es-"
#: Longest an ``ip``/``tc`` command may take, seconds.
CMD_TIMEOUT_S = 10.0


class LinkError(EdgesplitError):
    """A namespace, veth or qdisc command failed, or a process in a namespace did."""


def run_command(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one ``ip``/``tc`` command; LinkError with its stderr when it fails and ``check``."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=CMD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LinkError(f"`{' '.join(argv)}` could not run: {exc}") from exc
    if check and done.returncode != 0:
        reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise LinkError(f"`{' '.join(argv)}` failed: {reason}")
    return done


def list_namespaces() -> list[str]:
    """Names from ``ip netns list`` (lines look like ``name (id: 3)``)."""
    out = run_command(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_namespace(name: str) -> None:
    """Kill what still runs in namespace ``name``, then delete it (gone already is fine)."""
    pids = run_command(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    done = run_command(["ip", "netns", "del", name], check=False)
    if done.returncode != 0 and name in list_namespaces():
        raise LinkError(f"`ip netns del {name}` failed: {' '.join(done.stderr.split())}")


def add_namespace(name: str, created: list[str]) -> bool:
    """Add namespace ``name`` and note it in ``created``; False when the name is taken."""
    done = run_command(["ip", "netns", "add", name], check=False)
    if done.returncode == 0:
        created.append(name)
        return True
    if "File exists" in done.stderr:
        return False
    raise LinkError(f"`ip netns add {name}` failed: {' '.join(done.stderr.split())}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(
    prefix: str = NS_PREFIX, older_than_s: float | None = None, *, everything: bool = False
) -> list[str]:
    """Delete namespaces left by killed runs; returns the names deleted.

    A namespace named ``<prefix>...-<pid>-<hex4>`` (as :class:`ShapedLink`
    names them) goes when process ``pid`` no longer runs; any namespace with
    the prefix goes when older than ``older_than_s`` (the age of its
    ``/run/netns`` entry), or when ``everything``. Processes inside are killed.
    """
    if not prefix:
        raise ConfigError("cleanup_stale prefix='': expected a non-empty prefix")
    deleted = []
    now = time.time()
    for name in list_namespaces():
        if not name.startswith(prefix):
            continue
        parts = name.rsplit("-", 2)
        owner_gone = len(parts) == 3 and parts[1].isdigit() and not _process_alive(int(parts[1]))
        try:
            age_s = now - os.stat(f"/run/netns/{name}").st_mtime
        except OSError:
            age_s = 0.0
        too_old = older_than_s is not None and age_s > older_than_s
        if everything or owner_gone or too_old:
            delete_namespace(name)
            deleted.append(name)
            log.info("netlink_stale_deleted ns=%s age_s=%.0f", name, age_s)
    return deleted


__all__ = [
    "CMD_TIMEOUT_S",
    "NS_PREFIX",
    "LinkError",
    "add_namespace",
    "cleanup_stale",
    "delete_namespace",
    "list_namespaces",
    "run_command",
]
