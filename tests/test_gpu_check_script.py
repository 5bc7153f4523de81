"""benchmarks/gpu_check.sh, the prepared GPU check, as far as a machine without a GPU allows.

The check itself needs an NVIDIA GPU and is never part of CI. Here: the script parses,
refuses clearly where there is no GPU, and its dry run lists the GPU commands; its
figures' helper (benchmarks/gpu_check.py) reads a real profile asked for CUDA and
times a real cloud node, on the CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import onnxruntime as ort
import pytest

from benchmarks.gpu_check import main as gpu_check
from cloud_node.process import start_cloud_process, stop_process
from edgesplit.bundle import Bundle

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
CUDA_IN_BUILD = "CUDAExecutionProvider" in ort.get_available_providers()


def _script(*args: str, fake_bin: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if fake_bin is not None:
        env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _broken_nvidia_smi(tmp_path: Path) -> Path:
    """A bin folder whose nvidia-smi fails as it does where the driver is not loaded."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the "
        "NVIDIA driver.'\nexit 9\n"
    )
    fake.chmod(0o755)
    return bin_dir


def test_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean() -> None:
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_help_names_the_options() -> None:
    result = _script("--help")
    assert result.returncode == 0, result.stderr
    for option in ("--work-dir", "--venv", "--dry-run", "--budget-s", "--pip-args"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--frobnicate",), "unknown argument: --frobnicate"),
        (("--requests", "0"), "--requests 0: expected a whole number >= 1"),
        (("--work-dir",), "--work-dir needs a value"),
    ],
)
def test_bad_usage_exits_64(args: tuple[str, ...], message: str) -> None:
    result = _script(*args)
    assert result.returncode == 64
    assert message in result.stderr


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None,
    reason="nvidia-smi is installed here: the script would measure the GPU (minutes)",
)
def test_without_a_gpu_it_exits_2_at_once(tmp_path: Path) -> None:
    began = time.monotonic()
    result = _script("--work-dir", str(tmp_path / "work"))
    assert result.returncode == 2, result.stderr
    assert "gpu_check: no NVIDIA GPU here (nvidia-smi is not installed): nothing measured" in (
        result.stderr
    )
    assert time.monotonic() - began < 10
    assert not (tmp_path / "work").exists()  # nothing built, nothing written


def test_a_failing_nvidia_smi_exits_2_with_its_message(tmp_path: Path) -> None:
    result = _script("--work-dir", str(tmp_path / "work"), fake_bin=_broken_nvidia_smi(tmp_path))
    assert result.returncode == 2
    assert (
        "no NVIDIA GPU here (nvidia-smi failed: NVIDIA-SMI has failed because it could not "
        "communicate with the NVIDIA driver.)" in result.stderr
    )
    assert not (tmp_path / "work").exists()


