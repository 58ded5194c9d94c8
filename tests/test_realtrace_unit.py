"""Real-trace generator pieces that need no rank processes: config, pinning, truth, hooks, CLI."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import orjson
import pandas as pd
import pytest
from pydantic import ValidationError

from kat.evals.realtrace.faults import FaultHooks, pin_cores
from kat.evals.realtrace.models import FaultKind, RankReport, RealTraceConfig, RunReport, StepSpan
from kat.evals.realtrace.signatures import check_signature, comm_entry_delay_ms, mm_per_gate_up, step_start_gaps_ms
from kat.evals.realtrace.suite import suite_configs
from kat.evals.realtrace.trace_steps import step_spans
from kat.evals.realtrace.truth import TAXONOMY, build_ground_truth
from kat.evals.simulate.ground_truth import GroundTruth


def test_config_validates_window_rank_and_layer() -> None:
    cfg = RealTraceConfig(fault="gemm", rank=2, steps=(4, 7), num_steps=10)
    assert cfg.fault_steps == [4, 5, 6] and cfg.strength == 5.0
    assert RealTraceConfig(fault="none", steps=(4, 7), num_steps=10).fault_steps == []
    for bad in (
        {"rank": 4},
        {"steps": (0, 3)},
        {"steps": (5, 5)},
        {"steps": (5, 12), "num_steps": 10},
        {"gemm_layer": 3},
        {"fault": "thermal"},
    ):
        with pytest.raises(ValidationError):
            RealTraceConfig(**{"num_steps": 10, "steps": (4, 7), **bad})
    assert RealTraceConfig(steps=(10, 11), num_steps=10).steps == (10, 11)  # last step may be faulty


def test_pinning_shares_cores_round_robin() -> None:
    assert [pin_cores(r, 4, [0, 1]) for r in range(4)] == [[0], [1], [0], [1]]
    assert [pin_cores(r, 4, [2, 3, 5, 7, 8]) for r in range(4)] == [[2], [3], [5], [7]]
    assert pin_cores(1, 4, []) == []


def test_hooks_act_only_on_target_rank_and_window() -> None:
    cfg = RealTraceConfig(fault="gemm", rank=2, steps=(4, 6), num_steps=8, gemm_layer=1)
    hit, miss = FaultHooks(cfg, 2, [0]), FaultHooks(cfg, 1, [1])
    assert [hit.gemm_repeats(s, 1) for s in range(1, 8)] == [1, 1, 1, 5, 5, 1, 1]
    assert hit.gemm_repeats(4, 0) == 1 and miss.gemm_repeats(4, 1) == 1
    stall = FaultHooks(RealTraceConfig(fault="cpu_stall", rank=0, steps=(2, 3), num_steps=4, severity=30), 0, [])
    t = time.perf_counter()
    stall.before_step(1)
    assert time.perf_counter() - t < 0.02
    stall.before_step(2)
    assert time.perf_counter() - t >= 0.03 and stall.start_ns is not None
    stall.after_step(2)
    assert stall.end_ns is not None and stall.end_ns >= stall.start_ns


def test_contention_hogs_start_on_window_and_die() -> None:
    cores = sorted(os.sched_getaffinity(0))[:1]
    cfg = RealTraceConfig(fault="cpu_contention", rank=0, steps=(1, 2), num_steps=2, severity=2)
    hooks = FaultHooks(cfg, 0, cores)
    pids = hooks.hog_pids
    assert len(pids) == 2
    try:
        hooks.before_step(1)
        time.sleep(0.2)
        for pid in pids:  # running and pinned where asked
            assert os.sched_getaffinity(pid) == set(cores)
    finally:
        hooks.after_step(1)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _run(fault: str, pinning: dict[int, list[int]] | None = None) -> RunReport:
    cfg = RealTraceConfig(fault=fault, rank=2, steps=(4, 7), num_steps=8)
    ranks = [
        RankReport(
            rank=r,
            pid=100 + r,
            host="node-x",
            cores=[r % 2],
            trace_file=f"rank-{r}.json.gz",
            steps=[StepSpan(step=s, start_ns=s * 10**8, end_ns=s * 10**8 + (9 if 4 <= s < 7 else 5) * 10**6) for s in range(1, 9)],
        )
        for r in range(4)
    ]
    return RunReport(
        config=cfg, start_ns=0, end_ns=10**9, ranks=ranks, pinning=pinning or {r: [r % 2] for r in range(4)}, available_cores=[0, 1]
    )


@pytest.mark.parametrize("fault", [f.value for f in FaultKind])
def test_ground_truth_per_fault(fault: str) -> None:
    spans = {r: {s: (s * 10**8 + r, s * 10**8 + 5 * 10**6) for s in range(1, 9)} for r in range(4)}
    gt = build_ground_truth(_run(fault), "case-1", spans, "step time up")
    # The shared schema the eval harness loads (extra fields forbidden there).
    assert GroundTruth.model_validate(orjson.loads(gt.to_json())) == gt
    cat, _, comp = TAXONOMY[FaultKind(fault)]
    assert (gt.category, gt.component, gt.parameters["fault"]) == (cat, comp, fault)
    assert gt.trace_window.start_ns == 10**8 and gt.trace_window.end_ns == 8 * 10**8 + 5 * 10**6
    if fault == "none":
        assert not gt.is_fault and gt.affected_ranks == [] and gt.window is None and not gt.expected_detections
        assert "expected_culprit_rank" not in gt.parameters
        return
    assert gt.is_fault and gt.affected_steps == [4, 5, 6] and gt.affected_hosts == ["node-x"]
    assert gt.parameters["expected_culprit_rank"] == 2 and gt.parameters["injected_rank"] == 2
    assert gt.window is not None and (gt.window.start_ns, gt.window.end_ns) == (4 * 10**8 + 2, 6 * 10**8 + 5 * 10**6)
    # Contention on a shared core also slows the core's other rank: affected, but not the culprit.
    assert gt.affected_ranks == ([0, 2] if fault == "cpu_contention" else [2])
    assert gt.parameters["collateral_ranks"] == ("0" if fault == "cpu_contention" else "")
    assert {d.rank for d in gt.expected_detections} == set(gt.affected_ranks)
    assert [d.rank for d in gt.expected_detections if d.primary] == [2]
    assert all(d.component == comp and d.window == gt.window for d in gt.expected_detections)
    assert gt.causal_chain and gt.causal_chain[0].component == comp
    assert gt.parameters["step_ms_inside_window"] == 9.0 and gt.parameters["step_ms_outside_window"] == 5.0


def test_component_mapping_follows_taxonomy() -> None:
    comps = {f.value: TAXONOMY[f][2] for f in FaultKind}
    assert comps == {"none": "-", "gemm": "gpu", "cpu_stall": "software", "cpu_contention": "host_cpu", "slow_collective": "network"}
    # Extra compute on one rank is a GPU slowdown in the trace: a category Diagnosis can emit.
    assert TAXONOMY[FaultKind.GEMM][0] == "gpu_thermal_throttling"


def test_every_label_is_in_the_domain_contract() -> None:
    from kat.knowledge.taxonomy import COMPONENT_OF, DIAGNOSIS_CATEGORIES

    for fault, (category, acceptable, component) in TAXONOMY.items():
        assert category in DIAGNOSIS_CATEGORIES and category in acceptable, fault
        assert set(acceptable) <= set(DIAGNOSIS_CATEGORIES), fault
        assert component == COMPONENT_OF[category], fault


def test_step_spans_use_trace_clock(tmp_path: Path) -> None:
    doc = {
        "baseTimeNanoseconds": 1_700_000_000_000_000_000,
        "traceEvents": [
            {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#3", "pid": 1, "tid": 1, "ts": 1000.5, "dur": 20.25},
            {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 1001, "dur": 1},
        ],
    }
    p = tmp_path / "rank-0.json.gz"
    p.write_bytes(gzip.compress(orjson.dumps(doc)))
    assert step_spans(p) == {3: (1_700_000_000_001_000_500, 1_700_000_000_001_020_750)}


def _events(rows: list[tuple]) -> pd.DataFrame:
    cols = ["id", "rank", "kind", "name", "ts_ns", "dur_ns", "step", "parent"]
    return pd.DataFrame(rows, columns=cols)


def test_signature_measurements_on_synthetic_events() -> None:
    rows, i = [], 0
    for rank in range(2):
        for step in range(1, 5):
            base = step * 10**8
            faulty = rank == 1 and step == 3
            rows.append((i, rank, "step", f"ProfilerStep#{step}", base, 9 * 10**7, step, -1))
            i += 1
            gap = 30 * 10**6 if faulty else 50_000
            rows.append((i, rank, "annotation", "scheduler.schedule", base + gap, 10**5, step, i - 1))
            i += 1
            span = i
            rows.append((span, rank, "annotation", "layers.1.mlp.gate_up_proj", base + 10**6, (8 if faulty else 2) * 10**6, step, -1))
            i += 1
            for k in range(4 if faulty else 1):
                rows.append((i, rank, "cpu_op", "aten::mm", base + 10**6 + k * 2 * 10**6, 2 * 10**6, step, span))
                i += 1
            rows.append((i, rank, "annotation", "tp_all_reduce", base + 2 * 10**7, 10**6, step, -1))
            i += 1
            rows.append((i, rank, "collective", "gloo:all_reduce", base + 2 * 10**7 + (5 * 10**6 if faulty else 10**5), 10**6, step, -1))
            i += 1
    ev = _events(rows)
    assert mm_per_gate_up(ev, 1, 1) == {1: 1, 2: 1, 3: 4, 4: 1}
    assert step_start_gaps_ms(ev, 1)[3] == pytest.approx(30.0) and step_start_gaps_ms(ev, 0)[3] == pytest.approx(0.05)
    assert list(comm_entry_delay_ms(ev, 1)["delay_ms"]) == pytest.approx([0.1, 0.1, 5.0, 0.1])
    gemm = check_signature(ev, RealTraceConfig(fault="gemm", rank=1, steps=(3, 4), num_steps=4))
    assert gemm.present and gemm.value == pytest.approx(4.0)
    assert check_signature(ev, RealTraceConfig(fault="cpu_stall", rank=1, steps=(3, 4), num_steps=4)).present
    assert check_signature(ev, RealTraceConfig(fault="slow_collective", rank=1, steps=(3, 4), num_steps=4)).present
    assert not check_signature(ev, RealTraceConfig(fault="none", rank=0, steps=(3, 4), num_steps=4)).present
    assert check_signature(ev, RealTraceConfig(fault="none", rank=1, steps=(3, 4), num_steps=4)).present


def test_suites_cover_every_fault() -> None:
    small = suite_configs("small")
    assert {c.fault for c in small} == set(FaultKind)
    assert len({c.name() for c in suite_configs("standard")}) == len(suite_configs("standard"))
    assert [c.fault for c in suite_configs("tiny")] == [FaultKind.NONE, FaultKind.CPU_STALL]
    with pytest.raises(ValueError):
        suite_configs("huge")


@pytest.mark.parametrize("world", [2, 3])
def test_suites_fit_smaller_worlds(world: int) -> None:
    # One rank per core on a 2-core machine: every case's fault rank must exist in the world.
    for name in ("tiny", "small", "standard"):
        cases = suite_configs(name, world=world)
        assert all(c.rank < world for c in cases)
        assert len({c.name() for c in cases}) == len(cases)


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kat.agent.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["realtrace", "--fault", "gemm", "--steps", "9:3", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "steps" in res.output
    res = runner.invoke(app, ["realtrace", "--fault", "gemm", "--steps", "nine", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    res = runner.invoke(app, ["realtrace", "--fault", "gemm", "--rank", "4", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and not (tmp_path / "x").exists()
