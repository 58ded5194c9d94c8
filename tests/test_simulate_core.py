"""Simulator core: tasks as data, determinism, collective physics, CUDA-graph launches, CLI, suites."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from kat.evals.cli.simulate import register
from kat.evals.simulate import generate_incident, load_ground_truth, load_tasks
from kat.evals.simulate.suites import SUITES_DIR, load_suite, plan_suite
from kat.evals.simulate.topology import build_layout
from kat.tools.telemetry import open_bundle

TASK = "vllm-l70b-tp8-h100-decode-eager"


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_at_least_42_tasks_cover_the_space() -> None:
    tasks = load_tasks()
    assert len(tasks) >= 42
    for t in tasks.values():
        assert 8 <= t.world_size <= 64 and 1 <= t.n_hosts <= 4, t.name
        lay = build_layout(t)
        assert len(lay.workers) == t.world_size and len(lay.hosts) == t.n_hosts
        assert sorted(r for g in lay.tp_groups for r in g) == list(range(t.world_size))
    vals = lambda f: {getattr(t, f) for t in tasks.values()}  # noqa: E731
    assert vals("engine") == {"vllm", "sglang"} and vals("mode") == {"eager", "cuda_graph"}
    assert vals("workload") == {"prefill_heavy", "decode_heavy", "mixed"}
    assert {1, 2, 3, 4} <= {t.n_hosts for t in tasks.values()}
    assert any(t.pp > 1 for t in tasks.values()) and any(t.dp > 1 for t in tasks.values())


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_incident("host_cpu_contention", TASK, 3, a, size="tiny")
    generate_incident("host_cpu_contention", TASK, 3, b, size="tiny")
    generate_incident("host_cpu_contention", TASK, 4, c, size="tiny")
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db
    assert da["traces/rank-0.json.gz"] != dc["traces/rank-0.json.gz"]


def test_parallel_writers_write_the_same_bytes(tmp_path: Path) -> None:
    generate_incident("nvlink_degradation", TASK, 9, tmp_path / "one", size="tiny", workers=1)
    generate_incident("nvlink_degradation", TASK, 9, tmp_path / "two", size="tiny", workers=2)
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")


def test_kineto_file_shape(tmp_path: Path) -> None:
    generate_incident("none", TASK, 1, tmp_path, size="tiny")
    doc = orjson.loads(gzip.decompress((tmp_path / "traces" / "rank-3.json.gz").read_bytes()))
    di = doc["distributedInfo"]
    assert di["rank"] == 3 and di["world_size"] == 8 and di["backend"] == "nccl"
    assert any(g["ranks"] == list(range(8)) for g in di["pg_config"])
    assert isinstance(doc["baseTimeNanoseconds"], int)
    ev = doc["traceEvents"]
    rpc = next(e for e in ev if e["name"] == "record_param_comms")
    for key in ("Collective name", "In msg nelems", "Out msg nelems", "Group size", "dtype", "Process Group Ranks"):
        assert key in rpc["args"]
    k = next(e for e in ev if e.get("cat") == "kernel" and e["name"].startswith("ncclDevKernel_AllReduce"))
    assert k["pid"] == k["args"]["device"] == 3 and k["tid"] == k["args"]["stream"]
    launch = next(e for e in ev if e.get("cat") == "cuda_runtime" and e["args"].get("correlation") == k["args"]["correlation"])
    assert launch["name"] == "cudaLaunchKernel"
    assert any(e["name"].startswith("ProfilerStep#") and e["cat"] == "user_annotation" for e in ev)
    assert any(e.get("cat") == "ac2g" for e in ev)
    mm = next(e for e in ev if e.get("name") == "aten::mm")
    assert "Input Dims" in mm["args"]


def test_collective_physics(tmp_path: Path) -> None:
    gt = generate_incident("gpu_thermal_throttling", TASK, 2, tmp_path, size="tiny", severity="severe")
    df = open_bundle(tmp_path, cache_dir=tmp_path / ".cache").all_events()
    coll = df[(df["kind"] == "collective")].sort_values(["rank", "ts_ns"]).copy()
    coll["k"] = coll.groupby("rank").cumcount()
    coll["end"] = coll["ts_ns"] + coll["dur_ns"]
    by = coll.groupby("k")
    # All members of each all-reduce finish together (to the ns rounding of the trace).
    assert (by["end"].max() - by["end"].min()).max() <= 2
    # The last to arrive waits least: its collective kernel is the shortest of the instance.
    last = coll.loc[by["ts_ns"].idxmax(), ["k", "rank", "dur_ns"]].set_index("k")
    shortest = by["dur_ns"].min()
    assert (last["dur_ns"] == shortest).all()
    # With one throttled GPU, that rank is the late arriver in the affected steps.
    hit = coll[coll["step"].isin(gt.affected_steps)]
    late = hit.loc[hit.groupby("k")["ts_ns"].idxmax(), "rank"]
    assert (late.isin(gt.affected_ranks)).mean() > 0.9


def test_cuda_graph_kernels_share_the_launch_correlation(tmp_path: Path) -> None:
    generate_incident("none", "vllm-l8b-tp8-h100-decode-graph", 1, tmp_path, size="tiny")
    df = open_bundle(tmp_path, cache_dir=tmp_path / ".cache").events(0)
    launches = df[df["name"].astype(str) == "cudaGraphLaunch"]
    assert len(launches) > 0
    corr = int(launches["correlation"].iloc[0])
    kernels = df[(df["correlation"] == corr) & df["kind"].isin(["kernel", "collective"])]
    assert len(kernels) > 10 and (kernels["kind"] == "collective").any()


def test_pipeline_send_recv_pair_up(tmp_path: Path) -> None:
    generate_incident("none", "vllm-q14b-tp4pp2-h100-mixed-graph", 1, tmp_path, size="tiny")
    df = open_bundle(tmp_path, cache_dir=tmp_path / ".cache").all_events()
    p2p = df[df["name"].astype(str).str.startswith("ncclDevKernel_SendRecv")]
    send = p2p[p2p["rank"] < 4]
    recv = p2p[p2p["rank"] >= 4]
    assert len(send) == len(recv) > 0
    assert set(p2p["coll_name"].astype(str)) <= {"send", "recv", "send_recv"}


def test_cli_single_and_errors(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # typer flattens single-command apps; keep sub-commands
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "simulate",
            "--scenario",
            "pcie_link_degradation",
            "--task",
            TASK,
            "--seed",
            "5",
            "--size",
            "tiny",
            "--severity",
            "severe",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert res.exit_code == 0, res.output
    gt = load_ground_truth(tmp_path / "x")
    assert gt.category == "pcie_link_degradation" and gt.severity == "severe" and gt.component == "pcie"
    bad = runner.invoke(app, ["simulate", "--scenario", "network_congestion", "--task", TASK, "--out", str(tmp_path / "y")])
    assert bad.exit_code == 2 and "inter-node" in bad.output
    unknown = runner.invoke(app, ["simulate", "--scenario", "cosmic_rays", "--task", TASK, "--out", str(tmp_path / "z")])
    assert unknown.exit_code == 2 and "valid:" in unknown.output


@pytest.mark.parametrize("name", ["demo", "smoke", "standard", "detection"])
def test_suites_plan(name: str) -> None:
    cases = plan_suite(load_suite(name))
    cats = {c.category for c in cases}
    assert len(cats) == 13 and len({c.id for c in cases}) == len(cases)


def test_committed_demo_suite() -> None:
    root = SUITES_DIR / "demo"
    index = orjson.loads((root / "suite.json").read_bytes())
    assert len(index["cases"]) == 13
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 8 * 2**20
    for case in index["cases"]:
        gt = load_ground_truth(root / case["path"])
        assert gt.category == case["category"]
        assert (root / case["path"] / "incident.json").exists()


def test_ground_truth_matching_rule(tmp_path: Path) -> None:
    gt = generate_incident("pcie_link_degradation", TASK, 6, tmp_path, size="tiny")
    r, w = gt.affected_ranks[0], gt.window
    assert gt.matches(r, "pcie", w.start_ns, w.start_ns + 1)
    assert not gt.matches(r, "gpu", w.start_ns, w.end_ns)
    assert not gt.matches(r, "pcie", w.end_ns + 10, w.end_ns + 20)
    other = next(x for x in range(8) if x not in gt.affected_ranks)
    assert not gt.matches(other, "pcie", w.start_ns, w.end_ns)
    assert load_ground_truth(tmp_path) == gt
