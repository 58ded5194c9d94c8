"""`metric_compare`: which series of a metric family changed, where, and against whom.

For every series of one family (optionally one metric name): inside a window vs outside it
(robust z of the inside mean against the outside samples) and against its peers (the other
series of the same metric in the same window). Without a window, each series' own most
shifted segment is found (the contiguous run whose mean differs most from the rest). Throttle
reason bitmasks are decoded into reasons (NVML bits). Counters are read as rates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from kat.knowledge.metric_families import FAMILIES, THROTTLE_BITS
from kat.tools.context import IncidentContext
from kat.tools.evidence import CHARS_PER_TOKEN, ToolResult
from kat.tools.metric_series import Series, live_echo, peer_z, searched, series_of, window_stats
from kat.tools.telemetry import BundleError

NAME = "metric_compare"
DESCRIPTION = (
    "Compare every series of one metric family (see metric_catalog) inside a time window vs outside it "
    "and against its peers (other GPUs/processes/hosts): robust z, relative change, which series stand out, "
    "on which rank/host/GPU. Without start_ns/end_ns each series' own most shifted segment is used. "
    "Throttle-reason bitmasks are decoded."
)


class MetricCompareArgs(BaseModel):
    family: str = Field(description="a family from metric_catalog, e.g. gpu_temperature, runtime_gc, cpu_usage")
    name: str | None = Field(None, description="only this (bare) metric name")
    start_ns: int | None = Field(None, description="window start, epoch ns")
    end_ns: int | None = Field(None, description="window end, epoch ns")
    token_budget: int = Field(2000, ge=200, le=8000)


def _segment(ts: np.ndarray, v: np.ndarray, events: bool = False) -> tuple[int, int] | None:
    """(start_ns, end_ns) of the contiguous run whose mean differs most from the rest (>= 2 samples)."""
    n = len(v)
    if n < 6:
        return None
    c = np.concatenate([[0.0], np.cumsum(v)])
    total = c[-1]
    best, arg = 0.0, None
    for i in range(0, n - 1):
        j = np.arange(i + 2, n + 1)
        k = j - i
        out = n - k
        ok = out >= 3
        if not ok.any():
            continue
        mi = (c[j] - c[i]) / k
        mo = np.where(out > 0, (total - (c[j] - c[i])) / np.maximum(out, 1), 0.0)
        gain = np.abs(mi - mo) * np.sqrt(k * out / n)
        gain[~ok] = 0
        x = int(np.argmax(gain))
        if gain[x] > best:
            best, arg = float(gain[x]), (i, int(j[x]))
    if arg is None:
        return None
    lo, hi = arg
    touches_end = lo == 0 or hi == n
    inside_high = (c[hi] - c[lo]) / (hi - lo) >= (total - (c[hi] - c[lo])) / max(1, n - (hi - lo))
    if touches_end and ((events and not inside_high) or (not events and hi - lo > n // 2)):
        # A step change: the window is the shorter side, or for event counters (errors,
        # preemptions) the side where events happen.
        lo, hi = (hi, n) if lo == 0 else (0, lo)
    end = int(ts[hi]) if hi < n else int(ts[-1]) + 1
    return int(ts[lo]), end


def _against_peers(s: Series, win: tuple[int, int], peers: list[Series]) -> tuple[int, int]:
    """For a step change, the side of the step where the series departs most from its peers."""
    t0, t1 = int(s.ts[0]), int(s.ts[-1]) + 1
    if win[0] > t0 and win[1] < t1:
        return win  # a bump inside the series: no ambiguity
    other = (win[1], t1) if win[0] <= t0 else (t0, win[0])
    if other[1] <= other[0]:
        return win

    def gap(w: tuple[int, int]) -> float:
        own = s.values[(s.ts >= w[0]) & (s.ts < w[1])]
        vals = [p.values[(p.ts >= w[0]) & (p.ts < w[1])] for p in peers]
        ref = [float(np.nanmean(v)) for v in vals if v.size]
        if own.size == 0 or not ref:
            return 0.0
        return abs(float(np.nanmean(own)) - float(np.median(ref)))

    return other if gap(other) > 1.5 * gap(win) else win


def _bits(v: np.ndarray) -> set[str]:
    out: set[str] = set()
    for x in v[~np.isnan(v)]:
        for name, bit in THROTTLE_BITS.items():
            if int(x) & bit:
                out.add(name)
    return out


def _r(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(f"{x:.4g}")


def compare(series: list[Series], start_ns: int | None, end_ns: int | None) -> list[dict]:
    rows: list[dict] = []
    by_name: dict[str, list[Series]] = {}
    for s in series:
        by_name.setdefault(
            s.name
            + "|"
            + ",".join(
                f"{k}={v}"
                for k, v in sorted(s.labels.items())
                if k.lower() in ("mode", "generation", "quantile", "le", "ctxswitchtype", "cpu_mode")
            ),
            [],
        ).append(s)
    for group in by_name.values():
        wins = {
            id(s): ((start_ns, end_ns) if start_ns is not None and end_ns is not None else _segment(s.ts, s.values, s.counter))
            for s in group
        }
        if start_ns is None and len(group) > 1:
            for s in group:
                w = wins[id(s)]
                if w is not None:
                    wins[id(s)] = _against_peers(s, w, [p for p in group if p is not s])
        stats: list[tuple[Series, dict, tuple[int, int]]] = []
        for s in group:
            win = wins[id(s)]
            if win is None:
                continue  # flat series: only a peer
            st = window_stats(s, *win)
            if st is not None:
                stats.append((s, st, win))
        for s, st, win in stats:
            # Peers: every other series of the same metric, over this series' window.
            peers = [window_stats(p, *win) for p in group if p is not s]
            pz = peer_z(st["inside_mean"] - st["outside_median"], [p["inside_mean"] - p["outside_median"] for p in peers if p])
            row: dict[str, Any] = {
                "series": s.key,
                "metric": s.name,
                "host": s.host,
                "gpu": s.gpu,
                "rank": s.rank,
                "counter_as_rate": s.counter,
                "window_ns": list(win),
                "inside_mean": _r(st["inside_mean"]),
                "inside_max": _r(st["inside_max"]),
                "outside_median": _r(st["outside_median"]),
                "z": _r(st["z"]),
                "rel_change": _r(st["rel"]),
                "peer_z": _r(pz),
                "peers": len(group) - 1,
                "window_share": _r(min(1.0, (win[1] - win[0]) / max(1, int(s.ts[-1] - s.ts[0])))),
            }
            if s.detail:
                row["reason"] = s.detail
            if s.family == "throttle_reasons" and not s.detail:
                inside = (s.ts >= win[0]) & (s.ts < win[1])
                row["reasons_inside"] = sorted(_bits(s.values[inside]))
                row["reasons_outside"] = sorted(_bits(s.values[~inside]))
            rows.append(row)
    rows.sort(key=lambda r: -abs(r["z"] or 0))
    return rows


def run(ctx: IncidentContext, args: MetricCompareArgs) -> ToolResult:
    q = args.model_dump(exclude_none=True)
    if args.family not in FAMILIES:
        return ToolResult(tool=NAME, status="error", query=q, message=f"unknown family {args.family!r}; families: {list(FAMILIES)}")
    if (args.start_ns is None) != (args.end_ns is None) or (
        args.start_ns is not None and args.end_ns is not None and args.end_ns <= args.start_ns
    ):
        return ToolResult(tool=NAME, status="error", query=q, message="give both start_ns and end_ns (start before end), or neither")
    try:
        allser = series_of(ctx.bundle)
    except (BundleError, ValueError) as exc:
        return ToolResult(tool=NAME, status="error", query=q, range=ctx.path.name, message=str(exc))
    series = [s for s in allser if s.family == args.family and (args.name is None or s.name == args.name)]
    src = searched(ctx.bundle, f"family {args.family}", f"family {args.family} in {ctx.bundle.metrics_path or ctx.path.name}")
    q.update(live_echo(ctx.bundle))  # the PromQL and range, when Prometheus served the series
    if not series:
        return ToolResult(tool=NAME, status="no_data", query=q, range=src, message=f"no metric of family {args.family!r} in this incident")
    rows = compare(series, args.start_ns, args.end_ns)
    if not rows:
        return ToolResult(tool=NAME, status="no_data", query=q, range=src, message="too few samples inside/outside the window to compare")
    budget = args.token_budget * CHARS_PER_TOKEN
    shown: list[dict] = []
    used = 0
    for r in rows:
        size = len(str(r))
        if shown and used + size > budget * 0.85:
            break
        shown.append(r)
        used += size
    top = rows[0]
    where = f"rank {top['rank']}" if top["rank"] is not None else (top["host"] or "-")
    ratio = _r(1 + (top["rel_change"] or 0))
    summary = (
        f"{len(rows)} series of {args.family}; largest change: {top['series']} on {where} z={top['z']} (x{ratio}), peer z={top['peer_z']}"
    )
    more = f"{len(rows) - len(shown)} more series: pass name= to narrow" if len(shown) < len(rows) else ""
    return ToolResult(
        tool=NAME, status="ok", query=q, range=src, summary=summary, data={"series_total": len(rows), "series": shown}, more=more
    )
