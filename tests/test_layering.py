"""Dependencies point one way (DESIGN.md): checked on the source and on a real interpreter.

The layers, bottom up: the core (``edgesplit`` without ``edgesplit.app``); ``wire``
and ``offload_policy``; ``partitioner``, ``edge_node`` and ``cloud_node``;
``experiments`` and ``benchmarks``; the app layer (``edgesplit.app``), which
nothing imports. Every import counts, those inside functions and under
``TYPE_CHECKING`` included: a cycle or an upward arrow is a failure.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "edgesplit",
    "wire",
    "offload_policy",
    "partitioner",
    "edge_node",
    "cloud_node",
    "experiments",
    "benchmarks",
)
HEAVY = {"torch", "torchvision", "sklearn", "scipy", "onnx"}
APP = "edgesplit.app"
CORE = "edgesplit"

# layer -> the layers of ours it may import (itself included)
BELOW_APP = {CORE, "wire", "offload_policy", "partitioner", "edge_node", "cloud_node"}
ALLOWED: dict[str, set[str]] = {
    CORE: {CORE},
    "wire": {"wire", "edgesplit.errors"},
    "offload_policy": {"offload_policy", "edgesplit.errors", "edgesplit.bundle"},
    "partitioner": {"partitioner", CORE, "wire", "offload_policy"},
    "edge_node": {"edge_node", CORE, "wire", "offload_policy"},
    "cloud_node": {"cloud_node", CORE, "wire"},
    "experiments": BELOW_APP | {"experiments"},
    "benchmarks": BELOW_APP | {"experiments", "benchmarks"},
    APP: BELOW_APP | {"experiments", APP},
}
# The runtimes and the core load no deep-learning framework.
LIGHT = {CORE, "wire", "offload_policy", "edge_node", "cloud_node"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _layer(module: str) -> str:
    if module == APP or module.startswith(APP + ".") or module == "edgesplit.__main__":
        return APP
    return module.split(".")[0]


def _within(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _resolve(name: str) -> str | None:
    """The module of ours that ``name`` (a module, or a name in one) is, else None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path, source: str | None = None) -> set[str]:
    """Every name imported anywhere in ``path`` (functions, TYPE_CHECKING; relative resolved)."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        targets = {_resolve(name) for name in _imports(path)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_layer() -> None:
    assert {_layer(m) for m in MODULES} <= set(ALLOWED), {_layer(m) for m in MODULES}
    assert any(_layer(m) == APP for m in MODULES)


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_relative_imports_are_resolved() -> None:
    source = "from . import cli_edge\nfrom ..bundle import Bundle\nfrom .flags import x\n"
    names = _imports(ROOT / "edgesplit" / "app" / "cli.py", source)
    expected = {"edgesplit.app.cli_edge", "edgesplit.bundle.Bundle", "edgesplit.app.flags.x"}
    assert expected <= names


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_every_arrow_points_down(layer: str) -> None:
    graph = _graph()
    upward = []
    for module in sorted(m for m in graph if _layer(m) == layer):
        for target in sorted(graph[module]):
            if not _within(target, ALLOWED[layer]) or (
                _layer(target) == APP and layer != APP
            ):
                upward.append(f"{module} imports {target}")
    assert upward == []


@pytest.mark.parametrize("layer", sorted(LIGHT))
def test_runtimes_and_core_import_no_framework(layer: str) -> None:
    heavy = [
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if _layer(module) == layer
        for name in _imports(path)
        if name.split(".")[0] in HEAVY
    ]
    assert heavy == []


def test_nothing_imports_the_app_layer() -> None:
    importers = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if _layer(module) != APP
        for target in targets
        if _layer(target) == APP
    ]
    assert importers == []


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"import sys; {code}; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return result.stdout.split()


def test_runtimes_load_no_framework_in_a_real_interpreter() -> None:
    loaded = _loaded_after(
        "import wire, offload_policy, edgesplit.bundle, edgesplit.config_load, "
        "edgesplit.app.cli, edgesplit.app.edge, edgesplit.app.cloud, edgesplit.app.cli_edge, "
        "edgesplit.app.cli_cloud, edge_node.node, edge_node.inputs, cloud_node.server, "
        "cloud_node.backends"
    )
    assert sorted(set(loaded) & HEAVY) == []
    # The edge and the cloud commands, assembled, load neither experiments nor the offline side.
    assert "experiments" not in loaded
    assert "partitioner" not in loaded


def test_the_cli_loads_no_experiment_until_one_runs() -> None:
    """The experiments (namespaces, tc) and the offline side load with their commands."""
    loaded = _loaded_after(
        "from edgesplit.app.cli import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output"
    )
    assert "experiments" not in loaded
    assert "partitioner" not in loaded
    assert sorted(set(loaded) & HEAVY) == []
    # Nor the runtimes' own weight: `edgesplit --help` starts in a fraction of a second.
    assert sorted(set(loaded) & {"numpy", "zmq", "onnxruntime", "wire"}) == []


def test_public_surfaces_are_exported() -> None:
    import edgesplit
    import offload_policy

    for module in (edgesplit, offload_policy):
        assert sorted(module.__all__) == sorted(set(module.__all__))
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    assert issubclass(edgesplit.WireError, edgesplit.EdgesplitError)


def test_every_role_is_a_package_the_wheel_ships() -> None:
    import tomllib
    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(find_packages(where=str(ROOT), include=include))
    roles = {
        "edgesplit",
        "edgesplit.app",
        "wire",
        "offload_policy",
        "partitioner",
        "edge_node",
        "cloud_node",
        "experiments",
    }
    assert roles <= shipped, roles - shipped
    assert not any(p.startswith("tests") for p in shipped)
