"""`metric_lookup`: a metric's series per host/gpu/rank with summary, change points and outliers.

Name matching, filters and the echoed query come from `tools.telemetry.queries.query_metrics`.
Series are split here by every label that varies (cpu, mode, device, ...), counters become
rates, and each series is compared with its peers (the other series of the same metric).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from kat.tools.context import IncidentContext
from kat.tools.evidence import CHARS_PER_TOKEN, ToolResult
from kat.tools.telemetry.metric_source import metric_source_of
from kat.tools.telemetry.queries import MetricQuery, summarize

NAME = "metric_lookup"
DESCRIPTION = (
    "Look up a metric (exact exporter name such as DCGM_FI_DEV_GPU_TEMP, "
    "vllm:gpu_cache_usage_perc, node_netstat_Tcp_RetransSegs, or a regex) per host/gpu/rank. "
    "Returns each series' summary, counters as per-second rates with their total increase, the "
    "largest level shift (change point) and the series that stand out from their peers."
)

_BASE_LABELS = ("host", "gpu", "rank")


class MetricLookupArgs(BaseModel):
    name: str = Field(description="metric name, exact; or a regex if no exact name matches")
    host: str | None = None
    gpu: int | None = None
    rank: int | None = None
    labels: dict[str, str] | None = Field(None, description="extra label filters, e.g. {'mode': 'user'}")
    start_ns: int | None = Field(None, description="window start, epoch ns")
    end_ns: int | None = Field(None, description="window end, epoch ns")
    include_points: bool = Field(False, description="include downsampled points (always for a single series)")
    max_series: int = Field(16, ge=1, le=200, description="series listed in full; the rest are counted")
    token_budget: int = Field(1500, ge=200, le=8000)


def is_counter(name: str, values: np.ndarray) -> bool:
    n = name.lower()
    # node_netstat_* are kernel counters without the Prometheus _total suffix.
    looks = n.endswith(("_total", "_counter", "_count")) or "counter" in n or n.startswith("node_netstat_")
    return looks and len(values) > 1 and bool(np.all(np.diff(values) >= -1e-9))


def change_point(ts: np.ndarray, v: np.ndarray) -> dict | None:
    """The single largest mean shift, if it stands well above the noise."""
    n = len(v)
    if n < 8:
        return None
    c = np.cumsum(v)
    k = np.arange(3, n - 2)
    m1 = c[k - 1] / k
    m2 = (c[-1] - c[k - 1]) / (n - k)
    gain = np.abs(m2 - m1) * np.sqrt(k * (n - k) / n)
    i = int(np.argmax(gain))
    kk = int(k[i])
    a, b = v[:kk], v[kk:]
    sd = float(np.sqrt((a.var() * len(a) + b.var() * len(b)) / n)) + 1e-12
    diff = float(b.mean() - a.mean())
    scale = max(abs(float(a.mean())), abs(float(b.mean())), 1e-12)
    if abs(diff) < 3 * sd or abs(diff) < 0.05 * scale:
        return None
    return {"ts_ns": int(ts[kk]), "before": _r(a.mean()), "after": _r(b.mean()), "rel_change": _r(diff / scale)}


def _r(x: float) -> float:
    x = float(x)
    if not np.isfinite(x):
        return x
    return float(f"{x:.4g}")


def _outliers(rows: list[dict]) -> None:
    """Mark series that stand out from the other series of the same metric (robust z on max/min).

    Max and min, not percentiles: a fault that lasts a few seconds leaves one or two samples."""
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    for group in by_name.values():
        if len(group) == 2:
            # Two series (e.g. two hosts): no robust spread; flag a one-sided order-of-magnitude gap.
            for stat in ("max",):
                a, b = (g["_" + stat] for g in group)
                lo, hi = sorted((a, b))
                if hi > 0 and hi > 5 * max(lo, 0) + 1e-9 and hi - lo > 1e-6:
                    g = group[0] if a > b else group[1]
                    g["outlier"] = f"high: {_r(hi)} vs the other series {_r(lo)}"
            continue
        if len(group) < 3:
            continue
        for stat, direction in (("max", "high"), ("min", "low")):
            vals = np.array([g["_" + stat] for g in group], dtype=float)
            med = float(np.median(vals))
            mad = float(np.median(np.abs(vals - med))) * 1.4826
            spread = max(mad, 0.02 * abs(med), 1e-9)
            for g, x in zip(group, vals):
                z = (x - med) / spread
                if (direction == "high" and z > 4) or (direction == "low" and z < -4):
                    if abs(x - med) > 0.1 * max(abs(med), 1e-9) or med == 0:
                        g["outlier"] = f"{direction}: {_r(x)} vs peer median {_r(med)}"


def run(ctx: IncidentContext, args: MetricLookupArgs) -> ToolResult:
    q = args.model_dump(exclude_none=True)
    try:
        MetricQuery(name=args.name, host=args.host, gpu=args.gpu, rank=args.rank, start_ns=args.start_ns, end_ns=args.end_ns, max_points=2)
        # The bundle's file or Prometheus, one API; Prometheus echoes its PromQL and range.
        got = metric_source_of(ctx.bundle).select(args.name, args.start_ns, args.end_ns)
    except (ValidationError, ValueError) as exc:
        return ToolResult(tool=NAME, status="error", query=q, range=ctx.path.name, message=str(exc))
    q.update(got.echo)
    if got.status != "ok" or got.frame is None:
        return ToolResult(tool=NAME, status=got.status, query=q, range=got.searched, message=got.message)
    m = got.frame
    names = list(got.chosen)
    mask = np.ones(len(m), dtype=bool)
    for col, val in (("host", args.host), ("gpu", args.gpu), ("rank", args.rank)):
        if val is not None:
            mask &= (m[col] == val).to_numpy()
    if not mask.any():
        return ToolResult(
            tool=NAME,
            status="no_data",
            query=q,
            range=got.searched,
            message=f"metric(s) {names} exist but no sample matches the host/gpu/rank/window filters",
        )
    res = got
    extra = [c for c in m.columns if c not in ("ts_ns", "name", "value", *_BASE_LABELS)]
    for k, v in (args.labels or {}).items():
        if k not in m.columns:
            return ToolResult(
                tool=NAME,
                status="error",
                query=q,
                range=res.searched,
                message=f"unknown label {k!r}; labels present: {list(_BASE_LABELS) + extra}",
            )
        mask &= (m[k].astype(str) == str(v)).to_numpy()
    sel = m.loc[mask]
    if sel.empty:
        return ToolResult(tool=NAME, status="no_data", query=q, range=res.searched, message="no sample matches the label filters")
    names = sorted({str(n) for n in sel["name"].unique()})
    varying = [c for c in extra if sel[c].astype(str).nunique() > 1]
    keys = ["name", *_BASE_LABELS, *varying]
    rows: list[dict] = []
    points: dict[str, list] = {}
    for key, g in sel.groupby(keys, observed=True, sort=True):
        labels = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        ts, v = g["ts_ns"].to_numpy(), g["value"].to_numpy(dtype=float)
        row: dict = {"name": str(labels.pop("name"))}
        row.update(
            {
                k: (int(x) if k in ("gpu", "rank") else str(x))
                for k, x in labels.items()
                if not (k in ("gpu", "rank") and int(x) < 0) and str(x) != ""
            }
        )
        counter = is_counter(row["name"], v)
        if counter and len(v) > 1:
            dt = np.maximum(np.diff(ts) / 1e9, 1e-9)
            series, sts = np.diff(v) / dt, ts[1:]
            row["counter"] = True
            row["increase"] = _r(v[-1] - v[0])
        else:
            series, sts = v, ts
        s = summarize(series)
        row.update(mean=_r(s.mean), min=_r(s.min), max=_r(s.max), last=_r(s.last), n=s.count)
        row["_max"] = float(np.nanmax(series)) if series.size else np.nan
        row["_min"] = float(np.nanmin(series)) if series.size else np.nan
        cp = change_point(sts, series)
        if cp:
            row["change"] = cp
        rows.append(row)
        if args.include_points:
            step = max(1, len(series) // 30)
            points[str(len(rows) - 1)] = [(int(a), _r(b)) for a, b in zip(sts[::step], series[::step])]
    _outliers(rows)
    for r in rows:
        r.pop("_max"), r.pop("_min")
    ordered = sorted(range(len(rows)), key=lambda i: (0 if "outlier" in rows[i] else 1 if "change" in rows[i] else 2, i))
    budget = args.token_budget * CHARS_PER_TOKEN
    shown: list[int] = []
    used = 0
    for i in ordered:
        size = len(str(rows[i])) + 10
        if len(shown) >= args.max_series or used + size > budget * 0.8:
            break
        shown.append(i)
        used += size
    data: dict = {"series_total": len(rows), "split_by": keys[1:], "series": [rows[i] for i in shown]}
    if args.include_points or len(rows) == 1:
        if len(rows) == 1 and not points:
            v = sel["value"].to_numpy(dtype=float)
            step = max(1, len(v) // 30)
            points["0"] = [(int(a), _r(b)) for a, b in zip(sel["ts_ns"].to_numpy()[::step], v[::step])]
        data["points"] = {k: p for k, p in points.items() if int(k) in shown}
    outl = [r for r in rows if "outlier" in r]
    data["outliers"] = [{k: r[k] for k in r if k in ("name", "host", "gpu", "rank", *varying, "outlier", "increase")} for r in outl]
    more = ""
    if len(shown) < len(rows):
        more = (
            f"{len(rows) - len(shown)} of {len(rows)} series not listed (outliers and shifted series come first): "
            f"filter by host/gpu/rank/labels or raise max_series"
        )
    summary = f"{len(rows)} series of {', '.join(names)}"
    if outl:
        summary += "; stand out: " + "; ".join(
            f"{r.get('host', '')} gpu={r.get('gpu', '-')} rank={r.get('rank', '-')} {r['outlier']}" for r in outl[:4]
        )
    else:
        summary += "; no series stands out from its peers"
    return ToolResult(tool=NAME, status="ok", query=q, range=res.searched, summary=summary, data=data, more=more)
