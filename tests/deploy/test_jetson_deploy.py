"""deploy/jetson and docs/jetson.md against the real CLI, config schema and systemd.

No Jetson, Docker engine or arm64 here: the config loads with edgesplit's own loader, the
unit and the container's command lines parse as real `edgesplit edge` invocations, the
unit passes `systemd-analyze verify` and an offline security score, and every `edgesplit`
command the guide tells the user to run parses with its real flags.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main

from edgesplit.app.cli import app
from edgesplit.config_load import load_config
from edgesplit.onnxrt import CPU
from edgesplit.providers import CUDA, TENSORRT, options_by_provider, resolve_providers
from offload_policy.energy import DEVICES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the loader's own fallback
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "jetson"
UNIT = DEPLOY / "edgesplit-edge.service"
EDGE_TOML = DEPLOY / "edge.toml"
EDGE_ENV = DEPLOY / "edge.env"
DOCKERFILE = DEPLOY / "Dockerfile"
GUIDE = ROOT / "docs" / "jetson.md"

STATE_DIR = Path("/var/lib/edgesplit")
CONFIG_PATH = "/etc/edgesplit/edge.toml"
FIRST_PARTY = ("edgesplit", "wire", "offload_policy", "partitioner", "edge_node", "cloud_node")

# typer >= 0.20 carries its own click: its errors derive from typer.TyperException.
COMMANDS: Any = typer.main.get_command(app)
UsageErrors = typer.TyperException


def _parse_edgesplit(argv: list[str]) -> Any:
    """Parse ``edgesplit ARGV...`` with the real commands (a click Context).

    Raises:
        typer.TyperException: an unknown command or flag, a missing or bad value.
    """
    name, *args = argv
    assert name in COMMANDS.commands, f"`edgesplit {name}` is not a command"
    return COMMANDS.commands[name].make_context(name, list(args))


# --- the example config ----------------------------------------------------------------------


def _env_lines(text: str, commented: bool) -> dict[str, str]:
    pattern = r"#(EDGESPLIT_\w+)=(.*)" if commented else r"(\w+)=(.*)"
    matches = (re.fullmatch(pattern, line) for line in text.splitlines())
    return {m.group(1): m.group(2) for m in matches if m}


def test_example_config_loads_with_the_intended_jetson_settings() -> None:
    cfg = load_config(EDGE_TOML, env={})
    edge = cfg.edge
    assert edge.providers == ("tensorrt", "cuda", "cpu")
    assert resolve_providers(edge.providers) == [TENSORRT, CUDA, CPU]
    assert edge.fp16 is True
    assert edge.engine_cache == STATE_DIR / "trt-cache"
    assert edge.power == "jetson"
    assert edge.bundle is not None and edge.bundle.is_relative_to(STATE_DIR)
    assert edge.connect is not None and edge.connect.startswith("tcp://")
    assert cfg.security.curve is True
    assert cfg.security.secret_key == Path("/etc/edgesplit/keys/edge.key_secret")
    assert cfg.security.server_key == Path("/etc/edgesplit/keys/cloud.key")
    assert cfg.metrics.port > 0
    assert cfg.policy.device in DEVICES
    # What the edge hands ONNX Runtime's TensorRT provider.
    options = options_by_provider(resolve_providers(edge.providers), edge.engine_cache, edge.fp16)
    assert options == {
        TENSORRT: {
            "trt_fp16_enable": "True",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(STATE_DIR / "trt-cache"),
        }
    }


def test_env_file_overrides_load_over_the_config() -> None:
    text = EDGE_ENV.read_text()
    active = _env_lines(text, commented=False)
    assert active, "edge.env sets nothing"
    cfg = load_config(EDGE_TOML, env=active)
    for var in active:
        section, _, key = var.removeprefix("EDGESPLIT_").lower().partition("_")
        assert cfg.source_of(section, key) == f"env {var}"
    # The commented-out examples are valid too, once uncommented.
    examples = _env_lines(text, commented=True)
    assert examples
    load_config(EDGE_TOML, env={**active, **examples})


# --- the systemd unit -------------------------------------------------------------------------


def _unit(path: Path = UNIT) -> dict[str, dict[str, list[str]]]:
    """The unit's sections as key -> every value given (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: {line!r} before any section"
        assert not line.endswith("\\"), f"{path}: keep {line!r} on one line"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not KEY=VALUE"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _one(values: dict[str, list[str]], key: str) -> str:
    assert key in values, f"{UNIT.name}: no {key}="
    return values[key][-1]


