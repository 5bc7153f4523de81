"""Every experiment run for real at a tiny size: files written, figures that physics decides.

The runs use the untrained built-in model (seconds to profile) with the edge
in a real CPU cgroup, real shaped links in network namespaces, real edge
workers and cloud nodes, and a real local Ray cluster; sizes are cut by
``Settings.overrides``. The assertions check what a broken experiment would
get wrong: the link's rate shows in the latency, the oracle is the oracle,
batteries only drain, the files hold what the report says.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from edgesplit.bundle import Cut, CutTensor
from edgesplit.errors import ConfigError
from experiments.cpulimit import cpu_limit_support
from experiments.harness import Settings
from experiments.shaped_link import netns_support

MODEL = "branchynet-untrained"
ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow

needs_cgroup = pytest.mark.skipif(
    cpu_limit_support() is not None, reason=f"no CPU cgroup: {cpu_limit_support()}"
)
needs_netns = pytest.mark.skipif(netns_support() is not None, reason=f"{netns_support()}")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Tiny settings sharing one cache of profiles and bundles."""
    root = tmp_path_factory.mktemp("experiments")
    return Settings(out=root / "out", quick=True, models=(MODEL,), cache=root / "cache")


def settings(base: Settings, **changes: Any) -> Settings:
    from dataclasses import replace

    return replace(base, **changes)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def check_outputs(folder: Path, *csvs: str) -> dict[str, Any]:
    """The report, settings.json, the CSVs and every PNG exist and are what they claim."""
    report = (folder / "report.md").read_text()
    assert "## Measured or modelled" in report
    assert "Versions: python" in report and "onnxruntime" in report
    meta = json.loads((folder / "settings.json").read_text())
    assert meta["settings"]["seed"] == 0 and meta["machine"]["cores"]
    for name in csvs:
        assert read_csv(folder / name), name
        assert f"`{name}`" in report
    pngs = list(folder.glob("*.png"))
    assert pngs
    for png in pngs:
        assert png.read_bytes()[:8] == PNG, png
    return meta


@needs_cgroup
def test_layers(base: Settings) -> None:
    from experiments.bundles import layer_profile
    from experiments.exp_layers import run

    run(base, Console(quiet=True))
    folder = base.out / "layers"
    check_outputs(folder, "layers.csv")
    rows = read_csv(folder / "layers.csv")
    profile, reused = layer_profile(MODEL, base, None)
    assert reused and profile.path.name == "edge-layers.json"  # no cut timed for this one
    assert len(rows) == len(profile.layers) > 5
    assert all(float(r["latency_ms"]) > 0 and float(r["output_kib"]) > 0 for r in rows)
    assert abs(sum(float(r["latency_share"]) for r in rows) - 1.0) < 1e-3


@needs_cgroup
def test_bandwidth_sweep(base: Settings) -> None:
    from experiments.exp_bandwidth_sweep import POLICIES, run

    run(settings(base, overrides={"points": 7, "requests": 30}), Console(quiet=True))
    folder = base.out / "bandwidth-sweep"
    check_outputs(folder, "bandwidth_sweep.csv")
    rows = read_csv(folder / "bandwidth_sweep.csv")
    assert len(rows) == 7 * len(POLICIES)
    cloud = [float(r["mean_ms"]) for r in rows if r["policy"] == "cloud-only"]
    assert all(a > b for a, b in zip(cloud, cloud[1:], strict=False)), cloud
    for mbps in {r["uplink_mbps"] for r in rows}:
        at = {r["policy"]: float(r["mean_ms"]) for r in rows if r["uplink_mbps"] == mbps}
        # the oracle may choose either baseline, so it is never slower than both
        assert at["oracle"] <= min(at["edge-only"], at["cloud-only"]) * 1.05 + 0.05, at


