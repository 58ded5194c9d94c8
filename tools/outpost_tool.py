"""`outpost_detect`: run Outpost over the incident's traces (cached per session)."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from pathlib import Path

from pydantic import BaseModel, Field

from kat.tools.context import IncidentContext
from kat.tools.evidence import ToolResult, clip_text
from kat.tools.outpost import DetectionResult, DetectorConfig, detect
from kat.tools.telemetry import BundleError

NAME = "outpost_detect"
DESCRIPTION = (
    "Run Outpost, the trace anomaly detector, over every rank of the incident. Returns suspect ranks "
    "(culprit first), anomalous kernels/ops with rank, component, method (inter = slower than peers, "
    "intra = slower than its own repetitions, arrival = late to collectives), steps, time window and "
    "observed/baseline ratio, effect (ms, share of step) and p-value under the capture's own noise; "
    "each suspect has a confidence and the evidence that decided. Call this first."
)


_CACHE: OrderedDict[tuple, DetectionResult] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _key(path: Path) -> tuple:
    """Bundle path + its trace files' sizes and mtimes: a changed bundle is detected again."""
    traces = path / "traces" if (path / "traces").is_dir() else path
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in traces.iterdir() if p.is_file()) if traces.is_dir() else []
    return (str(path), tuple(files))


def _detect(ctx: IncidentContext) -> DetectionResult:
    """Detection is deterministic and costs seconds: the one cache of its results, for the whole
    process (chat turns, sessions, the HTTP server's jobs), keyed on the trace files' sizes and mtimes."""
    key = _key(ctx.path)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    res = detect(ctx.bundle, DetectorConfig())
    with _CACHE_LOCK:
        _CACHE[key] = res
        while len(_CACHE) > 16:
            _CACHE.popitem(last=False)
    return res


class OutpostArgs(BaseModel):
    ranks: list[int] | None = Field(None, description="only show anomalies on these ranks (detection still uses all)")
    max_anomalies: int = Field(12, ge=1, le=50, description="how many anomalies to list, highest score first")


def _steps_text(steps: list[int]) -> str:
    if not steps:
        return "-"
    if len(steps) > 3 and steps == list(range(steps[0], steps[-1] + 1)):
        return f"{steps[0]}..{steps[-1]}"
    return ",".join(map(str, steps[:12])) + ("..." if len(steps) > 12 else "")


def run(ctx: IncidentContext, args: OutpostArgs) -> ToolResult:
    q = args.model_dump()
    try:
        res = _detect(ctx)
    except (BundleError, ValueError, OSError) as exc:
        return ToolResult(tool=NAME, status="error", query=q, range=str(ctx.path), message=f"detection failed: {exc}")
    searched = f"traces of {res.stats.ranks} ranks ({res.stats.events:,} events) in {ctx.path.name}"
    anomalies = [a for a in res.anomalies if args.ranks is None or a.rank in args.ranks]
    shown = anomalies[: args.max_anomalies]
    by = Counter((a.rank, a.component, a.method) for a in anomalies)
    data = {
        "suspect_ranks": res.suspect_ranks,
        "suspects": [s.model_dump() for s in res.suspects],
        "noise_floor": res.noise_floor.model_dump() if res.noise_floor else None,
        "anomalies": [
            {
                "rank": a.rank,
                "component": a.component,
                "method": a.method,
                "kind": a.kind,
                "name": clip_text(a.name, 120),
                "tree_path": " > ".join(clip_text(n, 60) for n in a.tree_path[-4:]),  # the step root's last levels
                "steps": _steps_text(a.steps),
                "n_steps": len(a.steps),
                "ratio": round(a.ratio, 2),
                "score": round(a.score, 1),
                # Plain floats: detector internals may hand back numpy scalars, which the checkpointer cannot store.
                "effect_ms": _num(a.effect_ms),
                "effect_share": _num(a.effect_share),
                "p_value": _num(a.p_value),
                "start_ns": a.start_ns,
                "end_ns": a.end_ns,
                "detail": clip_text(a.detail, 200),
            }
            for a in shown
        ],
        "counts": [{"rank": r, "component": c, "method": m, "n": n} for (r, c, m), n in sorted(by.items())],
        "notes": [clip_text(n, 300) for n in res.notes],
        "groups": res.stats.groups,
    }
    more = ""
    if len(anomalies) > len(shown):
        more = f"{len(anomalies) - len(shown)} more anomalies: call outpost_detect with max_anomalies or ranks"
    if not res.anomalies:
        return ToolResult(
            tool=NAME,
            status="no_data",
            query=q,
            range=searched,
            data=data,
            message="no significant anomaly: every rank behaves like its peers and its own repetitions within the capture's noise",
            summary="Outpost found no significant anomaly"
            + (f" ({clip_text(res.noise_floor.summary, 240)})" if res.noise_floor and res.noise_floor.summary else ""),
        )
    comps = Counter(a.component for a in anomalies)
    conf = ", ".join(f"{x.rank} ({x.confidence:.2f})" for x in res.suspects)
    summary = f"suspect ranks {conf or '[]'}; {len(anomalies)} anomalies ({', '.join(f'{c} x{n}' for c, n in comps.most_common())})"
    return ToolResult(
        tool=NAME,
        status="ok" if anomalies else "no_data",
        query=q,
        range=searched,
        data=data,
        summary=summary,
        more=more,
        message="" if anomalies else f"no anomaly on ranks {args.ranks}",
    )


def _num(x: float | None) -> float | None:
    return None if x is None else float(x)
