"""`edgesplit profile` and `edgesplit partition` with profiles, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgesplit.bundle import load_bundle
from partitioner.profile import load_profile

pytestmark = pytest.mark.integration
MODEL = "branchynet-untrained"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgesplit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("profiles")
    paths = {}
    for role in ("edge", "cloud"):
        paths[role] = root / f"{role}.json"
        args = ["profile", "--model", MODEL, "--device", role, "--quick", "--out", str(paths[role])]
        if role == "edge":
            args += ["--plot", str(root / "edge.png")]
        result = _cli(*args)
        assert result.returncode == 0, result.stderr
        assert f"{role} profile of" in result.stdout
    paths["plot"] = root / "edge.png"
    return paths


def test_profile_writes_a_profile_and_a_plot(profiles: dict[str, Path]) -> None:
    edge = load_profile(profiles["edge"])
    assert edge.role == "edge" and edge.runs == 7 and edge.layers
    assert profiles["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert profiles["plot"].stat().st_size > 20_000


def test_partition_merges_the_two_profiles(profiles: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = _cli(
        "partition",
        "--model",
        MODEL,
        "--out",
        str(out),
        "--quick",
        "--edge-profile",
        str(profiles["edge"]),
        "--cloud-profile",
        str(profiles["cloud"]),
    )
    assert result.returncode == 0, result.stderr
    bundle = load_bundle(out)
    stored = json.loads((out / "profiles" / "edge.json").read_text())
    given = json.loads(profiles["edge"].read_text())
    assert stored == given  # the device's figures, not re-measured here
    assert bundle.manifest.profiles["edge"].machine == load_profile(profiles["edge"]).machine
    show = _cli("show", "--bundle", str(out))
    assert show.returncode == 0 and "pruned" in show.stdout


def test_plot_from_an_existing_profile(profiles: dict[str, Path], tmp_path: Path) -> None:
    result = _cli("profile", "--from", str(profiles["cloud"]), "--plot", str(tmp_path / "c.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "c.png").stat().st_size > 20_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "--model", MODEL, "--device", "phone", "--out", "x.json"], "--device phone"),
        (["profile", "--device", "edge", "--out", "x.json"], "--model is required"),
        (["profile", "--from", "/nonexistent.json"], "/nonexistent.json: no such profile"),
        (
            ["partition", "--model", MODEL, "--out", "/tmp/x", "--prune-range", "fast"],
            "--prune-range fast: expected LOW-HIGH",
        ),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = _cli(*args)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_a_profile_of_another_model_is_refused(profiles: dict[str, Path], tmp_path: Path) -> None:
    result = _cli(
        "partition",
        "--model",
        "tests.partitioner.factories:tiny",
        "--input-shape",
        "1,8,8",
        "--out",
        str(tmp_path / "b"),
        "--quick",
        "--edge-profile",
        str(profiles["edge"]),
    )
    assert result.returncode == 1
    assert "was measured on another model" in result.stderr and "edge.json" in result.stderr
    assert "Traceback" not in result.stderr