@needs_cgroup
@needs_netns
def test_split_curves_on_a_shaped_link(base: Settings) -> None:
    from experiments.exp_split_curves import run

    tiny = {"requests": 2, "policy_requests": 3, "cap_s": 0.6}
    run(settings(base, overrides=tiny), Console(quiet=True))
    folder = base.out / "split-curves"
    check_outputs(folder, "split_curves.csv", "policies.csv", "headline.csv")
    rows = read_csv(folder / "split_curves.csv")
    measured_3g = [r for r in rows if r["network"] == "3G" and r["measured"] == "True"]
    big = max(measured_3g, key=lambda r: int(r["bytes"]))
    assert int(big["bytes"]) >= 16_384
    same = {r["network"]: r for r in rows if r["cut"] == big["cut"] and r["codec"] == big["codec"]}
    # the largest tensor measured on 3G takes its time on the link: 17x more than on WiFi
    # (a few ms of the edge's CFS jitter on either side do not matter at this size)
    g3, wifi = float(same["3G"]["median_ms"]), float(same["WiFi"]["median_ms"])
    assert g3 > 5 * wifi, (big["cut"], g3, wifi)
    assert 0.5 < g3 / float(same["3G"]["predicted_ms"]) < 2.0
    skipped = [r for r in rows if r["measured"] == "False"]
    assert all(float(r["predicted_ms"]) > 600 for r in skipped)
    assert all(r["median_ms"] in ("", "nan") for r in skipped)
    head = read_csv(folder / "headline.csv")
    assert {r["network"] for r in head} == {"3G", "LTE", "WiFi"}
    assert all(float(r["speedup_vs_cloud"]) > 0 for r in head)
    assert "Latency-optimal and energy-optimal" in (folder / "report.md").read_text()


