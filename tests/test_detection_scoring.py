"""The detection scorer on hand-made cases: perfect, empty, wrong component, false alarm."""

from __future__ import annotations

from kat.evals.detection import score_case, tally
from kat.evals.simulate.ground_truth import GroundTruth, Window
from kat.tools.outpost.models import Anomaly, DetectionResult, RunStats

W = Window.of(1_000, 2_000)


def _gt(
    category: str = "gpu_thermal_throttling", component: str = "gpu", ranks: list[int] | None = None, fault: bool = True
) -> GroundTruth:
    return GroundTruth(
        incident_id="t",
        category=category,
        component=component,
        is_fault=fault,
        task="t",
        seed=0,
        size="tiny",
        affected_ranks=ranks if ranks is not None else [3],
        window=W if fault else None,
        trace_window=Window.of(0, 5_000),
        symptom="s",
        summary="s",
    )


def _res(*anoms: tuple[int, str, int, int]) -> DetectionResult:
    items = [
        Anomaly(
            rank=r,
            kind="kernel",
            name="k",
            component=c,
            method="inter",
            start_ns=s,
            end_ns=e,
            observed=2.0,
            baseline=1.0,
            ratio=2.0,
            score=1.0,
        )
        for r, c, s, e in anoms
    ]
    ranks = []
    for a in items:
        if a.rank not in ranks:
            ranks.append(a.rank)
    return DetectionResult(suspect_ranks=ranks, anomalies=items, stats=RunStats(events=10, ranks=8, seconds=0.1))


def test_perfect() -> None:
    c = score_case("a", _gt(), _res((3, "gpu", 1_500, 1_800)), 0.1)
    assert (c.true_positive, c.reported, c.expected_found, c.culprit_first) == (1, 1, True, True)
    t = tally([c])
    assert (t.precision, t.recall, t.f1, t.rank_precision, t.rank_recall) == (1.0, 1.0, 1.0, 1.0, 1.0)


def test_empty_answer_has_no_precision_and_zero_recall() -> None:
    t = tally([score_case("a", _gt(), _res(), 0.1)])
    assert t.precision is None and t.recall == 0.0 and t.rank_recall == 0.0


def test_wrong_component_window_or_rank_do_not_match() -> None:
    c = score_case("a", _gt(), _res((3, "nvlink", 1_500, 1_800), (3, "gpu", 3_000, 4_000), (5, "gpu", 1_500, 1_800)), 0.1)
    assert c.true_positive == 0 and c.reported == 3 and not c.expected_found
    assert (c.rank_tp, c.rank_fp, c.rank_fn) == (1, 1, 0)


def test_partially_right() -> None:
    c = score_case("a", _gt(ranks=[3, 4]), _res((3, "gpu", 1_900, 2_500), (6, "gpu", 1_500, 1_600)), 0.1)
    t = tally([c])
    assert t.precision == 0.5 and t.recall == 1.0 and t.rank_recall == 0.5 and t.rank_precision == 0.5


def test_false_alarms_on_controls() -> None:
    quiet = score_case("n", _gt("none", "-", [], fault=False), _res(), 0.1)
    noisy = score_case("w", _gt("workload_shift", "-", [], fault=False), _res((1, "gpu", 0, 10)), 0.1)
    t = tally([quiet, noisy])
    assert t.false_alarm_rate == 0.5 and noisy.false_alarm and not quiet.false_alarm
    # Reports on controls count against precision overall.
    assert tally([noisy, score_case("a", _gt(), _res((3, "gpu", 1_500, 1_800)), 0.1)]).precision == 0.5
