"""Dependencies point one way (DESIGN.md): checked on the source and on a real interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {
    "edgesplit",
    "wire",
    "offload_policy",
    "partitioner",
    "edge_node",
    "cloud_node",
    "experiments",
}
HEAVY = {"torch", "torchvision", "sklearn", "scipy", "onnx"}

# package -> modules of ours it may import (prefixes)
ALLOWED = {
    "wire": {"wire", "edgesplit.errors"},
    "offload_policy": {"offload_policy", "edgesplit.errors", "edgesplit.bundle"},
    "edge_node": {
        "edge_node",
        "wire",
        "offload_policy",
        "edgesplit.errors",
        "edgesplit.bundle",
        "edgesplit.onnxrt",
        "edgesplit.security",
        "edgesplit.metrics",
        # Releases (over-the-air bundle updates): the bundle reader's packed form.
        "edgesplit.release",
    },
    "cloud_node": {
        "cloud_node",
        "wire",
        "edgesplit.errors",
        "edgesplit.bundle",
        "edgesplit.onnxrt",
        "edgesplit.security",
        "edgesplit.metrics",
        "edgesplit.release",
        # The Ray tier's replicas pick the execution providers the edge does.
        "edgesplit.providers",
    },
}
ROOT_MODULES = {
    "edgesplit/errors.py": set(),
    "edgesplit/bundle.py": {"edgesplit.errors", "edgesplit.manifest_json", "edgesplit.schemas"},
    "edgesplit/schemas/__init__.py": {"edgesplit.errors"},
    "edgesplit/manifest_json.py": {"edgesplit.errors", "edgesplit.bundle"},
    "edgesplit/onnxrt.py": {"edgesplit.errors"},
    "edgesplit/security.py": {"edgesplit.errors"},
    "edgesplit/metrics.py": {"edgesplit.errors"},
    "edgesplit/release.py": {"edgesplit.errors", "edgesplit.bundle", "edgesplit.security"},
    # config.py reaches its loader and renderer inside functions only (they import it).
    "edgesplit/config.py": {"edgesplit.errors", "edgesplit.config_load", "edgesplit.config_render"},
    "edgesplit/config_load.py": {"edgesplit.errors", "edgesplit.config"},
    "edgesplit/config_render.py": {"edgesplit.config", "edgesplit.config_load"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(files: list[Path], allowed: set[str]) -> list[str]:
    found = []
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            if top in HEAVY:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
            elif top in OURS and not any(name == a or name.startswith(a + ".") for a in allowed):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_runtime_packages_import_only_what_design_allows(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    assert _violations(files, ALLOWED[package]) == []


def test_root_modules_are_leaves() -> None:
    for rel, allowed in ROOT_MODULES.items():
        assert _violations([ROOT / rel], allowed) == [], rel


def test_runtimes_load_no_framework_in_a_real_interpreter() -> None:
    code = (
        "import sys, wire, offload_policy, edgesplit.bundle, edgesplit.app.runs, edgesplit.app.cli;"
        "import edge_node.node, edge_node.inputs, cloud_node.server, cloud_node.backends;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]"


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
        "wire",
        "offload_policy",
        "partitioner",
        "edge_node",
        "cloud_node",
        "experiments",
    }
    assert roles <= shipped, roles - shipped
    assert not any(p.startswith("tests") for p in shipped)
