"""Large-world generator (`kat simulate --world N`): TP-8 replicas, one faulty rank, a real bundle."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from kat.evals.cli.simulate import register
from kat.evals.simulate import load_ground_truth
from kat.evals.simulate.categories import FAULT_CATEGORIES, Category, Severity
from kat.evals.simulate.faults import make_plan, supported
from kat.evals.simulate.topology import build_layout
from kat.evals.simulate.world import generate_world, world_task
from kat.tools.outpost import detect
from kat.tools.telemetry import open_bundle


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # keep sub-commands (typer flattens single-command apps)
    return app


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_world_layout_is_tp8_groups_one_host_each() -> None:
    lay = build_layout(world_task(1024))
    assert lay.world_size == 1024 and len(lay.hosts) == 128 and len(lay.tp_groups) == 128
    for g in lay.tp_groups:
        assert len(g) == 8 and len({lay.workers[r].host for r in g}) == 1


def test_exactly_one_faulty_rank_anywhere_in_the_world() -> None:
    """Per-rank faults hit one rank; over seeds the rank lands in many different groups."""
    lay = build_layout(world_task(1024))
    for cat in FAULT_CATEGORIES:
        if supported(cat, lay):
            continue
        groups = set()
        for seed in range(12):
            plan = make_plan(cat, Severity.MODERATE, lay, 10, np.random.default_rng(seed), single_rank=True)
            if cat == Category.KV_CACHE_PRESSURE:  # replica-wide by nature: one whole TP group
                assert plan.affected_ranks in lay.tp_groups
            else:
                assert len(plan.affected_ranks) == 1, (cat, seed, plan.affected_ranks)
            groups.add(plan.affected_ranks[0] // 8)
        assert len(groups) >= 6, (cat, groups)


def test_world_64_bundle_validates_and_detect_names_the_rank_first(tmp_path: Path) -> None:
    out = tmp_path / "w64"
    res = CliRunner().invoke(
        _app(),
        ["simulate", "--scenario", "gpu_thermal_throttling", "--world", "64", "--seed", "3", "--severity", "moderate", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    gt = load_ground_truth(out / "ground_truth.json")
    assert gt.category == "gpu_thermal_throttling" and len(gt.affected_ranks) == 1
    assert len(list((out / "traces").glob("rank-*.json.gz"))) == 64
    b = open_bundle(out, cache_dir=tmp_path / "cache")
    assert b.ranks == list(range(64))
    topo = b.manifest.topology
    assert len(topo.hosts) == 8 and len(topo.groups.tp) == 8
    assert (out / "metrics.parquet").exists() and (out / "logs.jsonl").stat().st_size > 0
    result = detect(b)
    assert result.suspect_ranks and result.suspect_ranks[0] == gt.affected_ranks[0], (result.suspect_ranks[:5], gt.affected_ranks)


def test_world_bytes_do_not_depend_on_the_process_count(tmp_path: Path) -> None:
    a = generate_world("runtime_stall", 16, 5, tmp_path / "one", workers=1)
    b = generate_world("runtime_stall", 16, 5, tmp_path / "two", workers=2)
    assert a.affected_ranks == b.affected_ranks and len(a.affected_ranks) == 1
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    generate_world("runtime_stall", 16, 6, tmp_path / "other", workers=1)
    assert _digest(tmp_path / "other")["traces/rank-0.json.gz"] != _digest(tmp_path / "one")["traces/rank-0.json.gz"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scenario", "none", "--world", "12"], "--world 12: must be a multiple of 8"),
        (["--scenario", "none", "--world", "4"], "--world 4: must be a multiple of 8"),
        (["--scenario", "none", "--world", "0"], "at least 8"),
        (["--scenario", "cosmic_rays", "--world", "16"], "unknown scenario 'cosmic_rays'; valid:"),
        (["--world", "16"], "--world needs --scenario"),
        (["--scenario", "none", "--world", "16", "--task", "x"], "drop --task"),
        (["--scenario", "none", "--world", "16", "--size", "huge"], "--size 'huge'"),
        (["--scenario", "runtime_stall", "--world", "16", "--severity", "extreme"], "--severity 'extreme'"),
        (["--scenario", "network_congestion", "--world", "16"], "inter-node"),
    ],
)
def test_world_bad_arguments_give_one_line_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    res = CliRunner().invoke(_app(), ["simulate", *args, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.output
    assert "Traceback" not in res.output and not (tmp_path / "x" / "traces").exists()
