"""What a bundle holds, per rank: events per kind, steps, collectives, time span."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kat.tools.telemetry.bundle import open_bundle


def bundle_summary(path: Path) -> dict[str, Any]:
    """Open a bundle and summarise what it holds (events per kind, steps, collectives)."""
    b = open_bundle(path)
    ranks = {}
    for r in b.ranks:
        df = b.events(r)
        steps = sorted(int(s) for s in df["step"].unique() if s >= 0)
        span_ns = int((df["ts_ns"] + df["dur_ns"]).max()) - int(df["ts_ns"].min()) if len(df) else 0
        ranks[r] = {
            "file": b.traces[r].path.name,
            "events": len(df),
            "kinds": {str(k): int(v) for k, v in df["kind"].value_counts().items() if v},
            "steps": steps,
            "collectives": int((df["kind"] == "collective").sum()),
            "span_ms": round(span_ns / 1e6, 3) if len(df) else 0.0,
        }
    return {
        "id": b.manifest.id,
        "symptom": b.manifest.symptom,
        "ranks": ranks,
        "metrics": len(b.metrics),
        "logs": len(b.logs),
        "data_quality": b.quality().model_dump(),  # what was left out of each source, and why
    }
