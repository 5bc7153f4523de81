"""The authenticated channel under attack: replayed and tampered traffic, secrets kept out of logs.

A man in the middle is a real TCP relay between a CURVE edge client and the
cloud node; it records what the client sends, or flips one byte of it. A
replay of a whole recorded session (handshake and request) from a new
connection must not get the request executed; a tampered message must be
dropped unanswered; and in both cases honest clients keep being served.
Unknown keys and plaintext clients get nothing (tests/cloud_node/test_admission.py);
bundles with a wrong hash are refused on both sides (tests/partitioner/test_bundle.py
and the CLI test below).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

import wire
from cloud_node.process import start_cloud_process, stop_process
from cloud_node.server import CloudConfig
from edgesplit.bundle import Bundle
from edgesplit.security import (
    generate_keys,
    load_allowed,
    load_keypair,
    load_public_key,
    make_curve_client,
)
from tests.conftest import RunningCloud

pytestmark = pytest.mark.integration


class Relay:
    """A TCP relay to ``target`` that records the client's bytes and may alter them."""

    def __init__(self, target: tuple[str, int], alter: Callable[[int, bytes], bytes] | None = None):
        self.target = target
        self.alter = alter or (lambda offset, chunk: chunk)
        self.sent = bytearray()  # everything the client sent, as it sent it
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = self.server.getsockname()
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        client, _ = self.server.accept()
        upstream = socket.create_connection(self.target)
        for src, dst, record in ((client, upstream, True), (upstream, client, False)):
            t = threading.Thread(target=self._pump, args=(src, dst, record), daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if record:
                    offset = len(self.sent)
                    self.sent += chunk
                    chunk = self.alter(offset, chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keys(tmp_path, "cloud")
    generate_keys(tmp_path / "allowed", "edge")
    return tmp_path


@pytest.fixture
def secure_cloud(untrained_bundle: Bundle, keys: Path) -> Iterator[RunningCloud]:
    config = CloudConfig(
        bind="tcp://127.0.0.1:*",
        keys=load_keypair(keys / "cloud.key_secret"),
        allowed=load_allowed(keys / "allowed"),
    )
    running = RunningCloud(untrained_bundle, config=config)
    yield running
    running.stop()


def _port(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


def _client(context: zmq.Context, keys: Path, endpoint: str) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    make_curve_client(
        sock,
        load_keypair(keys / "allowed" / "edge.key_secret"),
        load_public_key(keys / "cloud.key"),
    )
    sock.connect(endpoint)
    return sock


def _request(bundle: Bundle, request_id: int) -> list:
    cut = bundle.manifest.cut("c03")
    x = np.random.default_rng(request_id).standard_normal((1, *cut.shape), dtype=np.float32)
    return wire.encode(
        wire.InferRequest(request_id, bundle.id, cut.id, (wire.Tensor(cut.name, x),))
    )


def _served_ok(sock: zmq.Socket, bundle: Bundle, request_id: int) -> bool:
    sock.send_multipart(_request(bundle, request_id))
    if not sock.poll(5000):
        return False
    message = wire.decode(sock.recv_multipart())
    return isinstance(message, wire.Result) and message.request_id == request_id


def test_a_replayed_session_is_not_executed(
    secure_cloud: RunningCloud, untrained_bundle: Bundle, keys: Path
) -> None:
    relay = Relay(_port(secure_cloud.endpoint))
    context = zmq.Context()
    try:
        honest = _client(context, keys, f"tcp://{relay.address[0]}:{relay.address[1]}")
        assert _served_ok(honest, untrained_bundle, 1)
        honest.close()
        recorded = bytes(relay.sent)
        assert len(recorded) > 4096  # the handshake and the whole request
        ok_before = secure_cloud.node.counts["ok"]
        # The attacker replays the session byte for byte on new connections, twice.
        for _ in range(2):
            with socket.create_connection(_port(secure_cloud.endpoint), timeout=2) as raw:
                raw.sendall(recorded)
                time.sleep(0.5)
        time.sleep(0.5)
        assert secure_cloud.node.counts["ok"] == ok_before, "a replayed request was executed"
        # Honest clients are still served.
        again = _client(context, keys, secure_cloud.endpoint)
        assert _served_ok(again, untrained_bundle, 2)
        again.close()
    finally:
        relay.close()
        context.term()


def test_a_tampered_message_is_dropped_and_others_are_served(
    secure_cloud: RunningCloud, untrained_bundle: Bundle, keys: Path
) -> None:
    def flip(offset: int, chunk: bytes) -> bytes:
        at = 2000 - offset  # inside the request message, past the CURVE handshake
        if 0 <= at < len(chunk):
            chunk = chunk[:at] + bytes([chunk[at] ^ 0x01]) + chunk[at + 1 :]
        return chunk

    relay = Relay(_port(secure_cloud.endpoint), alter=flip)
    context = zmq.Context()
    try:
        victim = _client(context, keys, f"tcp://{relay.address[0]}:{relay.address[1]}")
        ok_before = secure_cloud.node.counts["ok"]
        assert not _served_ok(victim, untrained_bundle, 1), "a tampered request was answered"
        assert secure_cloud.node.counts["ok"] == ok_before
        assert len(relay.sent) > 2000  # the flip really happened inside the traffic
        victim.close()
        honest = _client(context, keys, secure_cloud.endpoint)
        assert _served_ok(honest, untrained_bundle, 2)
        honest.close()
    finally:
        relay.close()
        context.term()


def _secrets(directory: Path) -> list[str]:
    """Every secret key under ``directory``, as the Z85 text the files hold."""
    found = []
    for path in directory.rglob("*.key_secret"):
        secret = load_keypair(path).secret
        found.append(secret.decode())
    return found


@pytest.mark.slow
def test_secret_keys_never_reach_logs_or_output(untrained_bundle: Bundle, tmp_path: Path) -> None:
    keydir = tmp_path / "keys"
    for name, where in (("cloud", keydir), ("edge", keydir / "allowed")):
        result = subprocess.run(
            [sys.executable, "-m", "edgesplit", "keys", "--out", str(where), "--name", name],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert not any(s in result.stdout + result.stderr for s in _secrets(where))
    secrets = _secrets(keydir)
    assert len(secrets) == 2
    proc, endpoint = start_cloud_process(
        untrained_bundle.root,
        "tcp://127.0.0.1:*",
        tmp_path / "cloud.log",
        extra=[
            "--secret-key",
            str(keydir / "cloud.key_secret"),
            "--allowed-clients",
            str(keydir / "allowed"),
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ],
    )
    try:
        edge = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgesplit",
                "edge",
                "--bundle",
                str(untrained_bundle.root),
                "--connect",
                endpoint,
                "--secret-key",
                str(keydir / "allowed" / "edge.key_secret"),
                "--server-key",
                str(keydir / "cloud.key"),
                "--policy",
                "fixed",
                "--cut",
                "c03",
                "--threshold",
                "off",
                "--samples",
                "20",
                "--log-level",
                "debug",
                "--log-format",
                "json",
                "--results",
                str(tmp_path / "results.jsonl"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        assert stop_process(proc) == 0
    assert edge.returncode == 0, edge.stderr[-2000:]
    texts = {
        "cloud log": (tmp_path / "cloud.log").read_text(),
        "edge output": edge.stdout + edge.stderr,
        "edge results": (tmp_path / "results.jsonl").read_text(),
    }
    assert '"finished": "cloud"' in texts["edge results"]  # it really talked to the cloud
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret key appears in the {where}"
            assert secret.encode().hex() not in text


@pytest.mark.slow
def test_a_bundle_with_a_wrong_hash_is_refused_by_both_processes(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(untrained_bundle.root, copy)
    tail = next(p for p in (copy / "cloud").rglob("model.onnx"))
    tail.write_bytes(tail.read_bytes() + b"\0")
    segment = next((copy / "edge").iterdir())
    segment.write_bytes(segment.read_bytes() + b"\0")
    env = {**os.environ, "EDGESPLIT_SECURITY_CURVE": "false"}
    for command in (
        ["cloud", "--bundle", str(copy), "--insecure", "--bind", "tcp://127.0.0.1:*"],
        ["edge", "--bundle", str(copy), "--samples", "1"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "edgesplit", *command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
        assert result.returncode == 1, (command[0], result.stderr[-1000:])
        assert "does not match" in result.stderr and "sha256" in result.stderr, result.stderr
