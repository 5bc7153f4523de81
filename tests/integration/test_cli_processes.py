"""The CLI as a user runs it: real processes, real sockets, one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

import wire
from cloud_node.process import start_cloud_process, stop_process
from edgesplit.bundle import Bundle
from edgesplit.security import load_keypair, load_public_key, make_curve_client

pytestmark = pytest.mark.integration


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgesplit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = _cli(
        "demo",
        "--samples",
        "300",
        "--bundle",
        str(tmp_path / "bundle"),
        "--results",
        str(tmp_path / "requests.jsonl"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "paired with cloud tcp://127.0.0.1:" in out
    assert "finished at cloud" in out and "finished at exit_1" in out
    rows = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert len(rows) == 300
    assert {r["finished"] for r in rows} >= {"cloud", "exit_1"}
    offloaded = [r for r in rows if r["finished"] == "cloud"]
    assert all(r["bytes_sent"] > 0 and r["reason"] is None for r in offloaded)
    accuracy = sum(r["prediction"][0] == r["label"] for r in rows) / len(rows)
    assert accuracy > 0.8
    assert "cloud node stopped (exit code 0)" in out


def _keys(tmp_path: Path) -> Path:
    """A cloud key pair and one allowed edge's, made with `edgesplit keys`."""
    keys = tmp_path / "keys"
    for out, name in ((keys, "cloud"), (keys / "allowed", "edge")):
        result = _cli("keys", "--out", str(out), "--name", name)
        assert result.returncode == 0, result.stderr
    secret = keys / "allowed" / "edge.key_secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    return keys


def test_cloud_and_edge_as_separate_processes(untrained_bundle: Bundle, tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    proc, endpoint = start_cloud_process(
        untrained_bundle.root,
        "tcp://127.0.0.1:*",
        tmp_path / "cloud.log",
        extra=[
            "--secret-key",
            str(keys / "cloud.key_secret"),
            "--allowed-clients",
            str(keys / "allowed"),
        ],
    )
    try:
        # A plaintext client gets nothing: the CURVE handshake fails before any request.
        context = zmq.Context()
        plain = context.socket(zmq.DEALER)
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(endpoint)
        plain.send_multipart([b"\x00\x01garbage", b"x" * 100])
        assert plain.poll(1000) == 0
        plain.close()
        # Garbage from an allowed client: the cloud answers with an error and stays up.
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        edge_keys = load_keypair(keys / "allowed" / "edge.key_secret")
        make_curve_client(sock, edge_keys, load_public_key(keys / "cloud.key"))
        sock.connect(endpoint)
        sock.send_multipart([b"\x00\x01garbage", b"x" * 100])
        message = wire.decode(sock.recv_multipart())
        assert isinstance(message, wire.ErrorReply) and message.code == "header"
        sock.close()
        context.term()

        result = _cli(
            "edge",
            "--bundle",
            str(untrained_bundle.root),
            "--connect",
            endpoint,
            "--secret-key",
            str(keys / "allowed" / "edge.key_secret"),
            "--server-key",
            str(keys / "cloud.key"),
            "--policy",
            "fixed",
            "--cut",
            "c06",
            "--threshold",
            "off",
            "--samples",
            "40",
            "--results",
            str(tmp_path / "r.jsonl"),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
        assert [r["finished"] for r in rows] == ["cloud"] * 40
        assert proc.poll() is None
    finally:
        assert stop_process(proc) == 0
    log = (tmp_path / "cloud.log").read_text()
    assert "rejected frame code=header" in log
    assert "auth_allowed" in log  # the allowed edge (and the garbage sender) passed the ZAP check


def test_edge_without_a_cloud_answers_everything_locally(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    result = _cli(
        "edge",
        "--bundle",
        str(untrained_bundle.root),
        "--connect",
        "tcp://127.0.0.1:1",
        "--insecure",
        "--policy",
        "fixed",
        "--samples",
        "30",
        "--cut",
        "c03",
        "--threshold",
        "off",
        "--timeout-ms",
        "200",
        "--results",
        str(tmp_path / "r.jsonl"),
    )
    assert result.returncode == 0, result.stderr
    assert "did not answer a ping" in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(rows) == 30
    # Marked down at start and probed after each backoff; meanwhile every request is local.
    assert {r["finished"] for r in rows} == {"edge"}
    assert all(r["reason"] is None for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["partition", "--model", "no-such-model", "--out", "/tmp/x"],
            "unknown model 'no-such-model'",
        ),
        (
            ["edge", "--bundle", "/nonexistent/bundle"],
            "/nonexistent/bundle: no such bundle directory",
        ),
        (["cloud", "--bundle", "/nonexistent/bundle"], "no such bundle directory"),
        (
            ["partition", "--model", "/nonexistent/model.onnx", "--out", "/tmp/x"],
            "no such ONNX file",
        ),
    ],
)
def test_bad_input_gets_one_line_and_a_nonzero_exit(args: list[str], message: str) -> None:
    result = _cli(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flags_name_the_flag(untrained_bundle: Bundle, tmp_path: Path) -> None:
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[edge]\ntimeout_ms = -3\n")
    for args, message in [
        (["--cut", "c99"], "--cut c99: not a cut of this bundle"),
        (["--codec", "jpeg"], "--codec jpeg: not measured"),
        (["--threshold", "high"], "threshold"),
        (["--threshold", "0.42"], "threshold=0.42 is not on the calibrated grid"),
        (["--inputs", "/nonexistent"], "--inputs /nonexistent: not 'bundle' and not an .npz"),
        (["--policy", "greedy"], "greedy"),
        (["--config", str(bad_config)], "timeout_ms = -3"),
        (["--connect", "tcp://10.1.2.3:5555", "--insecure"], "loopback"),
        (["--connect", "tcp://127.0.0.1:5555"], "CURVE is on"),
    ]:
        result = _cli(
            "edge",
            "--bundle",
            str(untrained_bundle.root),
            "--samples",
            "2",
            "--policy",
            "fixed",
            *args,
        )
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)


def test_export_writes_exits_as_outputs(tmp_path: Path) -> None:
    import onnx

    result = _cli("export", "--model", "branchynet-untrained", "--out", str(tmp_path / "m.onnx"))
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert [o.name for o in model.graph.output] == ["logits", "exit_1", "exit_2"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


def test_port_in_use(untrained_bundle: Bundle, tmp_path: Path) -> None:
    proc, endpoint = start_cloud_process(
        untrained_bundle.root, "tcp://127.0.0.1:*", tmp_path / "a.log", extra=["--insecure"]
    )
    try:
        result = _cli(
            "cloud", "--bundle", str(untrained_bundle.root), "--bind", endpoint, "--insecure"
        )
        assert result.returncode == 1
        assert f"cannot bind {endpoint}" in result.stderr and "in use" in result.stderr
    finally:
        stop_process(proc)


def test_every_subcommand_has_help() -> None:
    for command in (
        "demo",
        "partition",
        "profile",
        "show",
        "triton-repository",
        "simulate",
        "cloud",
        "edge",
        "keys",
        "config",
        "train",
        "export",
        "version",
    ):
        result = _cli(command, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout, command