@needs_cgroup
@pytest.mark.parametrize(
    "shaper",
    [pytest.param("tc", marks=needs_netns), "relay"],
)
def test_traces_replayed_live(base: Settings, tmp_path: Path, shaper: str) -> None:
    from experiments.exp_traces import POLICIES, run

    trace = tmp_path / "step.tsv"
    trace.write_text("0 0.05\n4 0.0008\n8 0.0008\n")  # x10: 0.5 Mbit/s, then 8 kbit/s at 4 s
    tiny = {"duration_s": 8.0, "scales": (10.0,), "interval_s": 0.25}
    out = tmp_path / "out"
    run(
        settings(base, out=out, traces=(trace,), overrides=tiny, shaper=shaper), Console(quiet=True)
    )
    folder = out / "traces"
    check_outputs(folder, "requests.csv", "summary.csv")
    report = (folder / "report.md").read_text()
    assert ("token-bucket relay" in report) == (shaper == "relay")
    rows = read_csv(folder / "requests.csv")
    assert {r["link"] for r in rows} == {shaper}
    assert {r["policy"] for r in rows} == set(POLICIES)
    summary = {r["policy"]: r for r in read_csv(folder / "summary.csv")}
    assert float(summary["oracle"]["regret"]) == 0.0
    oracle = [r for r in rows if r["policy"] == "oracle"]
    assert {round(float(r["estimate_bps"])) for r in oracle} <= {500_000, 8_000}
    cloud = [r for r in rows if r["policy"] == "cloud-only" and r["finished"] == "cloud"]
    before = sorted(float(r["latency_s"]) for r in cloud if float(r["t_s"]) < 3.5)
    after = sorted(float(r["latency_s"]) for r in cloud if float(r["t_s"]) > 4.5)
    assert before and after
    # the same input at 0.5 Mbit/s, then at 8 kbit/s: the link followed the trace
    assert after[len(after) // 2] > 4 * before[len(before) // 2], (before, after)


@needs_cgroup
def test_battery_drains(base: Settings) -> None:
    from experiments.exp_battery import POLICIES, run

    run(settings(base, battery_wh=0.002, battery_hours=0.5), Console(quiet=True))
    folder = base.out / "battery"
    check_outputs(folder, "battery_levels.csv", "served.csv")
    levels = read_csv(folder / "battery_levels.csv")
    for label, _, _ in POLICIES:
        series = [float(r["level"]) for r in levels if r["policy"] == label]
        assert all(a >= b for a, b in zip(series, series[1:], strict=False)), label
        assert series[-1] <= 1e-9, label
    served = {r["policy"]: int(r["inferences"]) for r in read_csv(folder / "served.csv")}
    # a 0.1 ms model on the device costs ~1 mJ; sending 4 KiB costs tens: edge-only lasts
    assert served["edge-only"] > 5 * served["cloud-only"] > 0


@needs_cgroup
def test_drift_is_learned_and_followed(base: Settings) -> None:
    from experiments.exp_drift import CORRECTED, ORACLE, POLICIES, run

    tiny = {"duration_s": 60.0, "edge_drift": "15:2,40:1"}
    run(settings(base, overrides=tiny), Console(quiet=True))
    folder = base.out / "drift"
    check_outputs(folder, "requests.csv", "phases.csv")
    rows = read_csv(folder / "requests.csv")
    assert {r["policy"] for r in rows} == {label for label, _, _ in POLICIES}
    for case in {r["case"] for r in rows}:
        told = {
            float(r["t_s"]): float(r["edge_factor_told"])
            for r in rows
            if r["case"] == case and r["policy"] == CORRECTED
        }
        # a request every 0.25 s: 2x learned before the recovery at 40 s, 1x by the end
        assert 1.8 < told[39.75] < 2.2 and 0.9 < told[59.75] < 1.1, case
    phases = read_csv(folder / "phases.csv")
    assert {r["phase"] for r in phases} == {"1", "2", "3"}
    assert all(float(r["vs_oracle"]) == 1.0 for r in phases if r["policy"] == ORACLE)
    assert "Goal: the corrected policy within 1.10x" in (folder / "report.md").read_text()


@needs_cgroup
def test_cloud_scaling_on_ray(base: Settings) -> None:
    from experiments.exp_cloud_scaling import SERIES, run

    tiny = {"edges": (1, 4), "seconds": 1.0, "warmup_s": 0.5, "calibrate_s": 1.0}
    run(settings(base, overrides=tiny), Console(quiet=True))
    folder = base.out / "cloud-scaling"
    meta = check_outputs(folder, "cloud_scaling.csv", "cloud_scaling_cuts.csv")
    rows = read_csv(folder / "cloud_scaling.csv")
    assert [(r["node"], r["load"], r["edges"]) for r in rows] == [
        (n, load, str(e)) for n, load in SERIES for e in (1, 4)
    ]
    # The SLO was measured (5x one edge's cloud-only latency) and applied to every point.
    slo = meta["settings"]["slo_ms"]
    assert meta["settings"]["slo_measured"] and 0 < slo < 10_000
    assert {float(r["slo_ms"]) for r in rows} == {slo}
    for r in rows:
        assert float(r["throughput"]) > 0 and float(r["lost"]) == 0, r
        assert 0 <= float(r["slo_attainment"]) <= 1, r
        assert float(r["batch_mean"]) >= 1, r
        assert float(r["p50_ms"]) <= float(r["p99_ms"]), r
    # Mixed cuts: 4 edges round-robin over the mix (the cloud-only cut and 3 inner ones) send
    # one cut each; cloud-only edges all send the input.
    mix = meta["settings"]["mix"]
    assert len(mix) == 4 and mix[0] == "c00"
    cuts = read_csv(folder / "cloud_scaling_cuts.csv")
    for n, load in SERIES:
        at4 = {r["cut"]: r for r in cuts if (r["node"], r["load"], r["edges"]) == (n, load, "4")}
        expected = {"c00": "4"} if load == "cloud-only" else {c: "1" for c in mix}
        assert {c: r["edges_on_cut"] for c, r in at4.items()} == expected, (n, load)
        # Every request of the point is in one cut's row.
        total = next(r for r in rows if (r["node"], r["load"], r["edges"]) == (n, load, "4"))
        assert sum(int(r["requests"]) for r in at4.values()) == int(total["requests"])
    # A batch holds requests of one cut, so with one edge a cut it never exceeds 1.
    assert all(
        float(r["batch_mean"]) == 1 for r in cuts if r["load"] == "mixed cuts" and r["edges"] == "4"
    )


def _cut(index: int, kind: str, sent: float) -> Cut:
    return Cut(
        id=f"c{index:02d}", index=index, kind=kind,
        tensors=(CutTensor(f"t{index}", f"t{index}", (8,), "float32", 32),),
        head=(), exits=(), tail=None if kind == "output" else "tail",
        raw_bytes=32, encoded_bytes={"int8+lz4": sent},
    )  # fmt: skip


def test_cloud_scaling_mix_assignment_and_options(tmp_path: Path) -> None:
    from experiments.cloud_scaling_plan import Options, assign, chosen_mix, default_mix, options

    sent = {0: 600, 1: 800, 2: 700, 3: 200, 4: 200, 5: 90, 6: 45, 7: 22, 8: 0.5, 9: 0.5}
    cuts = [_cut(i, "input" if i == 0 else "inner", b) for i, b in sent.items()]
    cuts.append(_cut(10, "output", 0))
    # The 3 inner cuts cheapest to send, in depth order, after the cloud-only cut; c09 sends
    # no less than the shallower c08 and is skipped (more edge work, nothing saved).
    assert [c.id for c in default_mix(cuts)] == ["c00", "c06", "c07", "c08"]
    # Too few cuts that save bytes: the others fill in (c04 sends as much as c03).
    few = default_mix(cuts[:5] + cuts[10:], count=4)
    assert [c.id for c in few] == ["c00", "c01", "c02", "c03", "c04"]
    mix = default_mix(cuts)
    assert [c.id for c in assign(mix, 6, "round-robin", 0)] == ["c00", "c06", "c07", "c08"] + [
        "c00", "c06"
    ]  # fmt: skip
    drawn = [c.id for c in assign(mix, 64, "random", 7)]
    assert drawn == [c.id for c in assign(mix, 64, "random", 7)]  # seeded
    assert set(drawn) == {c.id for c in mix}  # 64 draws of 4 cuts miss none (p < 1e-7)
    given = options(Settings(out=tmp_path, overrides={"cuts": "c09, c00", "slo_ms": 50}))
    assert given == Options(slo_ms=50.0, cuts=("c09", "c00"))
    assert [c.id for c in chosen_mix(cuts, given)] == ["c00", "c09"]
    assert options(Settings(out=tmp_path)) == Options()
    with pytest.raises(ConfigError, match="--cuts c99: c99 is not an offloadable cut"):
        chosen_mix(cuts, Options(cuts=("c99",)))
    with pytest.raises(ConfigError, match="--cuts c10: c10 is not an offloadable cut"):
        chosen_mix(cuts, Options(cuts=("c10",)))  # edge-only: nothing to send
    with pytest.raises(ConfigError, match="--slo-ms -1.0"):
        Options(slo_ms=-1.0)
    with pytest.raises(ConfigError, match="--cut-assign sideways"):
        Options(assign="sideways")


def test_summary_counts_busy_and_losses_as_slo_misses_and_means_batches() -> None:
    from experiments.loadgen import Sample, summarize, summarize_by_cut

    samples = [Sample(0, 0.010, "ok", 0.001, "c00", 4) for _ in range(4)] + [
        Sample(0, 0.200, "ok", 0.001, "c09", 1),  # late: a miss
        Sample(0, 0.001, "busy", 0.0, "c09"),  # the edge runs it itself: a miss
        Sample(0, 30.0, "lost", 0.0, "c09"),
    ]
    figures = summarize(samples, 2.0, slo_s=0.1)
    assert figures["slo_attainment"] == 4 / 7  # 4 results within 100 ms of 7 requests
    assert figures["batch_mean"] == 5 / 2  # 5 results in 2 batches (one of 4, one of 1)
    assert figures["throughput"] == 5 / 2.0 and figures["requests"] == 7
    assert (figures["busy"], figures["lost"], figures["other"]) == (1, 1, 0)
    by_cut = summarize_by_cut(samples, 2.0, slo_s=0.1)
    assert by_cut["c00"]["slo_attainment"] == 1 and by_cut["c09"]["slo_attainment"] == 0
    assert by_cut["c00"]["batch_mean"] == 4 and by_cut["c09"]["batch_mean"] == 1
    assert "slo_attainment" not in summarize(samples, 2.0)


def test_relay_paces_the_uplink_and_follows_a_new_rate() -> None:
    import socket
    import threading
    import time

    from experiments.relay import DelayRelay

    sink = socket.create_server(("127.0.0.1", 0))
    received: list[tuple[float, int]] = []

    def drain() -> None:
        conn, _ = sink.accept()
        while chunk := conn.recv(65536):
            received.append((time.monotonic(), len(chunk)))
        conn.close()

    threading.Thread(target=drain, daemon=True).start()
    relay = DelayRelay(("127.0.0.1", 0), sink.getsockname()[:2], 0.0, uplink_bps=2e6)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(relay.address) as c:
            began = time.monotonic()
            c.sendall(b"x" * 250_000)  # 1.0 s at 2 Mbit/s
            while sum(n for _, n in received) < 250_000:
                time.sleep(0.01)
            first = time.monotonic() - began
            relay.set_rate(8e6)
            began = time.monotonic()
            c.sendall(b"y" * 250_000)  # 0.25 s at 8 Mbit/s
            while sum(n for _, n in received) < 500_000:
                time.sleep(0.01)
            second = time.monotonic() - began
    finally:
        relay.stop()
        sink.close()
    assert 0.9 < first < 1.3, first
    assert 0.2 < second < 0.45, second


def test_traces_default_to_the_repository_copy_without_shared(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import experiments.harness as harness
    from experiments.exp_traces import pick_traces

    monkeypatch.setattr(harness, "SHARED_TRACES", tmp_path / "absent")
    assert harness.default_traces() == harness.REPO_TRACES
    picked = pick_traces(Settings(out=tmp_path), 1)
    assert {t.family for t, _ in picked} == {"hsdpa", "fcc"}
    assert all(path.is_relative_to(harness.REPO_TRACES) for _, path in picked)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgesplit", "experiment", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "experiment 'nope': unknown; choose from layers"),
        (["layers", "--edge-cpu-quota", "100"], "--edge-cpu-quota 100.0: expected 0.01..64"),
        (["traces", "--trace", "/no/such.tsv"], "/no/such.tsv: no such trace file"),
        (["battery", "--battery-wh", "-1"], "--battery-wh -1.0: expected a number > 0"),
        (["layers", "--device", "toaster"], "--device toaster"),
    ],
)
def test_cli_refuses_bad_input(args: list[str], message: str, tmp_path: Path) -> None:
    done = _cli(*args, "--out", str(tmp_path))
    assert done.returncode == 1, done.stderr
    assert message in " ".join(done.stderr.split()), done.stderr
    assert not list(tmp_path.iterdir())


def test_cli_help_lists_every_experiment() -> None:
    from experiments.catalog import CATALOG, NAMES

    done = _cli("--help")
    assert done.returncode == 0
    for name in NAMES:
        assert name in done.stdout
    for e in CATALOG:  # the full size's time, said before a full run starts
        assert e.load().FULL_TIME


def test_worker_refuses_a_bad_plan(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text("{not json")
    done = subprocess.run(
        [sys.executable, "-m", "experiments.worker", str(plan)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1
    assert "worker: JSONDecodeError" in done.stderr


def test_index_collects_the_headlines(tmp_path: Path) -> None:
    from experiments.catalog import CATALOG
    from experiments.harness import Results, write_index

    s = Settings(out=tmp_path)
    for e in CATALOG[:2]:
        r = Results(e.name, e.summary, s, Console(quiet=True))
        r.section(f"Headline: {e.name} figure", f"| a |\n|---|\n| {e.name} 42 |")
        r.section("Other", "not copied")
        r.finish()
    index = write_index(s, CATALOG[:2], 12.0).read_text()
    for e in CATALOG[:2]:
        assert f"[report]({e.name}/report.md)" in index
        assert f"| {e.name} 42 |" in index
    assert "not copied" not in index