def test_unit_has_the_required_keys() -> None:
    unit = _unit()
    assert set(unit) == {"Unit", "Service", "Install"}
    u, s = unit["Unit"], unit["Service"]
    assert "network-online.target" in _one(u, "After").split()
    assert "network-online.target" in _one(u, "Wants").split()
    assert _one(s, "Type") == "simple"  # the edge never calls sd_notify
    assert _one(s, "User") == "edgesplit"
    assert "video" in _one(s, "SupplementaryGroups").split()  # the GPU's device nodes
    assert _one(s, "StateDirectory") == STATE_DIR.name
    assert _one(s, "EnvironmentFile") == "-/etc/edgesplit/edge.env"
    assert _one(s, "Restart") == "on-failure"
    assert float(_one(s, "RestartSec")) > 0
    assert _one(s, "ProtectSystem") == "strict"
    assert _one(s, "NoNewPrivileges") == "yes"
    assert _one(s, "ProtectKernelTunables") == "yes"  # /sys read-only, still readable
    assert "multi-user.target" in _one(unit["Install"], "WantedBy").split()
    # Each of these would hide the GPU or break CUDA's JIT (see the unit's comments).
    for key in ("PrivateDevices", "DevicePolicy", "ProtectClock", "MemoryDenyWriteExecute"):
        assert key not in s, f"{key}= breaks the GPU on a Jetson"
    assert "InaccessiblePaths" not in s and "TemporaryFileSystem" not in s


def test_unit_lets_the_edge_write_its_engine_cache_and_state() -> None:
    service = _unit()["Service"]
    writable = [STATE_DIR] + [
        Path(p.lstrip("-")) for v in service.get("ReadWritePaths", []) for p in v.split()
    ]
    cfg = load_config(EDGE_TOML, env={})
    for path in (cfg.edge.engine_cache, cfg.edge.bundle):
        assert path is not None
        assert any(path.is_relative_to(w) for w in writable), f"{path} is read-only in the unit"
    cuda_cache = [v for v in service["Environment"] if v.startswith("CUDA_CACHE_PATH=")]
    assert cuda_cache and Path(cuda_cache[0].partition("=")[2]).is_relative_to(STATE_DIR)


def _exec_start() -> list[str]:
    return shlex.split(_one(_unit()["Service"], "ExecStart"))


def test_unit_exec_start_is_a_real_edge_invocation() -> None:
    argv = _exec_start()
    assert argv[0] == "/opt/edgesplit/venv/bin/edgesplit"
    assert argv[1] == "edge"
    ctx = _parse_edgesplit(argv[1:])
    assert ctx.params["config"] == Path(CONFIG_PATH)
    # The same parse rejects what a typo would give.
    with pytest.raises(UsageErrors, match="No such option"):
        _parse_edgesplit([*argv[1:], "--engine-cache-dir", "/tmp"])


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip(
            "systemd-analyze is not installed here; test_unit_has_the_required_keys "
            "checked the unit's keys by parsing it instead"
        )
    return found


