"""What every experiment shares: its results folder, CSV, figures, report and provenance.

An experiment writes into ``OUT/NAME/``: one or more CSV files (every figure
the plots show, one row per point), PNG figures, and ``report.md``: what was
run, the headline numbers, which figures were measured on the wire and
which come from models, and the versions, machine and settings needed to
reproduce it. Seeds are fixed (``--seed``).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from edgesplit.errors import ConfigError, EdgesplitError

ROOT = Path(__file__).resolve().parents[1]
#: The project's trace collection, checked out beside the repository ...
SHARED_TRACES = ROOT.parent / "shared" / "traces"
#: ... else the three real traces the repository carries for its tests.
REPO_TRACES = ROOT / "tests" / "data" / "traces"


def default_traces() -> Path:
    """Where traces come from without ``--trace``: ../shared/traces, else the repository's copy."""
    return SHARED_TRACES if SHARED_TRACES.is_dir() else REPO_TRACES


#: Mobile uplink bandwidths of Neurosurgeon's three networks (Kang et al., ASPLOS 2017,
#: Table 3, from the measurements of Huang et al., MobiSys 2012), Mbit/s.
NETWORKS: dict[str, float] = {"3G": 1.1, "LTE": 5.85, "WiFi": 18.88}
#: The radio power model of each network (offload_policy.energy.RADIOS).
NETWORK_RADIO: dict[str, str] = {"3G": "3g", "LTE": "lte", "WiFi": "wifi"}

#: Packages whose versions every report records.
_PACKAGES = ("edgesplit", "numpy", "onnx", "onnxruntime", "pyzmq", "torch", "ray", "matplotlib")


class ExperimentError(EdgesplitError):
    """An experiment could not finish: a node or worker failed, a step overran."""


@dataclass(frozen=True)
class Settings:
    """What the user chose; recorded in every report.

    Attributes:
        out: the results root; each experiment writes ``out/NAME``.
        quick: the reduced size (``all --quick`` in under 15 minutes).
        seed: seed of inputs, exit draws and anything else random.
        models: models to run (``None``: the experiment's default).
        traces: trace files or folders (``None``: ../shared/traces).
        edge_cpu_quota: the edge runs in a CPU cgroup of this fraction of one
            core (a Jetson-class device on this host); ``None``: unlimited.
        device: the edge device's power model (offload_policy.energy.DEVICES).
        shaper: how links are shaped: ``auto`` (tc in network namespaces, else
            the in-process token bucket), ``tc`` or ``relay``.
        battery_wh: capacity of the simulated battery (``battery``).
        battery_hours: how long the battery-aware policy tries to make it last.
        cache: where profiles and bundles are kept between runs.
        overrides: sizes that replace an experiment's own (tests make runs tiny).
        price_cloud_s: price of one second of tail compute in the cloud (cost figures).
        price_gb: price of one GB the cloud receives (cost figures).
    """

    out: Path
    quick: bool = False
    seed: int = 0
    models: tuple[str, ...] | None = None
    traces: tuple[Path, ...] | None = None
    edge_cpu_quota: float | None = 0.1
    device: str = "jetson-nano-10w"
    shaper: str = "auto"
    battery_wh: float = 2.0
    battery_hours: float = 2.0
    cache: Path = field(default_factory=lambda: _default_cache())
    overrides: dict[str, Any] = field(default_factory=dict)
    price_cloud_s: float = 0.0
    price_gb: float = 0.0

    def __post_init__(self) -> None:
        if self.edge_cpu_quota is not None and not 0.01 <= self.edge_cpu_quota <= 64:
            raise ConfigError(
                f"--edge-cpu-quota {self.edge_cpu_quota}: expected 0.01..64 (a fraction of "
                "one core) or 0 for no limit"
            )
        if self.shaper not in ("auto", "tc", "relay"):
            raise ConfigError(f"--shaper {self.shaper}: expected auto, tc or relay")
        for name in ("battery_wh", "battery_hours"):
            value = getattr(self, name)
            if not 0 < value < 1e6:
                raise ConfigError(f"--{name.replace('_', '-')} {value}: expected a number > 0")
        for name in ("price_cloud_s", "price_gb"):
            value = getattr(self, name)
            if not 0 <= value < math.inf:
                raise ConfigError(f"--{name.replace('_', '-')} {value}: expected a number >= 0")
        from offload_policy.energy import device_power

        try:
            device_power(self.device)
        except Exception as exc:  # PolicyError: name the flag
            raise ConfigError(f"--device {self.device}: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values."""
        data = asdict(self)
        data["overrides"] = {k: str(v) for k, v in self.overrides.items()}
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()} | {
            "traces": None if self.traces is None else [str(t) for t in self.traces]
        }


