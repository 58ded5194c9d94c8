"""Real multi-process runs (4 gloo ranks under torch.profiler) loaded back through open_bundle.

The default suite runs one healthy and one faulty (GEMM on rank 2) case, ~10-15 s each on 2
cores. The other faults run with `-m realtrace` or KAT_REALTRACE_ALL=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch")

from kat.evals.realtrace import RealTraceConfig, generate_case  # noqa: E402
from kat.evals.realtrace.case import CaseResult  # noqa: E402
from kat.evals.realtrace.signatures import check_signature, comm_entry_delay_ms, mm_per_gate_up, step_start_gaps_ms  # noqa: E402
from kat.evals.simulate.ground_truth import load_ground_truth  # noqa: E402
from kat.tools.telemetry import open_bundle  # noqa: E402

pytestmark = pytest.mark.realtrace

NUM_STEPS, WINDOW, RANK = 12, (4, 9), 2
FAULT_STEPS = list(range(*WINDOW))


def _case(tmp_path_factory: pytest.TempPathFactory, fault: str) -> CaseResult:
    cfg = RealTraceConfig(fault=fault, rank=RANK, steps=WINDOW, num_steps=NUM_STEPS, seed=7)
    return generate_case(cfg, tmp_path_factory.mktemp(f"real-{fault}") / "bundle")


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> CaseResult:
    return _case(tmp_path_factory, "none")


@pytest.fixture(scope="module")
def gemm(tmp_path_factory: pytest.TempPathFactory) -> CaseResult:
    return _case(tmp_path_factory, "gemm")


def _all_faults_selected(config: pytest.Config) -> bool:
    expr = config.getoption("markexpr") or ""
    return os.environ.get("KAT_REALTRACE_ALL") == "1" or ("realtrace" in expr and "not realtrace" not in expr)


@pytest.fixture
def every_fault(request: pytest.FixtureRequest) -> None:
    if not _all_faults_selected(request.config):
        pytest.skip("runs with -m realtrace or KAT_REALTRACE_ALL=1 (default suite runs one healthy + one faulty case)")


def _pinning(case: CaseResult) -> dict[int, list[int]]:
    """rank -> cores, as incident.json records them."""
    return {w.rank: list(w.model_extra["cores"]) for w in open_bundle(case.out).manifest.topology.workers}


def _events(case: CaseResult) -> pd.DataFrame:
    return open_bundle(case.out).all_events()


@pytest.mark.parametrize("which", ["healthy", "gemm"])
def test_bundle_loads_with_ranks_steps_and_topology(which: str, request: pytest.FixtureRequest) -> None:
    case: CaseResult = request.getfixturevalue(which)
    b = open_bundle(case.out)
    assert not b.is_bare_trace_dir and b.ranks == [0, 1, 2, 3]
    topo = b.manifest.topology
    assert topo.groups.tp == [[0, 1, 2, 3]] and len({w.host for w in topo.workers}) == 1
    assert b.manifest.window is not None and b.manifest.window.end > b.manifest.window.start
    assert sorted(p.name for p in (case.out / "traces").iterdir()) == [f"rank-{r}.json.gz" for r in range(4)]
    for r in b.ranks:
        ev = b.events(r)
        assert b.traces[r].meta is not None and b.traces[r].meta.backend == "gloo"
        steps = ev[ev["kind"] == "step"]
        assert sorted(steps["step"]) == list(range(1, NUM_STEPS + 1))
        assert (ev["step"] >= 1).all(), "every profiled op lies inside a ProfilerStep"
    # One clock: every rank's steps fall inside the incident window.
    ev = b.all_events()
    assert ev["ts_ns"].min() >= b.manifest.window.start_ns() - 10**6
    assert (ev["ts_ns"] + ev["dur_ns"]).max() <= b.manifest.window.end_ns() + 10**6


@pytest.mark.parametrize("which", ["healthy", "gemm"])
def test_gloo_collectives_import_as_collectives(which: str, request: pytest.FixtureRequest) -> None:
    case: CaseResult = request.getfixturevalue(which)
    ev = _events(case)
    layers = 3  # the default WorkloadShape
    for r in range(4):
        rk = ev[ev["rank"] == r]
        coll = rk[rk["kind"] == "collective"]
        # Two TP all-reduces per layer per step (attention out, MLP down), nothing else.
        assert len(coll) == NUM_STEPS * layers * 2
        assert set(coll["name"]) == {"gloo:all_reduce"} and set(coll["coll_name"]) == {"all_reduce"}
        # [batch, hidden] float32: batch is 12/14/16 per step (continuous batching).
        assert set(coll["msg_bytes"]) <= {b * 1024 * 4 for b in (12, 14, 16)}
        assert (coll["step"] >= 1).all()
        # Real gloo runs the collective on its own pt_gloo_runloop threads, not the Python thread.
        main_tid = set(rk.loc[rk["kind"] == "step", "tid"])
        assert len(main_tid) == 1 and not set(coll["tid"]) & main_tid
        # The Python-side enqueue op is tagged too, but stays a CPU op.
        enq = rk[rk["name"] == "c10d::allreduce_"]
        assert len(enq) == len(coll) and set(enq["kind"]) == {"cpu_op"} and set(enq["coll_name"]) == {"all_reduce"}


def test_ground_truth_files_are_valid(healthy: CaseResult, gemm: CaseResult) -> None:
    ok = load_ground_truth(healthy.out)
    assert ok.category == "none" and not ok.is_fault and ok.affected_ranks == [] and ok.window is None
    assert "signature_present" in ok.parameters and ok.events_total == sum(healthy.trace_events.values())
    gt = load_ground_truth(gemm.out)
    assert (gt.parameters["fault"], gt.component, gt.affected_ranks, gt.affected_steps) == ("gemm", "gpu", [RANK], FAULT_STEPS)
    assert gt.parameters["expected_culprit_rank"] == RANK and gt.parameters["signature_present"] == 1
    # The truth window is exactly the target rank's ProfilerSteps 4..8 on the trace clock.
    ev = _events(gemm)
    st = ev[(ev["rank"] == RANK) & (ev["kind"] == "step")].set_index("step")
    assert gt.window is not None
    assert gt.window.start_ns == st.loc[WINDOW[0], "ts_ns"]
    assert gt.window.end_ns == st.loc[WINDOW[1] - 1, "ts_ns"] + st.loc[WINDOW[1] - 1, "dur_ns"]
    steps = ev[ev["kind"] == "step"]
    assert gt.trace_window.start_ns == steps["ts_ns"].min()
    assert gt.trace_window.end_ns == (steps["ts_ns"] + steps["dur_ns"]).max()
    det = gt.expected_detections[0]
    assert det.rank == RANK and det.primary and det.window == gt.window
    assert ev[(ev["rank"] == RANK)]["name"].str.match(det.name_pattern).any()


def test_gemm_signature_present_on_target_rank_in_window(gemm: CaseResult) -> None:
    ev = _events(gemm)
    # Structure: the target's layer-1 up-projection does its GEMM 5x in the window, once elsewhere.
    counts = mm_per_gate_up(ev, RANK, 1)
    assert counts == {s: (5 if s in FAULT_STEPS else 1) for s in range(1, NUM_STEPS + 1)}
    for peer in (0, 1, 3):
        assert set(mm_per_gate_up(ev, peer, 1).values()) == {1}
    # Time: that span is >= 2x both its peers in the window and its own healthy steps.
    sig = check_signature(ev, RealTraceConfig(fault="gemm", rank=RANK, steps=WINDOW, num_steps=NUM_STEPS), _pinning(gemm))
    assert sig.present, sig.detail
    # Physics of the collective after it: the late rank waits least in gloo:all_reduce.
    d = comm_entry_delay_ms(ev, RANK)
    idx = [i for i, s in enumerate(d["step"]) if s in FAULT_STEPS and i % 6 == 3]  # layer 1's MLP all-reduce
    late = ev[(ev["kind"] == "collective")].sort_values("ts_ns")
    per_rank = {r: late[late["rank"] == r]["dur_ns"].to_numpy() for r in range(4)}
    tgt = sum(per_rank[RANK][i] for i in idx)
    assert all(sum(per_rank[p][i] for i in idx) > tgt for p in (0, 1, 3))


def test_healthy_run_has_no_fault_signature(healthy: CaseResult) -> None:
    ev = _events(healthy)
    for r in range(4):
        assert set(mm_per_gate_up(ev, r, 1).values()) == {1}
        # Nothing near the 30 ms stall (a busy CI box can preempt the main thread for a few ms).
        assert max(step_start_gaps_ms(ev, r).values()) < 18.0
    # The very measurement that finds the GEMM fault stays below its threshold on the same
    # rank and window of the healthy run.
    sig = check_signature(ev, RealTraceConfig(fault="gemm", rank=RANK, steps=WINDOW, num_steps=NUM_STEPS), _pinning(healthy))
    assert not sig.present, sig.detail


@pytest.mark.parametrize("fault", ["cpu_stall", "cpu_contention", "slow_collective"])
def test_other_faults_visible(fault: str, every_fault: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    case = _case(tmp_path_factory, fault)
    assert case.signature is not None and case.signature.present, case.signature
    ev = _events(case)
    gt = case.ground_truth
    assert gt.parameters["fault"] == fault and gt.window is not None
    if fault == "cpu_stall":
        gaps = step_start_gaps_ms(ev, RANK)
        assert all(gaps[s] >= 25 for s in FAULT_STEPS) and all(gaps[s] < 18 for s in gaps if s not in FAULT_STEPS)
    if fault == "cpu_contention":
        # On 2 cores rank 0 shares rank 2's core: affected too, but not the culprit.
        assert gt.affected_ranks == [0, 2] and gt.parameters["collateral_ranks"] == "0"
    if fault == "slow_collective":
        d = comm_entry_delay_ms(ev, RANK)
        assert d.loc[d["step"].isin(FAULT_STEPS), "delay_ms"].min() >= 3.0
        assert set(mm_per_gate_up(ev, RANK, 1).values()) == {1}  # compute untouched


def test_cli_writes_a_bundle(every_fault: None, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kat.agent.cli import app

    out = tmp_path / "cli-case"
    res = CliRunner().invoke(
        app,
        [
            "realtrace",
            "--fault",
            "slow_collective",
            "--rank",
            "1",
            "--steps",
            "3:5",
            "--num-steps",
            "6",
            "--seed",
            "3",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)[0]
    assert row["fault"] == "slow_collective" and row["ranks"] == [1] and row["signature_ok"]
    gt = load_ground_truth(out)
    assert gt.category == "network_congestion" and gt.affected_steps == [3, 4]
    assert open_bundle(out).ranks == [0, 1, 2, 3]
