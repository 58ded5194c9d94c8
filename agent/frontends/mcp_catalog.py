"""`metric_catalog` for MCP clients: which metrics the incident has, with labels, hosts, ranks, span.

A client that did not write the bundle needs the names before it can call `metric_lookup`.
Used only while tools/ has no `metric_catalog` of its own (the MCP server prefers that one).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from kat.tools.context import IncidentContext
from kat.tools.evidence import ToolResult, clip_text
from kat.tools.telemetry import BundleError
from kat.tools.telemetry.metric_source import MetricSource, metric_source_of

NAME = "metric_catalog"
DESCRIPTION = (
    "List the metrics of the incident: each name with its sample and series counts, hosts, GPUs, ranks, "
    "extra label keys with example values, and the time span it covers. Use it to pick names for metric_lookup."
)

_BASE = ("ts_ns", "name", "value", "host", "gpu", "rank")
_MAX_LABEL_VALUES = 12


class MetricCatalogArgs(BaseModel):
    pattern: str | None = Field(None, description="regex on the metric name, case-insensitive (default: all)")
    limit: int = Field(200, ge=1, le=1000, description="metric names to list, alphabetical")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _from_source(source: MetricSource, rx: re.Pattern[str] | None, args: MetricCatalogArgs, q: dict[str, Any]) -> ToolResult:
    """A live source (Prometheus): the names it has for the incident window; per-series detail is metric_lookup's."""
    names = sorted(source.names())
    searched = source.describe()
    if not names:
        why = "; ".join(source.problems) or "it lists no metric for the incident window"
        return ToolResult(tool=NAME, status="error" if source.problems else "no_data", query=q, range=searched, message=why)
    picked = [n for n in names if rx is None or rx.search(n)]
    rows = [{"name": clip_text(n, 120)} for n in picked[: args.limit]]
    data = {"names_total": len(names), "matched": len(picked), "source": source.kind, "metrics": rows}
    more = f"{len(picked) - len(rows)} more names: raise limit or narrow pattern" if len(picked) > len(rows) else ""
    summary = f"{len(picked)} of {len(names)} metric names in {source.kind}; hosts, ranks and values per series: metric_lookup"
    return ToolResult(tool=NAME, status="ok" if picked else "no_data", query=q, range=searched, summary=summary, data=data, more=more)


def run(ctx: IncidentContext, args: MetricCatalogArgs) -> ToolResult:
    q = args.model_dump(exclude_none=True)
    try:
        rx = re.compile(args.pattern, re.IGNORECASE) if args.pattern else None
    except re.error as exc:
        return ToolResult(
            tool=NAME, status="error", query=q, range=ctx.path.name, message=f"pattern {args.pattern!r} is not a regex: {exc}"
        )
    try:
        bundle = ctx.bundle
        source = metric_source_of(bundle)
        if source.kind != "file":
            return _from_source(source, rx, args, q)
        path = bundle.metrics_path
        m = bundle.metrics if path is not None else None
    except (BundleError, ValueError, OSError) as exc:
        return ToolResult(tool=NAME, status="error", query=q, range=ctx.path.name, message=f"metrics unreadable: {exc}")
    if path is None or m is None or m.empty:
        return ToolResult(tool=NAME, status="no_data", query=q, range=ctx.path.name, message="the incident has no metrics file")
    searched = f"{path.name} ({len(m):,} samples)"
    names = sorted(str(n) for n in m["name"].unique())
    picked = [n for n in names if rx is None or rx.search(n)]
    if not picked:
        return ToolResult(
            tool=NAME,
            status="no_data",
            query=q,
            range=searched,
            message=f"no metric name matches {args.pattern!r} ({len(names)} names present)",
        )
    extra = [c for c in m.columns if c not in _BASE]
    sel = m[m["name"].astype(str).isin(picked[: args.limit])]
    rows = []
    for name, g in sel.groupby(sel["name"].astype(str), sort=True):
        labels = {}
        for c in extra:
            vals = sorted({str(v) for v in g[c].unique()} - {""})
            if vals:
                labels[c] = [clip_text(v, 60) for v in vals[:_MAX_LABEL_VALUES]] + (
                    [f"... {len(vals) - _MAX_LABEL_VALUES} more"] if len(vals) > _MAX_LABEL_VALUES else []
                )
        keys = ["host", "gpu", "rank", *labels]
        rows.append(
            {
                "name": clip_text(str(name), 120),
                "samples": int(len(g)),
                "series": int(g.groupby(keys, observed=True).ngroups),
                "hosts": sorted({str(h) for h in g["host"].unique()} - {""}),
                "gpus": sorted(int(x) for x in g["gpu"].unique() if int(x) >= 0),
                "ranks": sorted(int(x) for x in g["rank"].unique() if int(x) >= 0),
                "labels": labels,
                "first": _iso(int(g["ts_ns"].min())),
                "last": _iso(int(g["ts_ns"].max())),
            }
        )
    span = {"start": _iso(int(m["ts_ns"].min())), "end": _iso(int(m["ts_ns"].max()))}
    data = {
        "names_total": len(names),
        "matched": len(picked),
        "span": span,
        "label_columns": ["host", "gpu", "rank", *extra],
        "metrics": rows,
    }
    more = f"{len(picked) - len(rows)} more names: raise limit or narrow pattern" if len(picked) > len(rows) else ""
    summary = f"{len(picked)} of {len(names)} metric names over {span['start']} .. {span['end']}"
    return ToolResult(tool=NAME, status="ok", query=q, range=searched, summary=summary, data=data, more=more)
