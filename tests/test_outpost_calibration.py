"""Outpost's calibration: rank-level tests against the capture's own noise, FDR control, the
material effect, culprit before victim, single-step arrival, and the real multi-process runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kat.tools.outpost import detect
from kat.tools.outpost.models import DetectorConfig
from kat.tools.outpost.significance import Samples, bh_reject, stratified_z
from tests.gloo_factory import GlooFaults, gloo_trace
from tests.kineto_factory import write_rank_traces

REAL = Path(__file__).parent / "data" / "real-gloo-dev"
RUNS = sorted(p.name for p in REAL.iterdir() if p.is_dir()) if REAL.is_dir() else []


def _null_samples(rng: np.random.Generator, ranks: int, steps: int, tests: int, hiccup: float) -> Samples:
    """Every rank alike: log-normal op times plus rare big hiccups that hit any rank at the same rate."""
    t, s, r = np.meshgrid(np.arange(tests), np.arange(steps), np.arange(ranks), indexing="ij")
    v = rng.lognormal(13.0, 0.2, t.shape) + (rng.random(t.shape) < hiccup) * rng.exponential(5e6, t.shape)
    stratum = (t * steps + s).ravel()
    return Samples(t.ravel(), stratum, r.ravel(), v.ravel(), s.ravel(), [f"op{i}" for i in range(tests)])


def test_fdr_holds_on_a_synthetic_null_with_hiccups_on_every_rank() -> None:
    # Under the complete null any rejection is a false discovery: BH bounds P(any) by the level.
    q, seeds, tests = 0.05, 400, 10
    rng = np.random.default_rng(0)
    # All seeds in one table (test ids per seed), BH per seed.
    s = _null_samples(rng, 4, 60, tests * seeds, 0.05)
    z = stratified_z(s, np.full(tests * seeds, 4))
    seed = z["test"].to_numpy() // tests
    runs_with_any = sum(bool(bh_reject(z["p"].to_numpy()[seed == i], q).any()) for i in range(seeds))
    # Binomial slack: 3 standard errors over the stated rate.
    assert runs_with_any / seeds <= q + 3 * np.sqrt(q * (1 - q) / seeds), runs_with_any


def test_a_sustained_excess_is_found_and_a_recurring_one_too() -> None:
    rng = np.random.default_rng(1)
    s = _null_samples(rng, 4, 100, 5, 0.05)
    sustained = (s.rank == 2) & (s.test == 3) & (s.step >= 40) & (s.step < 70)
    recurring = (s.rank == 1) & (s.test == 0) & (s.step % 5 == 0)
    s.value = s.value + sustained * 3e6 + recurring * 2e7
    z = stratified_z(s, np.full(5, 4))
    hit = z[bh_reject(z["p"].to_numpy(), 0.01)]
    assert {(2, 3), (1, 0)} <= set(zip(hit["rank"], hit["test"])), z.sort_values("z").tail()


def test_bh_is_step_up() -> None:
    # m=4, q=0.05, lines .0125 .025 .0375 .05: 0.028 misses its line (2nd) but 0.03 meets the
    # 3rd, which carries every smaller p with it.
    assert bh_reject(np.array([0.001, 0.03, 0.028, 0.9]), 0.05).tolist() == [True, True, True, False]
    assert bh_reject(np.array([0.02, 0.03, 0.04, 0.9]), 0.05).tolist() == [False, False, False, False]


def test_single_step_capture_names_the_late_rank_from_arrival_order(tmp_path: Path) -> None:
    faults = GlooFaults(rank=2, steps=range(1, 2), comm_delay_us=3000.0)
    res = detect(write_rank_traces(tmp_path, gloo_trace(world=4, steps=1, layers=8, faults=faults)))
    assert res.suspect_ranks[:1] == [2], (res.suspects, res.notes)
    assert any("collective instance" in n for n in res.notes), res.notes


def test_single_step_healthy_capture_is_silent(tmp_path: Path) -> None:
    res = detect(write_rank_traces(tmp_path, gloo_trace(world=4, steps=1, layers=8)))
    assert res.suspects == [] and res.anomalies == [], res.suspects
    assert res.noise_floor is not None and res.noise_floor.summary.startswith("no significant anomaly")


def test_untraced_spin_on_a_shared_core_blames_the_spinner_not_its_victims() -> None:
    # Four processes share two cores; rank 1 spins 2 ms before each step's work.
    res = detect(REAL / "busy_w4_r1")
    assert res.suspect_ranks[0] == 1
    assert "untraced" in res.suspects[0].why or "waited" in res.suspects[0].why


@pytest.mark.parametrize("run", RUNS)
def test_real_multi_process_runs(run: str) -> None:
    """Healthy runs: no suspect, hiccups to notes; fault runs (spin, intermittent, drift, hog,
    heavier matmul): an acceptable rank first. Same DetectorConfig defaults for all."""
    truth = json.loads((REAL / run / "truth.json").read_text())
    res = detect(REAL / run, DetectorConfig())
    if truth["culprit"] is None:
        assert res.suspects == [] and res.anomalies == [], res.suspects
        assert res.noise_floor is not None and "no significant anomaly" in res.noise_floor.summary
    else:
        assert res.suspect_ranks and res.suspect_ranks[0] in truth["acceptable_first"], res.suspects
        top = res.suspects[0]
        assert 0.0 < top.confidence <= 1.0 and top.why
        mine = [a for a in res.anomalies if a.rank == top.rank]
        assert mine and all(a.p_value is not None and a.effect_ms is not None for a in mine)


def test_recorded_runs_are_scored_on_rank_and_step_window() -> None:
    from kat.evals.detection import RunTruth, run_dirs, score_run
    from kat.tools.outpost.models import Anomaly, DetectionResult, RunStats, Suspect

    def res(rank: int, steps: list[int]) -> DetectionResult:
        a = Anomaly(rank=rank, kind="cpu_op", name="x", component="host_cpu", method="inter", start_ns=0, end_ns=1, steps=steps,
                    observed=2.0, baseline=1.0, ratio=2.0, score=1.0)  # fmt: skip
        return DetectionResult(suspect_ranks=[rank], suspects=[Suspect(rank=rank, confidence=0.9)], anomalies=[a],
                               stats=RunStats(events=1, ranks=2, seconds=0.0))  # fmt: skip

    truth = RunTruth(mode="busy", culprit=1, acceptable_first=[1], window_profiler_steps=[10, 20])
    hit = score_run("r", truth, res(1, [15]), 0.0)
    assert hit.true_positive == 1 and hit.culprit_first and not hit.false_alarm
    miss = score_run("r", truth, res(0, [15]), 0.0)
    assert miss.true_positive == 0 and miss.culprit_first is False
    healthy = score_run("h", RunTruth(mode="none"), res(0, [3]), 0.0)
    assert healthy.category == "none" and healthy.false_alarm
    assert {p.name for p in run_dirs(REAL)} == set(RUNS)
