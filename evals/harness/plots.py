"""PNG plots for the report: confusion matrix, per-category precision/recall, latency distribution."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from kat.evals.harness.aggregate import VariantSummary
from kat.evals.harness.models import CaseRun


def _plt() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")  # headless: CI and servers have no display
    import matplotlib.pyplot as plt

    return plt


def confusion_png(s: VariantSummary, path: Path) -> Path:
    plt = _plt()
    truth = list(s.confusion)
    pred = sorted({p for row in s.confusion.values() for p in row} | set(truth))
    pred = truth + [p for p in pred if p not in truth]  # diagonal first, then extra predictions (undetermined, error)
    m = [[s.confusion[t].get(p, 0) for p in pred] for t in truth]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(pred), 1.2 + 0.45 * len(truth)))
    ax.imshow(m, cmap="Blues", aspect="auto")
    for i, row in enumerate(m):
        top = max(max(row), 1)
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > top * 0.6 else "black")
    ax.set_xticks(range(len(pred)), pred, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(truth)), truth, fontsize=8)
    ax.set_xlabel("predicted root cause")
    ax.set_ylabel("true category")
    ax.set_title(f"Root-cause confusion ({s.variant})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def class_pr_png(s: VariantSummary, path: Path) -> Path:
    plt = _plt()
    cats = [c for c, v in s.class_pr.items() if v.truth]
    prec = [s.class_pr[c].precision or 0.0 for c in cats]
    rec = [s.class_pr[c].recall or 0.0 for c in cats]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(cats) + 1.5), 4.2))
    x = range(len(cats))
    ax.bar([i - 0.2 for i in x], prec, width=0.4, label="precision")
    ax.bar([i + 0.2 for i in x], rec, width=0.4, label="recall")
    ax.set_xticks(list(x), cats, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.2)  # headroom for the legend above full bars
    ax.set_ylabel("root-cause classification")
    ax.set_title(f"Precision / recall per category ({s.variant})", fontsize=10)
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_png(runs_by_variant: dict[str, list[CaseRun]], path: Path) -> Path:
    plt = _plt()
    names = list(runs_by_variant)
    data = [[r.trajectory.wall_s for r in runs if r.error is None] or [0.0] for runs in runs_by_variant.values()]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(names) + 2), 3.8))
    ax.boxplot(data, showfliers=True)
    for i, d in enumerate(data, start=1):  # every run as a dot: small suites have few points
        ax.scatter([i + (k % 7 - 3) * 0.03 for k in range(len(d))], d, s=8, alpha=0.5)
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
    ax.set_ylabel("wall time per diagnosis (s)")
    ax.set_title("Latency distribution", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
