"""metrics.json and loss.png of a training run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def summary(state: Any) -> dict:
    """Loss before/after per stage, timings."""
    out: dict = {"global_step": state.global_step, "train_seconds": round(state.seconds, 1), "stages": {}}
    for stage in ("cpt", "sft"):
        steps = [s for s in state.steps if s.stage == stage]
        evals = [e for e in state.evals if e.stage == stage]
        if not steps and not evals:
            continue
        out["stages"][stage] = {
            "steps": len(steps),
            "seconds_per_step": round(statistics.mean(s.seconds for s in steps), 2) if steps else None,
            "tokens_per_step": round(statistics.mean(s.tokens for s in steps), 1) if steps else None,
            "train_loss_first": steps[0].loss if steps else None,
            "train_loss_last": steps[-1].loss if steps else None,
            "validation_loss_before": evals[0].loss if evals else None,
            "validation_loss_after": evals[-1].loss if len(evals) > 1 else None,
            "stopped_by_time_budget": stage in getattr(state, "early_stops", {}),
        }
    return out


def plot(out: Path, state: Any) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = {"cpt": "tab:blue", "sft": "tab:orange"}
    for stage, c in colors.items():
        xs = [s.step for s in state.steps if s.stage == stage]
        if xs:
            ax.plot(xs, [s.loss for s in state.steps if s.stage == stage], ".-", color=c, label=f"{stage} train")
        ev = [e for e in state.evals if e.stage == stage and e.loss == e.loss]
        if ev:
            ax.plot([e.step for e in ev], [e.loss for e in ev], "o--", color=c, alpha=0.7, label=f"{stage} validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean token cross-entropy)")
    ax.set_title("KAT Analyzer fine-tuning: continued pre-training (cpt), then SFT")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    p = out / "loss.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return str(p)


def write_metrics(out: Path, cfg: Any, state: Any, finished: bool) -> tuple[Path, str | None]:
    p = out / "metrics.json"
    data = {
        "finished": finished,
        **summary(state),
        "steps": [s.model_dump() for s in state.steps],
        "validation": [e.model_dump() for e in state.evals],
    }
    p.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return p, plot(out, state)
