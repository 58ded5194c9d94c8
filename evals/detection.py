"""Score Outpost against generated ground truth, at the detection unit of ARCHITECTURE.md, and
against recorded runs (a directory of rank traces with truth.json: rank and step window only).

Detection unit: a reported anomaly matches when its rank is an affected rank, its component is
the injected component, and its window overlaps the injected window. Rank level: the set of
ranks with any anomaly against the affected ranks. Incident level: did the detector say
"fault" (any anomaly) exactly when there was one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from kat.evals.simulate.ground_truth import GroundTruth, load_ground_truth
from kat.tools.outpost import Anomaly, DetectionResult, DetectorConfig, detect

CONTROLS = ("none", "workload_shift")


class CaseScore(BaseModel):
    case: str
    category: str
    component: str
    affected_ranks: list[int]
    reported: int = Field(description="anomalies reported")
    true_positive: int = Field(description="reported anomalies that match the ground truth")
    expected_found: bool = Field(description="at least one matching anomaly (recall unit)")
    ranks_reported: list[int]
    rank_tp: int
    rank_fp: int
    rank_fn: int
    false_alarm: bool = Field(description="a control case with any anomaly")
    culprit_first: bool | None = Field(default=None, description="top suspect is an affected rank (faults only)")
    seconds: float
    events: int


class DetectionTally(BaseModel):
    cases: int = 0
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    rank_precision: float | None = None
    rank_recall: float | None = None
    false_alarm_rate: float | None = None
    culprit_top1: float | None = None


class DetectionReport(BaseModel):
    suite: str
    overall: DetectionTally
    per_category: dict[str, DetectionTally]
    cases: list[CaseScore]
    seconds: float
    events: int


def matches(a: Anomaly, gt: GroundTruth) -> bool:
    return gt.matches(a.rank, a.component, a.start_ns, a.end_ns)


def score_case(name: str, gt: GroundTruth, res: DetectionResult, seconds: float) -> CaseScore:
    tp = sum(1 for a in res.anomalies if matches(a, gt))
    ranks = sorted({a.rank for a in res.anomalies})
    affected = set(gt.affected_ranks) if gt.is_fault else set()
    return CaseScore(
        case=name,
        category=gt.category,
        component=gt.component,
        affected_ranks=gt.affected_ranks,
        reported=len(res.anomalies),
        true_positive=tp,
        expected_found=tp > 0,
        ranks_reported=ranks,
        rank_tp=len(affected & set(ranks)),
        rank_fp=len(set(ranks) - affected),
        rank_fn=len(affected - set(ranks)),
        false_alarm=(not gt.is_fault) and bool(res.anomalies),
        culprit_first=(bool(res.suspect_ranks) and res.suspect_ranks[0] in affected) if gt.is_fault else None,
        seconds=round(seconds, 3),
        events=res.stats.events,
    )


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def tally(cases: list[CaseScore]) -> DetectionTally:
    faults = [c for c in cases if c.category not in CONTROLS]
    controls = [c for c in cases if c.category in CONTROLS]
    reported = sum(c.reported for c in cases)
    tp = sum(c.true_positive for c in faults)
    p = _ratio(tp, reported)
    r = _ratio(sum(c.expected_found for c in faults), len(faults))
    f1 = round(2 * p * r / (p + r), 4) if p and r else (0.0 if p is not None and r is not None else None)
    rtp, rfp, rfn = (sum(getattr(c, k) for c in cases) for k in ("rank_tp", "rank_fp", "rank_fn"))
    culprit = [c.culprit_first for c in faults if c.culprit_first is not None]
    return DetectionTally(
        cases=len(cases),
        precision=p,
        recall=r,
        f1=f1,
        rank_precision=_ratio(rtp, rtp + rfp),
        rank_recall=_ratio(rtp, rtp + rfn),
        false_alarm_rate=_ratio(sum(c.false_alarm for c in controls), len(controls)),
        culprit_top1=_ratio(sum(culprit), len(culprit)),
    )


def case_dirs(root: Path) -> list[Path]:
    """Every bundle below root that carries a ground_truth.json."""
    return sorted(p.parent for p in root.rglob("ground_truth.json"))


class RunTruth(BaseModel):
    """`truth.json` of a recorded run (a directory of rank*.json.gz): the faulty rank, the ranks
    acceptable as first suspect and the fault's profiler steps (inclusive); no component."""

    mode: str
    culprit: int | None = None
    acceptable_first: list[int] = Field(default_factory=list)
    window_profiler_steps: list[int] | None = None


def run_dirs(root: Path) -> list[Path]:
    """Every recorded run below root: a directory with truth.json beside its rank traces."""
    return sorted(p.parent for p in root.rglob("truth.json") if not (p.parent / "ground_truth.json").exists())


def score_run(name: str, truth: RunTruth, res: DetectionResult, seconds: float) -> CaseScore:
    """A recorded run has no injected component: a finding matches on rank and step window."""
    fault = truth.culprit is not None
    affected = {truth.culprit} if fault else set()
    lo, hi = truth.window_profiler_steps or [-(2**31), 2**31]
    tp = sum(1 for a in res.anomalies if a.rank in affected and any(lo <= s <= hi for s in a.steps)) if fault else 0
    ranks = sorted({a.rank for a in res.anomalies})
    first_ok = set(truth.acceptable_first) or affected
    return CaseScore(
        case=name,
        category=truth.mode if fault else "none",
        component="-",
        affected_ranks=sorted(affected),
        reported=len(res.anomalies),
        true_positive=tp,
        expected_found=tp > 0,
        ranks_reported=ranks,
        rank_tp=len(affected & set(ranks)),
        rank_fp=len(set(ranks) - affected),
        rank_fn=len(affected - set(ranks)),
        false_alarm=(not fault) and bool(res.anomalies or res.suspects),
        culprit_first=(bool(res.suspect_ranks) and res.suspect_ranks[0] in first_ok) if fault else None,
        seconds=round(seconds, 3),
        events=res.stats.events,
    )


def evaluate_detection(
    root: Path,
    config: DetectorConfig | None = None,
    progress: Callable[[CaseScore], None] | None = None,
    detector: Callable[[Path, DetectorConfig | None], DetectionResult] = detect,
) -> DetectionReport:
    """Score `detector` (Outpost in this process by default; e.g. a cluster's) on every case."""
    t0 = time.perf_counter()
    scores = []
    for case in case_dirs(root):
        gt = load_ground_truth(case / "ground_truth.json")
        t = time.perf_counter()
        res = detector(case, config)
        scores.append(score_case(str(case.relative_to(root)), gt, res, time.perf_counter() - t))
        if progress:
            progress(scores[-1])
    for run in run_dirs(root):
        try:
            truth = RunTruth.model_validate_json((run / "truth.json").read_bytes())
        except ValueError as exc:
            raise ValueError(f"{run / 'truth.json'}: not a run truth file ({exc})") from exc
        t = time.perf_counter()
        res = detector(run, config)
        scores.append(score_run(str(run.relative_to(root)) if run != root else run.name, truth, res, time.perf_counter() - t))
        if progress:
            progress(scores[-1])
    by_cat: dict[str, list[CaseScore]] = defaultdict(list)
    for s in scores:
        by_cat[s.category].append(s)
    return DetectionReport(
        suite=str(root),
        overall=tally(scores),
        per_category={k: tally(v) for k, v in sorted(by_cat.items())},
        cases=scores,
        seconds=round(time.perf_counter() - t0, 2),
        events=sum(s.events for s in scores),
    )
