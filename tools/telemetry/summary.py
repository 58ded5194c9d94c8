"""What a bundle holds, per rank: events per kind, steps, collectives, time span."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kat.tools.telemetry.bundle import open_bundle

if TYPE_CHECKING:
    import pandas as pd


def rank_summary(df: pd.DataFrame, file: str) -> dict[str, Any]:
    """One rank's events summarised (what `kat import` lists per rank)."""
    steps = sorted(int(s) for s in df["step"].unique() if s >= 0)
    span_ns = int((df["ts_ns"] + df["dur_ns"]).max()) - int(df["ts_ns"].min()) if len(df) else 0
    return {
        "file": file,
        "events": len(df),
        "kinds": {str(k): int(v) for k, v in df["kind"].value_counts().items() if v},
        "steps": steps,
        "collectives": int((df["kind"] == "collective").sum()),
        "span_ms": round(span_ns / 1e6, 3) if len(df) else 0.0,
    }


def bundle_summary(path: Path, ranks: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Open a bundle and summarise what it holds (events per kind, steps, collectives).
    `ranks`: the per-rank summaries when already made elsewhere (on a cluster's workers)."""
    b = open_bundle(path)
    if ranks is None:
        ranks = {r: rank_summary(b.events(r), b.traces[r].path.name) for r in b.ranks}
    else:
        ranks = {r: ranks[r] for r in b.ranks if r in ranks}
    return {
        "id": b.manifest.id,
        "symptom": b.manifest.symptom,
        "ranks": ranks,
        "metrics": len(b.metrics),
        "logs": len(b.logs),
        "data_quality": b.quality().model_dump(),  # what was left out of each source, and why
    }
