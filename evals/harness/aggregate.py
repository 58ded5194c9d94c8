"""Tallies over runs: per variant, per category; confusion matrix; stability over repeats."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from pydantic import BaseModel, Field

from kat.evals.harness.models import CaseRun

STABILITY = ("stable-pass", "flaky-pass", "flaky-fail", "stable-fail")


def _r(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


class DiagnosisTally(BaseModel):
    """Figures over a set of runs (micro-averaged where a ratio has a natural denominator)."""

    runs: int = 0
    errors: int = 0
    top1: float | None = None
    top3: float | None = None
    component: float | None = None
    ranks_exact: float | None = None
    rank_precision: float | None = None
    rank_recall: float | None = None
    chain_precision: float | None = None
    chain_recall: float | None = None
    faithfulness: float | None = None
    control_ok: float | None = None
    fault_called: float | None = Field(None, description="incident level: faults diagnosed as some fault")
    false_alarm: float | None = Field(None, description="incident level: controls diagnosed as a fault")
    answer_ok: float | None = None
    passed: float | None = None
    tool_calls_mean: float | None = None
    valid_call_rate: float | None = Field(None, description="sum of valid tool calls / sum of attempted ones (toolcalls.py)")
    steps_mean: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    wall_p50_s: float | None = None
    wall_p95_s: float | None = None


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 3)


def _is_fault(category: str) -> bool:
    return category not in ("none", "workload_shift", "undetermined")


def tally(runs: list[CaseRun]) -> DiagnosisTally:
    sc = [r.scores for r in runs if r.scores is not None]
    n = len(runs)  # errors count as wrong: the denominator is every run
    faults = [s for s in sc if not s.is_control]
    controls = [s for s in sc if s.is_control]
    rtp = sum(len(set(s.ranks_truth) & set(s.ranks_predicted)) for s in faults)
    chained = [s for s in sc if s.chain_truth]
    answers = [s.answer for s in sc if s.answer is not None]
    ok = [r for r in runs if r.error is None]
    tin = [r.trajectory.tokens_in for r in ok if r.trajectory.tokens_in is not None]
    tout = [r.trajectory.tokens_out for r in ok if r.trajectory.tokens_out is not None]
    wall = [r.trajectory.wall_s for r in ok]
    att = [r.trajectory for r in runs if r.trajectory.calls_attempted is not None]
    return DiagnosisTally(
        runs=n,
        errors=n - len(ok),
        top1=_r(sum(s.top1 for s in sc), n),
        top3=_r(sum(s.top3 for s in sc), n),
        component=_r(sum(s.component_ok for s in sc), n),
        ranks_exact=_r(sum(s.ranks_exact for s in sc), n),
        rank_precision=_r(rtp, sum(len(s.ranks_predicted) for s in faults)),
        rank_recall=_r(rtp, sum(len(s.ranks_truth) for s in faults)),
        chain_precision=_r(sum(s.chain_matched for s in chained), sum(s.chain_predicted for s in chained)),
        chain_recall=_r(sum(s.chain_matched for s in chained), sum(s.chain_truth for s in chained)),
        faithfulness=_r(sum(s.faithful_links for s in sc), sum(s.chain_predicted for s in sc)),
        control_ok=_r(sum(bool(s.control_ok) for s in controls), len(controls)),
        fault_called=_r(sum(_is_fault(s.predicted) for s in faults), len(faults)),
        false_alarm=_r(sum(_is_fault(s.predicted) for s in controls), len(controls)),
        answer_ok=_r(sum(a.ok for a in answers), len(answers)),
        passed=_r(sum(s.passed for s in sc), n),
        tool_calls_mean=round(statistics.mean(r.trajectory.tool_calls for r in ok), 2) if ok else None,
        valid_call_rate=_r(sum(t.calls_valid or 0 for t in att), sum(t.calls_attempted or 0 for t in att)),
        steps_mean=round(statistics.mean(r.trajectory.steps for r in ok), 2) if ok else None,
        tokens_in=sum(tin) if tin else None,
        tokens_out=sum(tout) if tout else None,
        wall_p50_s=_pct(wall, 0.5),
        wall_p95_s=_pct(wall, 0.95),
    )


class ClassPR(BaseModel):
    """Root-cause classification precision/recall for one category."""

    truth: int
    predicted: int
    correct: int
    precision: float | None
    recall: float | None


class VariantSummary(BaseModel):
    variant: str
    overall: DiagnosisTally
    per_category: dict[str, DiagnosisTally]
    confusion: dict[str, dict[str, int]] = Field(description="truth category -> predicted category -> runs")
    class_pr: dict[str, ClassPR]
    stability: dict[str, str] = Field(description="case -> stable-pass | flaky-pass | flaky-fail | stable-fail")
    stability_counts: dict[str, int]


def stability_of(passes: list[bool]) -> str:
    k, n = sum(passes), len(passes)
    if k == n:
        return "stable-pass"
    if k == 0:
        return "stable-fail"
    return "flaky-pass" if k * 2 > n else "flaky-fail"


def summarize(variant: str, runs: list[CaseRun]) -> VariantSummary:
    by_cat: dict[str, list[CaseRun]] = defaultdict(list)
    by_case: dict[str, list[bool]] = defaultdict(list)
    conf: dict[str, Counter[str]] = defaultdict(Counter)
    for r in runs:
        by_cat[r.category].append(r)
        by_case[r.case].append(bool(r.scores and r.scores.passed))
        conf[r.category][r.scores.predicted if r.scores else "error"] += 1
    cats = sorted(set(conf) | {p for c in conf.values() for p in c})
    pr = {}
    for c in cats:
        truth = sum(conf[c].values())
        pred = sum(conf[t][c] for t in conf)
        correct = conf[c][c]
        pr[c] = ClassPR(truth=truth, predicted=pred, correct=correct, precision=_r(correct, pred), recall=_r(correct, truth))
    stab = {case: stability_of(p) for case, p in sorted(by_case.items())}
    return VariantSummary(
        variant=variant,
        overall=tally(runs),
        per_category={k: tally(v) for k, v in sorted(by_cat.items())},
        confusion={t: dict(c) for t, c in sorted(conf.items())},
        class_pr=pr,
        stability=stab,
        stability_counts={s: sum(1 for v in stab.values() if v == s) for s in STABILITY},
    )