def test_dry_run_lists_the_gpu_commands_without_a_gpu(tmp_path: Path) -> None:
    work = tmp_path / "work"
    result = _script("--dry-run", "--work-dir", str(work), fake_bin=_broken_nvidia_smi(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()

    def having(*parts: str) -> list[str]:
        return [line for line in lines if all(part in line for part in parts)]

    assert having("pip install", f"-e '{ROOT}[torch,gpu,ray]'")
    assert having("pip uninstall", "onnxruntime onnxruntime-gpu")
    assert having("pip install", "onnxruntime-gpu[cuda,cudnn]")
    for model in ("branchynet-untrained", "resnet18"):
        for providers in ("cuda", "tensorrt,cuda"):
            assert having(f"edgesplit profile --model {model} --device cloud", providers + " "), (
                model,
                providers,
            )
    assert having("edgesplit partition --model resnet18", "--providers cuda")
    single = having("edgesplit cloud", "--providers cuda")
    assert [line for line in single if "--ray" not in line]
    assert having("edgesplit cloud", "--providers cuda", "--ray", "--replica-gpus 1")
    assert len(having("benchmarks.gpu_check cloud")) == 2
    assert not any(line.startswith("gpu_check: ") and "failed" in line for line in lines)
    assert not work.exists()  # a dry run writes nothing


@pytest.mark.slow
def test_a_step_past_the_budget_is_cut_short_and_the_rest_skipped(tmp_path: Path) -> None:
    """A stand-in GPU and a virtualenv whose tools hang: the budget still ends the run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'Stand-in GPU, 0.0, 1 MiB'\n")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(  # quick for the library path, then hangs
        '#!/bin/sh\ncase "$3" in libpath) exit 0 ;; esac\nsleep 60\n'
    )
    (venv / "bin" / "edgesplit").write_text("#!/bin/sh\nsleep 60\n")
    for tool in (bin_dir / "nvidia-smi", venv / "bin" / "python", venv / "bin" / "edgesplit"):
        tool.chmod(0o755)
    # The stamp of a virtualenv this script built for this pyproject.toml: reused as it is.
    key = subprocess.run(
        ["bash", "-c", f"(cat {ROOT / 'pyproject.toml'}; echo ' trt=0') | cksum"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    (venv / f".gpu-check-{key}").touch()
    work = tmp_path / "work"

    began = time.monotonic()
    result = _script(
        "--work-dir", str(work), "--venv", str(venv), "--budget-s", "8", fake_bin=bin_dir
    )
    assert time.monotonic() - began < 30
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "gpu_check: gpu = Stand-in GPU, 0.0, 1 MiB",
        f"gpu_check: install = reused {venv}",
    ]
    cut_short = [line for line in lines if "timed out after" in line]
    assert cut_short and all(int(line.split("after ")[1].split()[0]) <= 8 for line in cut_short)
    assert "gpu_check: profile-resnet18.cuda = skipped (the 8 s budget is spent)" in lines
    assert "gpu_check: partition-resnet18 = skipped (the 8 s budget is spent)" in lines
    assert (work / "figures.txt").read_text().splitlines() == lines


@pytest.mark.skipif(CUDA_IN_BUILD, reason="this ONNX Runtime build has CUDA")
def test_probe_says_cuda_and_tensorrt_are_not_available(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert gpu_check(["providers", "cuda", "--label", "cuda"]) == 0
    assert gpu_check(["providers", "tensorrt,cuda", "--label", "tensorrt"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "gpu_check: provider.cuda = CPUExecutionProvider",
        "gpu_check: cuda = not available (not in this ONNX Runtime build; the session runs "
        "on CPUExecutionProvider)",
        "gpu_check: provider.tensorrt = CPUExecutionProvider",
        "gpu_check: tensorrt = not available (not in this ONNX Runtime build; the session "
        "runs on CPUExecutionProvider)",
    ]


def test_runtime_names_the_onnxruntime_build(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check(["runtime"]) == 0
    out = capsys.readouterr().out
    assert f"gpu_check: onnxruntime.version = {ort.__version__}\n" in out
    assert "gpu_check: onnxruntime.providers_in_build = " in out
    assert "CPUExecutionProvider" in out
    assert "gpu_check: onnxruntime.built_for_cuda = " in out
    assert "gpu_check: torch = " in out


@pytest.mark.slow
@pytest.mark.skipif(CUDA_IN_BUILD, reason="this ONNX Runtime build has CUDA")
def test_profile_asked_for_cuda_records_the_cpu_it_ran_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "profile.json"
    result = subprocess.run(
        [sys.executable, "-m", "edgesplit", "profile", "--model", "branchynet-untrained"]
        + ["--device", "cloud", "--quick", "--no-layers", "--providers", "cuda"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["providers_requested"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert data["provider"] == "CPUExecutionProvider"

    assert gpu_check(["profile", str(out), "--label", "builtin.cuda"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "gpu_check: profile.builtin.cuda.provider = CPUExecutionProvider",
        "gpu_check: profile.builtin.cuda.fell_back = asked CUDAExecutionProvider, "
        "ran on CPUExecutionProvider",
    ]
    median_ms = data["whole_model"]["median_s"] * 1e3
    assert lines[2] == f"gpu_check: profile.builtin.cuda.whole_model_p50 = {median_ms:.3f} ms"
    assert lines[3].startswith("gpu_check: profile.builtin.cuda.whole_model_p95 = ")


@pytest.mark.integration
def test_cloud_figures_from_a_real_node(
    untrained_bundle: Bundle,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # as the script starts it: one start-up line
    log = tmp_path / "cloud.log"
    proc, endpoint = start_cloud_process(
        untrained_bundle.root,
        "tcp://127.0.0.1:*",
        log,
        extra=["--insecure", "--providers", "cpu", "--threads", "1"],
    )
    try:
        code = gpu_check(
            ["cloud", endpoint, "--bundle", str(untrained_bundle.root), "--log", str(log)]
            + ["--label", "cloud.test", "--requests", "20", "--warmup", "2"]
        )
    finally:
        stop_process(proc)
    lines = capsys.readouterr().out.splitlines()
    assert code == 0, lines
    assert lines[0] == "gpu_check: cloud.test.provider = CPUExecutionProvider"
    assert lines[1] == "gpu_check: cloud.test.requests = 20 ok, 0 failed"
    figures = {line.split(" = ")[0]: line.split(" = ")[1] for line in lines[2:]}
    p50, p95, compute = (
        float(figures[f"gpu_check: cloud.test.{name}"].removesuffix(" ms"))
        for name in ("p50", "p95", "compute_p50")
    )
    assert 0 < compute <= p50 <= p95