def _unit_runnable_here(tmp_path: Path) -> Path:
    """The unit with ExecStart's binary pointed at this venv's real edgesplit.

    `verify` refuses a missing binary, and /opt/edgesplit does not exist here; the
    arguments stay as they are.
    """
    here = Path(sys.executable).with_name("edgesplit")
    assert here.is_file(), f"{here}: the package's console script is not installed"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/edgesplit/venv/bin/edgesplit", str(here)))
    return copy


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    copy = _unit_runnable_here(tmp_path)
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=30
    )
    # verify exits 0 on unknown keys and bad values, warning on stderr: none allowed.
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_systemd_security_exposure_is_low(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    version = subprocess.run([analyze, "--version"], capture_output=True, text=True, timeout=30)
    major = int(re.search(r"systemd (\d+)", version.stdout).group(1))  # type: ignore[union-attr]
    if major < 250:
        pytest.skip(f"systemd {major} has no `security --offline` (needs 250)")
    copy = _unit_runnable_here(tmp_path)
    done = subprocess.run(
        # --threshold is in tenths: 30 fails the command above an exposure of 3.0.
        [analyze, "security", "--offline=true", "--threshold=30", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert score is not None, done.stdout + done.stderr
    assert float(score.group(1)) <= 3.0, done.stdout
    assert done.returncode == 0, done.stdout + done.stderr


# --- the container recipe ---------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args() -> dict[str, str]:
    return dict(
        rest.split("=", 1) for word, rest in _instructions() if word == "ARG" and "=" in rest
    )


def _substitute(text: str) -> str:
    args = _args()
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)


def test_dockerfile_base_is_an_l4t_jetpack_6_image() -> None:
    froms = [_substitute(rest) for word, rest in _instructions() if word == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(r"nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+", froms[0]), froms[0]
    assert _args()["ORT_INDEX"].endswith("/jp6/cu126")  # r36.4: CUDA 12.6


def test_dockerfile_command_parses_like_the_unit() -> None:
    found = {
        word: json.loads(rest) for word, rest in _instructions() if word in ("ENTRYPOINT", "CMD")
    }
    argv = found["ENTRYPOINT"] + found.get("CMD", [])
    assert argv[:2] == _exec_start()[:2]
    assert argv == _exec_start()
    ctx = _parse_edgesplit(argv[1:])
    assert ctx.params["config"] == Path(CONFIG_PATH)
    copies = [rest.split() for word, rest in _instructions() if word == "COPY"]
    assert ["deploy/jetson/edge.toml", CONFIG_PATH] in copies


def _pip_installs() -> list[list[str]]:
    """Every `pip ...` command in the RUN lines, as argv."""
    commands = []
    for word, rest in _instructions():
        if word != "RUN":
            continue
        lexer = shlex.shlex(_substitute(rest), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv: list[str] = []
        for token in [*lexer, "&&"]:
            if token not in ("&&", ";", "||"):
                argv.append(token)
                continue
            if argv and Path(argv[0]).name in ("pip", "pip3"):
                commands.append(argv)
            argv = []
    return commands


def test_dockerfile_never_installs_torch() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    installs = [argv for argv in _pip_installs() if argv[1] == "install"]
    assert installs
    for argv in installs:
        for spec in (a for a in argv[2:] if not a.startswith("-")):
            name = re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower()
            assert name not in ("torch", "torchvision"), argv
            for extra in re.findall(r"\[([^\]]*)\]", spec):
                for wanted in extra.split(","):
                    reqs = extras[wanted.strip()]
                    assert not any(r.lower().startswith("torch") for r in reqs), (spec, reqs)
    assert "torch" in _substitute(DOCKERFILE.read_text()).split("find_spec(")[1]


def test_dockerfile_replaces_the_cpu_onnxruntime_with_the_gpu_build() -> None:
    steps = [" ".join(argv[1:]) for argv in _pip_installs()]
    edgesplit_at = next(i for i, s in enumerate(steps) if s.startswith("install /src"))
    uninstall_at = next(i for i, s in enumerate(steps) if s == "uninstall -y onnxruntime")
    gpu_at = next(i for i, s in enumerate(steps) if "onnxruntime-gpu==" in s)
    assert edgesplit_at < uninstall_at < gpu_at
    assert "--no-deps" in steps[gpu_at] and "--index-url" in steps[gpu_at]


def _module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(FIRST_PARTY)


def test_dockerfile_copies_every_package_the_copied_code_imports() -> None:
    copied = {
        rest.split()[0]
        for word, rest in _instructions()
        if word == "COPY" and rest.split()[-1].startswith("/src/")
    }
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    packages = {c for c in copied if c in FIRST_PARTY}
    needed = set()
    for package in packages:
        for module in (ROOT / package).rglob("*.py"):
            needed |= _module_level_imports(module)
    assert needed <= packages, f"imported but not copied: {sorted(needed - packages)}"
    assert {"edgesplit", "edge_node", "partitioner"} <= packages


# --- the guide ---------------------------------------------------------------------------------


def _sh_lines() -> list[list[str]]:
    """Each command of the guide's ```sh blocks, continuation lines joined, as argv."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert blocks, f"{GUIDE}: no ```sh blocks"
    commands = []
    for block in blocks:
        for line in re.sub(r"\\\n", " ", block).splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def _strip_prefix(argv: list[str]) -> list[str]:
    """Drop `sudo [-u USER]` and leading VAR=value assignments."""
    while argv:
        if argv[0] == "sudo":
            argv = argv[3:] if argv[1:2] == ["-u"] else argv[1:]
        elif re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
            argv = argv[1:]
        else:
            break
    return argv


def _edgesplit_commands() -> list[list[str]]:
    """The guide's edgesplit invocations: direct, or as `docker run IMAGE ARGS` of the edge."""
    found = []
    for argv in map(_strip_prefix, _sh_lines()):
        if argv and Path(argv[0]).name == "edgesplit":
            found.append(argv[1:])
        elif argv[:2] == ["docker", "run"]:
            image = next(i for i, a in enumerate(argv) if a.startswith("edgesplit-edge:"))
            entrypoint = [b for a, b in zip(argv, argv[1:], strict=False) if a == "--entrypoint"]
            if entrypoint:  # the image's edgesplit, any command
                assert Path(entrypoint[0]).name == "edgesplit", argv
                found.append(argv[image + 1 :])
            else:  # the image's ENTRYPOINT: `edgesplit edge`
                found.append(["edge", *argv[image + 1 :]])
    return found


def test_guide_commands_parse_with_the_real_flags() -> None:
    commands = _edgesplit_commands()
    for argv in commands:
        try:
            _parse_edgesplit(argv)
        except UsageErrors as exc:
            pytest.fail(f"docs/jetson.md: `edgesplit {shlex.join(argv)}`: {exc}")
    seen = {(argv[0], flag) for argv in commands for flag in argv[1:] if flag.startswith("--")}
    for wanted in [
        ("profile", "--device"),
        ("profile", "--providers"),
        ("partition", "--edge-profile"),
        ("keys", "--name"),
        ("config", "--check"),
        ("edge", "--config"),
        ("edge", "--power"),
        ("edge", "--providers"),
    ]:
        assert wanted in seen, f"docs/jetson.md never runs `edgesplit {wanted[0]} {wanted[1]}`"


def test_guide_profiles_on_the_device_as_edge_with_full_provider_names() -> None:
    profiles = [argv for argv in _edgesplit_commands() if argv[0] == "profile"]
    assert profiles
    for argv in profiles:
        ctx = _parse_edgesplit(argv)
        assert ctx.params["device"] == "edge"
        # `profile` passes --providers to ONNX Runtime as they are: short names would
        # silently fall back to the CPU.
        for name in ctx.params["providers"].split(","):
            assert name.endswith("ExecutionProvider"), argv


def test_guide_names_only_files_that_exist() -> None:
    text = GUIDE.read_text()
    named = set(re.findall(r"deploy/jetson/[\w.-]+", text))
    assert {f"deploy/jetson/{p.name}" for p in (UNIT, EDGE_TOML, EDGE_ENV, DOCKERFILE)} <= named
    for path in named:
        assert (ROOT / path).is_file(), f"docs/jetson.md names {path}, which does not exist"
