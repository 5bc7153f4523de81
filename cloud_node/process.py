"""Start an ``edgesplit cloud`` node in a process of its own, and stop one.

Tests, benchmarks and experiments run real cloud nodes this way: the node writes
its bound endpoint to a file when it is ready, and its log goes to a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from edgesplit.errors import TransportError


def start_cloud_process(
    bundle: Path,
    bind: str,
    log_path: Path,
    ready_timeout_s: float = 60.0,
    extra: Sequence[str] = (),
) -> tuple[subprocess.Popen, str]:
    """Start ``edgesplit cloud`` in its own process; return it and its bound endpoint.

    Its log goes to ``log_path`` (a file, so a chatty node never blocks on a pipe).
    """
    fd, ready = tempfile.mkstemp(prefix="edgesplit-cloud-", suffix=".endpoint")
    os.close(fd)
    os.unlink(ready)
    cmd = [
        sys.executable,
        "-m",
        "edgesplit",
        "cloud",
        "--bundle",
        str(bundle),
        "--bind",
        bind,
        "--ready-file",
        ready,
        *extra,
    ]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + ready_timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                lines = Path(log_path).read_text(errors="replace").strip().splitlines()
                raise TransportError(
                    f"cloud node exited with code {proc.returncode}: "
                    f"{lines[-1] if lines else 'no message'} (log: {log_path})"
                )
            if os.path.exists(ready) and os.path.getsize(ready) > 0:
                with open(ready, encoding="utf-8") as fh:
                    return proc, fh.read().strip()
            time.sleep(0.05)
        stop_process(proc)
        raise TransportError(f"cloud node did not become ready within {ready_timeout_s:g} s")
    finally:
        if os.path.exists(ready):
            os.unlink(ready)


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout_s``; return the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
