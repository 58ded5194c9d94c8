"""report.md (tables + PNGs) and report.json (everything, for machines) for one evaluation."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from kat.evals.harness.aggregate import STABILITY, DiagnosisTally, VariantSummary, summarize
from kat.evals.harness.models import CaseRun
from kat.evals.harness.variants import Variant

HEADLINE = (
    ("runs", "runs"),
    ("top-1", "top1"),
    ("top-3", "top3"),
    ("component", "component"),
    ("ranks exact", "ranks_exact"),
    ("rank P", "rank_precision"),
    ("rank R", "rank_recall"),
    ("chain P", "chain_precision"),
    ("chain R", "chain_recall"),
    ("faithful", "faithfulness"),
    ("controls ok", "control_ok"),
    ("false alarm", "false_alarm"),
    ("pass", "passed"),
    ("tool calls", "tool_calls_mean"),
    ("valid calls", "valid_call_rate"),
    ("p50 s", "wall_p50_s"),
    ("p95 s", "wall_p95_s"),
)


class EvalReport(BaseModel):
    suite: str
    cases_root: str
    cases: int
    repeats: int
    generated_at: str
    variants: list[Variant]
    summaries: list[VariantSummary]
    runs: list[dict[str, Any]] = Field(description="per run: case, variant, repeat, category, scores, trajectory, error")
    notes: list[str] = Field(default_factory=list)
    detection: dict[str, Any] | None = Field(None, description="Outpost DetectionReport on the same cases (--with-detection)")


def build(
    suite: str,
    root: Path,
    n_cases: int,
    repeats: int,
    variants: list[Variant],
    runs: list[CaseRun],
    notes: list[str] | None = None,
    detection: dict[str, Any] | None = None,
) -> EvalReport:
    by_v = {v.name: [r for r in runs if r.variant == v.name] for v in variants}
    return EvalReport(
        suite=suite,
        cases_root=str(root),
        cases=n_cases,
        repeats=repeats,
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        variants=variants,
        summaries=[summarize(n, rs) for n, rs in by_v.items()],
        runs=[r.model_dump(mode="json", exclude={"diagnosis"}) for r in runs],
        notes=notes or [],
        detection=detection,
    )


def _fmt(v: Any, key: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if key.endswith(("_mean", "_s")) else f"{v:.3f}"  # counts and seconds vs ratios
    return str(v)


def table(rows: list[tuple[str, DiagnosisTally]], first: str) -> list[str]:
    head = [first] + [h for h, _ in HEADLINE]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(HEADLINE)) + "|"]
    for name, t in rows:
        out.append("| " + " | ".join([name] + [_fmt(getattr(t, k), k) for _, k in HEADLINE]) + " |")
    return out


def headline(rep: EvalReport) -> list[str]:
    return table([(s.variant, s.overall) for s in rep.summaries], "variant")


def write(rep: EvalReport, out: Path) -> tuple[Path, Path]:
    """Write report.json, plots/*.png and report.md under `out`."""
    from kat.evals.harness import plots

    out.mkdir(parents=True, exist_ok=True)
    jp = out / "report.json"
    jp.write_text(rep.model_dump_json(indent=1))
    pdir = out / "plots"
    pdir.mkdir(exist_ok=True)
    runs = [CaseRun.model_validate(r) for r in rep.runs]
    by_v = {s.variant: [r for r in runs if r.variant == s.variant] for s in rep.summaries}
    lat = plots.latency_png(by_v, pdir / "latency.png")

    md = [
        f"# KAT evaluation: `{rep.suite}`",
        "",
        f"{rep.cases} cases from `{rep.cases_root}`, {rep.repeats} repeat(s), variants: "
        + ", ".join(
            f"`{v.name}` ({v.analyzer}{', without ' + ', '.join(v.disabled_tools) if v.disabled_tools else ''})" for v in rep.variants
        )
        + f". Generated {rep.generated_at}.",
        "",
    ]
    md += ["## Headline", ""] + headline(rep) + [""]
    md += [
        "Definitions: see `evals/harness/scoring.py`. top-3 uses root cause + `alternatives_ruled_out` in order; "
        "chain links are matched by inferred (category, component) tags; errors count as wrong. "
        "Wall times depend on KAT's on-disk cache (trace import, Outpost): the first variant run on a fresh "
        "cache pays for it, later variants and reruns reuse it.",
        "",
    ]
    for note in rep.notes:
        md += [f"> {note}", ""]
    md += [f"![latency](plots/{lat.name})", ""]
    base = rep.summaries[0] if rep.summaries else None
    if base and len(rep.summaries) > 1:
        md += [
            "## Ablations: top-1 per category",
            "",
            "| category | " + " | ".join(s.variant for s in rep.summaries) + " |",
            "|---|" + "---:|" * len(rep.summaries),
        ]
        for cat in base.per_category:
            md.append(f"| {cat} | " + " | ".join(_fmt(s.per_category.get(cat, DiagnosisTally()).top1) for s in rep.summaries) + " |")
        md.append("")
    if rep.detection:
        md += _detection_section(rep.detection)
    for s in rep.summaries:
        cm = plots.confusion_png(s, pdir / f"confusion-{s.variant}.png")
        pr = plots.class_pr_png(s, pdir / f"class-pr-{s.variant}.png")
        md += [f"## Variant `{s.variant}`", "", "### Per category", ""]
        md += table(list(s.per_category.items()) + [("**overall**", s.overall)], "category") + [""]
        md += [
            "### Root-cause classification",
            "",
            "| category | truth | predicted | correct | precision | recall |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        md += [f"| {c} | {v.truth} | {v.predicted} | {v.correct} | {_fmt(v.precision)} | {_fmt(v.recall)} |" for c, v in s.class_pr.items()]
        md += ["", f"![confusion matrix](plots/{cm.name})", "", f"![precision/recall](plots/{pr.name})", ""]
        md += [
            "### Stability over repeats",
            "",
            "| " + " | ".join(STABILITY) + " |",
            "|" + "---:|" * len(STABILITY),
            "| " + " | ".join(str(s.stability_counts.get(k, 0)) for k in STABILITY) + " |",
            "",
        ]
        failed = [r for r in by_v[s.variant] if not (r.scores and r.scores.passed)]
        if failed:
            md += [
                "### Failed runs",
                "",
                "| case | r | truth | predicted | ranks truth | ranks predicted | why |",
                "|---|---:|---|---|---|---|---|",
            ]
            for r in failed[:60]:
                sc = r.scores
                why = (r.error or "").splitlines()[0][:80] if r.error else _why(sc)
                md.append(
                    f"| {r.case} | {r.repeat} | {r.category} | {sc.predicted if sc else 'error'} | "
                    f"{sc.ranks_truth if sc else '-'} | {sc.ranks_predicted if sc else '-'} | {why} |"
                )
            md.append("")
    mp = out / "report.md"
    mp.write_text("\n".join(md) + "\n")
    return mp, jp


DET_COLS = (
    ("cases", "cases"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("F1", "f1"),
    ("rank P", "rank_precision"),
    ("rank R", "rank_recall"),
    ("false alarms", "false_alarm_rate"),
    ("culprit top-1", "culprit_top1"),
)


def _detection_section(det: dict[str, Any]) -> list[str]:
    """Outpost alone on the same cases, at the detection unit of ARCHITECTURE.md (evals/detection.py)."""
    rows = list(det["per_category"].items()) + [("**overall**", det["overall"])]
    md = [
        "## Outpost detection (same cases)",
        "",
        "| category | " + " | ".join(h for h, _ in DET_COLS) + " |",
        "|---|" + "---:|" * len(DET_COLS),
    ]
    md += [f"| {n} | " + " | ".join(_fmt(t.get(k)) for _, k in DET_COLS) + " |" for n, t in rows]
    return md + [""]


def _why(sc: Any) -> str:
    if sc is None:
        return "no diagnosis"
    if not sc.top1:
        return "wrong category"
    if sc.is_control:
        return "named a faulty rank"
    if sc.answer is not None and not sc.answer.ok:
        return "answer file: " + ("forbidden cause" if sc.answer.forbidden_hit else f"missing {sc.answer.missing_evidence}")
    return "no affected rank named"
