"""The CLI as a user runs it: real processes, real sockets, one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

import wire
from edgesplit.bundle import Bundle
from edgesplit.runs import start_cloud_process, stop_process

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


def test_cloud_and_edge_as_separate_processes(untrained_bundle: Bundle, tmp_path: Path) -> None:
    proc, endpoint = start_cloud_process(
        untrained_bundle.root, "tcp://127.0.0.1:*", tmp_path / "cloud.log"
    )
    try:
        # Garbage first: the cloud process answers with an error and stays up.
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(endpoint)
        sock.send_multipart([b"\x00\x01garbage", b"x" * 100])
        message, _ = wire.decode_message(sock.recv_multipart())
        assert message.kind == "error" and message.meta["code"] == "header"
        sock.close()
        context.term()

        result = _cli(
            "edge",
            "--bundle",
            str(untrained_bundle.root),
            "--connect",
            endpoint,
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
    assert "rejected frame code=header" in (tmp_path / "cloud.log").read_text()


def test_edge_without_a_cloud_answers_everything_locally(
    untrained_bundle: Bundle, tmp_path: Path
) -> None:
    result = _cli(
        "edge",
        "--bundle",
        str(untrained_bundle.root),
        "--connect",
        "tcp://127.0.0.1:1",
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
    # Marked down at start, then probed after each backoff: probes time out and fall back.
    assert {r["finished"] for r in rows} <= {"edge", "fallback"}
    assert all(r["reason"] in (None, "timeout") for r in rows)


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


def test_bad_flags_name_the_flag(untrained_bundle: Bundle) -> None:
    for args, message in [
        (["--cut", "c99"], "--cut c99: not a cut of this bundle"),
        (["--codec", "jpeg"], "--codec jpeg: not measured"),
        (["--threshold", "high"], "--threshold high: expected a number"),
        (["--threshold", "0.42"], "threshold=0.42 is not on the calibrated grid"),
        (["--inputs", "/nonexistent"], "--inputs /nonexistent: not 'bundle' and not a directory"),
    ]:
        result = _cli("edge", "--bundle", str(untrained_bundle.root), "--samples", "2", *args)
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
        untrained_bundle.root, "tcp://127.0.0.1:*", tmp_path / "a.log"
    )
    try:
        result = _cli("cloud", "--bundle", str(untrained_bundle.root), "--bind", endpoint)
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
        "train",
        "export",
        "version",
    ):
        result = _cli(command, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout, command
