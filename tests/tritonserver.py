"""A real Triton server for the tests: start it, wait until ready, always stop it.

The server is the ``tritonserver`` binary (Triton 2.51, python backend only)
that ``nvidia-pytriton`` ships. nvidia-pytriton needs numpy<2, so it lives in
its own venv, ``.venv-triton``, which ``make test`` creates; only the server
and its python-backend models run there, the tests talk to it over HTTP and
gRPC from the project's venv. The python backend's stub is linked against
``libpython3.X.so``: ``LD_LIBRARY_PATH`` points it at the venv interpreter's
own (Debian's older one breaks the standard library), and the venv's ``bin``
first on ``PATH`` makes the stub use the venv's packages.

Usage::

    with triton_server(repository, workdir) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRITON_VENV = ROOT / ".venv-triton"
_PORT_RETRIES = 3


class TritonUnavailable(RuntimeError):
    """The Triton venv is missing or broken: the tests cannot start a server."""


class TritonStartError(RuntimeError):
    """The server exited or did not become ready; the message ends with its log's tail."""

    def __init__(self, message: str, log: Path) -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class TritonInstall:
    """Where the server binary, the python backend and its stub lie."""

    venv: Path
    python_version: str
    libdir: Path
    dist: Path

    @property
    def server(self) -> Path:
        return self.dist / "bin" / "tritonserver"

    @property
    def stub(self) -> Path:
        return self.dist / "python_backend_stubs" / self.python_version / _STUB


_STUB = "triton_python_backend_stub"
_PROBE = """
import json, os, sys, sysconfig
import numpy, onnxruntime, pytriton
print(json.dumps({
    "version": f"{sys.version_info[0]}.{sys.version_info[1]}",
    "libdir": sysconfig.get_config_var("LIBDIR"),
    "dist": os.path.join(os.path.dirname(pytriton.__file__), "tritonserver"),
}))
"""


def find_triton(venv: Path = TRITON_VENV) -> TritonInstall:
    """The Triton server installed in ``venv``; a clear error if it is not there."""
    python = venv / "bin" / "python"
    hint = "run `make test` (or `make triton-venv`), which creates it with nvidia-pytriton"
    if not python.is_file():
        raise TritonUnavailable(f"{venv}: no Triton server venv; {hint}")
    probe = subprocess.run(
        [str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    if probe.returncode != 0:
        raise TritonUnavailable(f"{venv}: broken Triton venv ({probe.stderr.strip()}); {hint}")
    facts = json.loads(probe.stdout)
    install = TritonInstall(venv, facts["version"], Path(facts["libdir"]), Path(facts["dist"]))
    for path in (install.server, install.stub):
        if not path.is_file():
            raise TritonUnavailable(f"{path}: missing from the Triton venv; {hint}")
    return install


@dataclass(frozen=True)
class RunningTriton:
    """A server that answered ready: its addresses (``host:port``, as tritonclient wants)."""

    http_url: str
    grpc_url: str
    log: Path
    pid: int
    ready_s: float

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log, lines)


def server_command(
    install: TritonInstall,
    repository: Path,
    backends: Path,
    shm_prefix: str,
    *,
    http_port: int,
    grpc_port: int,
    grpc_address: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``tritonserver`` command line serving ``repository`` (HTTP on 127.0.0.1)."""
    return [
        str(install.server),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        "--http-address=127.0.0.1",
        f"--http-port={http_port}",
        f"--grpc-address={grpc_address}",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=false",
        "--exit-timeout-secs=10",
        *extra_args,
    ]


def launch(command: Sequence[str], install: TritonInstall, log: Path) -> subprocess.Popen:
    """Start ``command`` (a server command, maybe prefixed) in its own process group."""
    with log.open("wb") as out:
        return subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_environment(install),
            start_new_session=True,
        )


@contextmanager
def triton_server(
    repository: Path,
    workdir: Path,
    *,
    install: TritonInstall | None = None,
    timeout_s: float = 120.0,
    extra_args: Sequence[str] = (),
) -> Iterator[RunningTriton]:
    """Serve ``repository`` on 127.0.0.1 (free ports) until the block ends.

    Waits until the server is ready, which with Triton's strict readiness
    means every model loaded. The server and its python stubs run in their
    own process group and are stopped on every path out of the block.

    Raises:
        TritonUnavailable: no usable ``.venv-triton``.
        TritonStartError: the server exited (a model failed to load, say) or
            was not ready within ``timeout_s``; the message ends with its log.
    """
    install = install or find_triton()
    workdir.mkdir(parents=True, exist_ok=True)
    backends = _backend_directory(install, workdir / "backends")
    for attempt in range(1, _PORT_RETRIES + 1):
        http, grpc = _free_ports(2)
        log = workdir / f"tritonserver-{attempt}.log"
        shm_prefix = f"edgesplit-test-{os.getpid()}-{attempt}-"
        command = server_command(
            install,
            repository,
            backends,
            shm_prefix,
            http_port=http,
            grpc_port=grpc,
            extra_args=extra_args,
        )
        started = time.perf_counter()
        process = launch(command, install, log)
        try:
            _wait_ready(process, f"127.0.0.1:{http}", log, timeout_s)
        except TritonStartError:
            _stop(process, shm_prefix)
            if attempt < _PORT_RETRIES and _port_taken(log):
                continue
            raise
        except BaseException:
            _stop(process, shm_prefix)
            raise
        break
    ready_s = time.perf_counter() - started
    server = RunningTriton(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", log, process.pid, ready_s)
    try:
        yield server
    finally:
        _stop(process, shm_prefix)


def _backend_directory(install: TritonInstall, target: Path) -> Path:
    """PyTriton's python backend with the stub for the venv's Python beside it."""
    python = target / "python"
    if python.exists():
        shutil.rmtree(python)
    python.mkdir(parents=True)
    for item in (install.dist / "backends" / "python").iterdir():
        if item.is_file():
            (python / item.name).symlink_to(item)
    (python / _STUB).symlink_to(install.stub)
    return target


def _environment(install: TritonInstall) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["VIRTUAL_ENV"] = str(install.venv)
    env["PATH"] = f"{install.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    old = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = f"{install.libdir}{os.pathsep}{old}" if old else str(install.libdir)
    return env


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_ready(process: subprocess.Popen[bytes], http: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise TritonStartError(
                f"tritonserver exited with code {process.returncode} before it was ready; "
                f"log {log}:\n{_tail(log)}",
                log,
            )
        if _ready(http):
            return
        if time.monotonic() > deadline:
            raise TritonStartError(
                f"tritonserver not ready after {timeout_s:.0f} s; log {log}:\n{_tail(log)}", log
            )
        time.sleep(0.05)


def _ready(http: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http}/v2/health/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _port_taken(log: Path) -> bool:
    """Whether the server failed because another process took one of its ports meanwhile."""
    # Triton 2.51 logs: failed to start HTTP service: Unavailable - Socket '...' already in use
    return "already in use" in log.read_text(errors="replace")


def _stop(process: subprocess.Popen[bytes], shm_prefix: str) -> None:
    """SIGTERM the server's process group, SIGKILL what lingers, remove its shared memory."""
    group = process.pid
    if process.poll() is None:
        _signal_group(group, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    # The stubs are the server's children in its group; none may outlive the test.
    _signal_group(group, signal.SIGKILL)
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while process_group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    for path in Path("/dev/shm").glob(f"{shm_prefix}*"):
        path.unlink(missing_ok=True)


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


def process_group_alive(group: int) -> bool:
    """Whether any process of ``group`` (a server's pid: its group) still exists."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(log: Path, lines: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"