def sized(settings: Settings, base: dict[str, Any]) -> dict[str, Any]:
    """An experiment's sizes with the settings' overrides applied."""
    return {**base, **{k: v for k, v in settings.overrides.items() if k in base}}


def _default_cache() -> Path:
    base = os.environ.get("EDGESPLIT_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "edgesplit") / "experiments"


def versions() -> dict[str, str]:
    """Installed versions of the packages the results depend on."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_commit() -> str:
    """The repository's commit (``+dirty`` with local changes), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def machine() -> dict[str, str]:
    """CPU model, cores, memory and kernel of this machine."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except (OSError, ValueError):
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "kernel": platform.release(),
        "hostname": platform.node(),
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats as given (format them before)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Results:
    """One experiment's results folder; see the module docstring.

    ``measured(...)`` and ``modelled(...)`` record, for the report, which
    figures come from where; ``section(title, text)`` adds prose or tables;
    ``finish()`` writes ``report.md`` and ``settings.json``.
    """

    def __init__(self, name: str, title: str, settings: Settings, console: Console) -> None:
        self.name, self.title, self.settings, self.console = name, title, settings, console
        self.dir = settings.out / name
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {settings.out}: cannot create {self.dir}: {exc}") from None
        # What an earlier run left here would mix with this run's files.
        for stale in (*self.dir.glob("*.csv"), *self.dir.glob("*.png"), *self.dir.glob("*.md")):
            stale.unlink()
        (self.dir / "settings.json").unlink(missing_ok=True)
        self.began = time.perf_counter()
        self.started = dt.datetime.now(dt.UTC)
        self.files: list[Path] = []
        self.sections: list[tuple[str, str]] = []
        self.provenance: list[tuple[str, str, str]] = []
        self.extra_settings: dict[str, Any] = {}
        self.headline: dict[str, Any] = {}
        self.finish_path = self.path("report.md")

    def path(self, filename: str) -> Path:
        """A file in the results folder."""
        return self.dir / filename

    def write_csv(self, filename: str, rows: Sequence[Mapping[str, Any]]) -> Path:
        """``rows`` (dicts with the same keys, in order) to ``filename``; its path."""
        path = self.path(filename)
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(v) for k, v in row.items()})
        self.files.append(path)
        return path

    @contextmanager
    def figure(
        self, filename: str, *subplots: int, size: tuple[float, float] = (10, 6)
    ) -> Iterator[Any]:
        """A matplotlib (figure, axes) saved to ``filename`` as PNG at the end of the block."""
        plt = pyplot()
        fig, axes = plt.subplots(*(subplots or (1, 1)), figsize=size, squeeze=False)
        try:
            yield fig, axes
            fig.tight_layout()
            path = self.path(filename)
            fig.savefig(path, dpi=110)
            self.files.append(path)
        finally:
            plt.close(fig)

    def measured(self, what: str, how: str) -> None:
        """Record that ``what`` was measured, and how."""
        self.provenance.append(("measured", what, how))

    def modelled(self, what: str, how: str) -> None:
        """Record that ``what`` comes from a model, and which."""
        self.provenance.append(("modelled", what, how))

    def section(self, title: str, text: str) -> None:
        """A section of the report."""
        self.sections.append((title, text.strip()))

    def policy_terms(self, manifest: Any, label: str = "") -> None:
        """Say, in the report, the accuracy floor in force and the cloud's prices."""
        from offload_policy.cost import default_accuracy_floor, whole_model_accuracy

        whole = whole_model_accuracy(manifest)
        floor = default_accuracy_floor(manifest)
        if math.isnan(whole):
            text = "none: the bundle's calibration has no labels, so no accuracy is predicted"
        else:
            text = f"{floor:.3f}, the whole model's predicted accuracy ({whole:.3f}) less one point"
        s = self.settings
        prices = (
            f"cloud cost priced at {s.price_cloud_s:g} per compute-second and {s.price_gb:g} "
            "per GB received (`--price-cloud-s`, `--price-gb`)"
            if s.price_cloud_s or s.price_gb
            else "no cloud prices set: cost figures are 0 (`--price-cloud-s`, `--price-gb`)"
        )
        self.section(
            f"Policy terms ({label})" if label else "Policy terms",
            f"Accuracy floor in force: {text}. The policies may "
            f"not choose a decision predicted below it. {prices.capitalize()}.",
        )

    def finish(self) -> Path:
        """Write ``report.md`` and ``settings.json``; the report's path."""
        elapsed = time.perf_counter() - self.began
        env: dict[str, Any] = {
            "experiment": self.name,
            "started_utc": self.started.isoformat(timespec="seconds"),
            "elapsed_s": round(elapsed, 1),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "commit": git_commit(),
            "settings": self.settings.to_json() | self.extra_settings,
            "versions": versions(),
            "machine": machine(),
            "headline": self.headline,
        }
        (self.path("settings.json")).write_text(json.dumps(env, indent=2, default=str) + "\n")
        lines = [f"# {self.title}", ""]
        for title, text in self.sections:
            lines += [f"## {title}", "", text, ""]
        if self.provenance:
            lines += ["## Measured or modelled", ""]
            lines += [f"- **{kind}**: {what}: {how}" for kind, what, how in self.provenance]
            lines.append("")
        lines += ["## Files", ""]
        lines += [f"- `{p.name}`" for p in self.files]
        lines += [
            "",
            "## Reproduce",
            "",
            f"Run `{env['command']}` at commit `{env['commit']}` "
            f"({env['started_utc']}, {elapsed:.0f} s).",
            "",
            "Settings: " + ", ".join(f"{k}={v}" for k, v in env["settings"].items()),
            "",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
            "",
            "Machine: " + ", ".join(f"{k} {v}" for k, v in env["machine"].items()),
            "",
        ]
        report = self.path("report.md")
        report.write_text("\n".join(lines))
        self.finish_path = report
        self.console.print(f"[green]{self.name}[/green]: {elapsed:.0f} s, report {report}")
        return report


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return value


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; a clear error when it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "experiments draw with matplotlib: pip install 'edgesplit[experiments]'"
        ) from None
    return plt


@contextmanager
def progress_bar(console: Console, description: str, total: int) -> Iterator[Callable[..., None]]:
    """A rich progress bar; yields ``advance(n=1, note="")``."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total, note="")

        def advance(n: int = 1, note: str = "") -> None:
            bar.update(task, advance=n, note=note)

        yield advance


def write_index(settings: Settings, entries: Sequence[Any], elapsed_s: float) -> Path:
    """``OUT/README.md``: every experiment's report, time, and its headline sections."""
    lines = [
        "# edgesplit experiments",
        "",
        f"{len(entries)} experiments in {elapsed_s / 60:.1f} min "
        f"({'quick' if settings.quick else 'full'} size, seed {settings.seed}, commit "
        f"{git_commit()}).",
        "",
    ]
    rows = []
    for e in entries:
        meta_path = settings.out / e.name / "settings.json"
        took = (
            json.loads(meta_path.read_text()).get("elapsed_s", "?") if meta_path.is_file() else "?"
        )
        rows.append([e.name, e.summary, f"{took} s", f"[report]({e.name}/report.md)"])
    lines += [markdown_table(["experiment", "what", "time", "report"], rows), ""]
    for e in entries:
        report = settings.out / e.name / "report.md"
        if not report.is_file():
            continue
        keep = False
        for line in report.read_text().splitlines():
            if line.startswith("## "):
                keep = line.startswith("## Headline")
                if keep:
                    lines += ["", f"## {e.name}: {line[3:]}"]
                continue
            if keep:
                lines.append(line)
    path = settings.out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
