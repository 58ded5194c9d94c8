"""Queries over a bundle's events, metrics and logs, with row budgets and echoed queries.

Every result repeats the query it answers and says what was searched, so a caller (a person or
the Analyzer) can see why it got nothing and correct itself.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from kat.tools.telemetry.bundle import Bundle
from kat.tools.telemetry.manifest import rank_join
from kat.tools.telemetry.schema import KINDS
from kat.tools.telemetry.tables import LOG_LEVELS

MAX_PATTERN_LEN = 256
Status = Literal["ok", "no_data", "error"]


def compile_pattern(pattern: str, field: str = "pattern") -> re.Pattern[str]:
    """Case-insensitive regex with a length cap; errors name the field and the pattern."""
    if len(pattern) > MAX_PATTERN_LEN:
        raise ValueError(f"{field} is {len(pattern)} characters; at most {MAX_PATTERN_LEN} allowed")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"{field} {pattern!r} is not a valid regular expression: {exc}") from exc


class _Window(BaseModel):
    start_ns: int | None = Field(default=None, description="window start, epoch ns (inclusive)")
    end_ns: int | None = Field(default=None, description="window end, epoch ns (exclusive)")

    @field_validator("end_ns")
    @classmethod
    def _ordered(cls, v: int | None, info: ValidationInfo) -> int | None:
        start = info.data.get("start_ns")
        if v is not None and start is not None and v < start:
            raise ValueError(f"end_ns {v} is before start_ns {start}")
        return v


# -- events ----------------------------------------------------------------------------------
class EventQuery(_Window):
    ranks: list[int] | None = None
    steps: list[int] | None = None
    kinds: list[str] | None = None
    name_pattern: str | None = Field(default=None, description="regex on the event name, case-insensitive")
    limit: int = Field(default=200, ge=1, le=10_000, description="row budget")

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: list[str] | None) -> list[str] | None:
        if v:
            bad = [k for k in v if k not in KINDS]
            if bad:
                raise ValueError(f"unknown event kind(s) {bad}; known: {list(KINDS)}")
        return v

    @field_validator("name_pattern")
    @classmethod
    def _valid_pattern(cls, v: str | None) -> str | None:
        if v:
            compile_pattern(v, "name_pattern")
        return v


class NameSummary(BaseModel):
    name: str
    kind: str
    count: int
    total_ns: int
    mean_ns: float
    p50_ns: float
    max_ns: int


class EventQueryResult(BaseModel):
    status: Status
    query: EventQuery
    searched: str
    total_matches: int
    returned: int
    truncated: bool
    rows: list[dict] = Field(default_factory=list)
    by_name: list[NameSummary] = Field(default_factory=list)
    message: str = ""


def _category_mask(col: pd.Series, values: list[str]) -> np.ndarray:
    """Membership test on a categorical's integer codes (much faster than Series.isin)."""
    cats = col.cat.categories
    wanted = [cats.get_loc(v) for v in values if v in cats]
    return np.isin(col.cat.codes.to_numpy(), wanted)


_EVENT_ROW_COLUMNS = ["rank", "step", "kind", "name", "ts_ns", "dur_ns", "stream", "coll_name", "msg_bytes", "id", "parent"]


def query_events(bundle: Bundle, q: EventQuery) -> EventQueryResult:
    ranks = q.ranks if q.ranks is not None else bundle.ranks
    missing = [r for r in ranks if r not in bundle.traces]
    searched = f"traces of ranks {ranks} in {bundle.root}"
    if missing:
        return EventQueryResult(
            status="error",
            query=q,
            searched=searched,
            total_matches=0,
            returned=0,
            truncated=False,
            message=f"no trace for rank(s) {missing}; ranks present: {bundle.ranks}",
        )
    parts = []
    pat = compile_pattern(q.name_pattern, "name_pattern") if q.name_pattern else None
    for r in ranks:
        df = bundle.events(r)
        mask = np.ones(len(df), dtype=bool)
        if q.start_ns is not None:
            mask &= (df["ts_ns"].to_numpy() + df["dur_ns"].to_numpy()) > q.start_ns
        if q.end_ns is not None:
            mask &= df["ts_ns"].to_numpy() < q.end_ns
        if q.steps is not None:
            mask &= np.isin(df["step"].to_numpy(), q.steps)
        if q.kinds:
            mask &= _category_mask(df["kind"], q.kinds)
        if pat is not None:
            # Match on the (few) distinct names, not on every row.
            cats = df["name"].cat.categories
            hit = np.fromiter((pat.search(c) is not None for c in cats), dtype=bool, count=len(cats))
            codes = df["name"].cat.codes.to_numpy()
            mask &= hit[codes] & (codes >= 0)
        if mask.any():
            parts.append(df.loc[mask, _EVENT_ROW_COLUMNS])
    if not parts:
        return EventQueryResult(
            status="no_data",
            query=q,
            searched=searched,
            total_matches=0,
            returned=0,
            truncated=False,
            message="no event matched every filter",
        )
    hits = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    total = len(hits)
    grouped = hits.groupby(["name", "kind"], observed=True)["dur_ns"]
    agg = grouped.agg(["count", "sum", "mean", "median", "max"]).reset_index().sort_values("sum", ascending=False)
    by_name = [
        NameSummary(
            name=str(r["name"]),
            kind=str(r["kind"]),
            count=int(r["count"]),
            total_ns=int(r["sum"]),
            mean_ns=float(r["mean"]),
            p50_ns=float(r["median"]),
            max_ns=int(r["max"]),
        )
        for _, r in agg.head(50).iterrows()
    ]
    shown = hits.sort_values(["ts_ns", "rank"], kind="stable").head(q.limit)
    rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()} for rec in shown.astype(object).to_dict("records")]
    msg = f"showing {len(rows)} of {total} matches; narrow the window, steps or name_pattern, or raise limit" if total > q.limit else ""
    return EventQueryResult(
        status="ok",
        query=q,
        searched=searched,
        total_matches=total,
        returned=len(rows),
        truncated=total > q.limit,
        rows=rows,
        by_name=by_name,
        message=msg,
    )


# -- metrics ---------------------------------------------------------------------------------
class MetricQuery(_Window):
    name: str = Field(description="metric name, exact; or a regex if no exact name matches")
    host: str | None = None
    gpu: int | None = None
    rank: int | None = None
    max_points: int = Field(default=60, ge=2, le=5000)


class SeriesSummary(BaseModel):
    count: int
    min: float
    max: float
    mean: float
    p50: float
    p95: float
    first: float
    last: float


class MetricSeries(BaseModel):
    name: str
    host: str
    gpu: int
    rank: int
    labels: dict[str, str] = Field(default_factory=dict, description="other label columns (cpu, mode, device, ...)")
    summary: SeriesSummary
    points: list[tuple[int, float]] = Field(description="(ts_ns, value), downsampled to max_points")
    downsampled: bool


class MetricQueryResult(BaseModel):
    status: Status
    query: MetricQuery
    searched: str
    series: list[MetricSeries] = Field(default_factory=list)
    message: str = ""


def summarize(values: np.ndarray) -> SeriesSummary:
    v = values[~np.isnan(values)] if values.size else values
    if v.size == 0:
        return SeriesSummary(count=0, min=np.nan, max=np.nan, mean=np.nan, p50=np.nan, p95=np.nan, first=np.nan, last=np.nan)
    return SeriesSummary(
        count=int(v.size),
        min=float(v.min()),
        max=float(v.max()),
        mean=float(v.mean()),
        p50=float(np.percentile(v, 50)),
        p95=float(np.percentile(v, 95)),
        first=float(v[0]),
        last=float(v[-1]),
    )


def _downsample(ts: np.ndarray, v: np.ndarray, max_points: int) -> tuple[list[tuple[int, float]], bool]:
    if len(ts) <= max_points:
        return [(int(a), float(b)) for a, b in zip(ts, v)], False
    # Bucket means keep level shifts visible where plain striding would alias them.
    edges = np.linspace(0, len(ts), max_points + 1).astype(int)
    pts = [(int(ts[a]), float(np.nanmean(v[a:b]))) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return pts, True


def query_metrics(bundle: Bundle, q: MetricQuery) -> MetricQueryResult:
    from kat.tools.telemetry.metric_source import metric_source_of

    # The bundle's file or Prometheus: one API (tools/telemetry/metric_source.py).
    got = metric_source_of(bundle).select(q.name, q.start_ns, q.end_ns)
    searched = got.searched
    if got.status != "ok" or got.frame is None:
        return MetricQueryResult(status=got.status, query=q, searched=searched, message=got.message)
    chosen, m = got.chosen, got.frame
    mask = np.ones(len(m), dtype=bool)
    if q.host is not None:
        mask &= (m["host"] == q.host).to_numpy()
    if q.gpu is not None:
        mask &= (m["gpu"] == q.gpu).to_numpy()
    if q.rank is not None:
        mask &= (m["rank"] == q.rank).to_numpy()
    sel = m.loc[mask]
    if sel.empty:
        return MetricQueryResult(
            status="no_data",
            query=q,
            searched=searched,
            message=f"metric(s) {chosen} exist but no sample matches the host/gpu/rank/window filters",
        )
    out = []
    # A series is one label set: extra label columns (cpu, mode, device...) split series too.
    extra = [c for c in sel.columns if c not in ("ts_ns", "name", "value", "host", "gpu", "rank")]
    keys = ["name", "host", "gpu", "rank"] + extra
    for key, g in sel.groupby(keys, observed=True, sort=True):
        name, host, gpu, rank = key[:4]
        labels = {c: str(v) for c, v in zip(extra, key[4:]) if str(v) != ""}
        ts, v = g["ts_ns"].to_numpy(), g["value"].to_numpy(dtype=float)
        pts, down = _downsample(ts, v, q.max_points)
        out.append(
            MetricSeries(
                name=str(name),
                host=str(host),
                gpu=int(gpu),
                rank=int(rank),
                labels=labels,
                summary=summarize(v),
                points=pts,
                downsampled=down,
            )
        )
    return MetricQueryResult(status="ok", query=q, searched=searched, series=out)


# -- logs ------------------------------------------------------------------------------------
class LogQuery(_Window):
    pattern: str | None = Field(default=None, description="regex on the message, case-insensitive")
    keywords: list[str] | None = Field(default=None, description="all must appear (case-insensitive)")
    source: str | None = None
    min_level: str | None = Field(default=None, description="debug|info|warning|error|critical")
    host: str | None = None
    rank: int | None = None
    ranks: list[int] | None = Field(
        default=None, description="these ranks' lines, plus host-level lines (no rank) that name their GPU, host slot or rank"
    )
    limit: int = Field(default=50, ge=1, le=2000, description="distinct messages to return")

    def wanted_ranks(self) -> list[int] | None:
        if self.rank is None and self.ranks is None:
            return None
        return sorted(set(self.ranks or []) | ({self.rank} if self.rank is not None else set()))

    @field_validator("min_level")
    @classmethod
    def _level(cls, v: str | None) -> str | None:
        if v is not None and v.lower() not in LOG_LEVELS:
            raise ValueError(f"min_level {v!r} is not one of {list(LOG_LEVELS)}")
        return v.lower() if v else v

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, v: str | None) -> str | None:
        if v:
            compile_pattern(v, "pattern")
        return v


class LogGroup(BaseModel):
    template: str = Field(description="message with numbers masked; identical templates are merged")
    example: str
    count: int
    first_ts_ns: int
    last_ts_ns: int
    hosts: list[str]
    ranks: list[int]
    sources: list[str]
    level: str
    joined: dict[int, str] = Field(default_factory=dict, description="host-level lines (no rank) joined to a searched rank: rank -> why")


class LogQueryResult(BaseModel):
    status: Status
    query: LogQuery
    searched: str
    total_matches: int
    groups: list[LogGroup] = Field(default_factory=list)
    truncated: bool = False
    message: str = ""


_NUMBERS = re.compile(r"0x[0-9a-f]+|\d+(?:\.\d+)?", re.IGNORECASE)


def query_logs(bundle: Bundle, q: LogQuery) -> LogQueryResult:
    logs = bundle.logs
    src = str(bundle.logs_path) if bundle.logs_path else f"{bundle.root} (no logs file)"
    searched = f"logs in {src}"
    if logs.empty:
        return LogQueryResult(status="no_data", query=q, searched=searched, total_matches=0, message="the bundle has no logs")
    mask = np.ones(len(logs), dtype=bool)
    if q.start_ns is not None:
        mask &= (logs["ts_ns"] >= q.start_ns).to_numpy()
    if q.end_ns is not None:
        mask &= (logs["ts_ns"] < q.end_ns).to_numpy()
    if q.source:
        mask &= (logs["source"].astype(str).str.lower() == q.source.lower()).to_numpy()
    if q.host is not None:
        mask &= (logs["host"] == q.host).to_numpy()
    if q.min_level:
        allowed = set(LOG_LEVELS[LOG_LEVELS.index(q.min_level) :])
        mask &= logs["level"].isin(allowed).to_numpy()
    msgs = logs["message"]
    if q.pattern:
        pat = compile_pattern(q.pattern)
        idx = np.flatnonzero(mask)
        mask[idx] = [pat.search(m) is not None for m in msgs.to_numpy()[idx]]
    if q.keywords:
        idx = np.flatnonzero(mask)
        kws = [k.lower() for k in q.keywords if k]
        mask[idx] = [all(k in m.lower() for k in kws) for m in msgs.to_numpy()[idx]]
    why = _rank_scope(bundle, logs, mask, q.wanted_ranks())
    sel = logs.loc[mask]
    if sel.empty:
        return LogQueryResult(
            status="no_data", query=q, searched=searched, total_matches=0, message=f"no log line matched among {len(logs)} lines"
        )
    templates = [_NUMBERS.sub("<n>", m) for m in sel["message"]]
    sel = sel.assign(template=templates)
    joined: dict[str, dict[int, str]] = {}
    for msg, reasons in why.items():
        joined.setdefault(_NUMBERS.sub("<n>", msg), {}).update(reasons)
    groups = []
    for tmpl, g in sel.groupby("template", sort=False):
        lv = g["level"].astype(str)
        worst = max(lv, key=lambda x: LOG_LEVELS.index(x) if x in LOG_LEVELS else -1)
        groups.append(
            LogGroup(
                template=str(tmpl),
                example=str(g["message"].iloc[0]),
                count=len(g),
                first_ts_ns=int(g["ts_ns"].min()),
                last_ts_ns=int(g["ts_ns"].max()),
                hosts=sorted(set(g["host"].astype(str)) - {""}),
                ranks=sorted({int(r) for r in g["rank"] if r >= 0}),
                sources=sorted(set(g["source"].astype(str)) - {""}),
                level=worst,
                joined=dict(sorted(joined.get(str(tmpl), {}).items())),
            )
        )
    sev = {lv: i for i, lv in enumerate(LOG_LEVELS)}
    groups.sort(key=lambda g: (-sev.get(g.level, -1), g.first_ts_ns))
    truncated = len(groups) > q.limit
    return LogQueryResult(
        status="ok",
        query=q,
        searched=searched,
        total_matches=len(sel),
        groups=groups[: q.limit],
        truncated=truncated,
        message=f"{len(groups)} distinct messages; showing {q.limit}" if truncated else "",
    )


def _rank_scope(bundle: Bundle, logs: pd.DataFrame, mask: np.ndarray, ranks: list[int] | None) -> dict[str, dict[int, str]]:
    """Narrow `mask` to `ranks`: their own lines, and host-level lines (rank < 0) that name one of them
    (by PCI bus id, 'GPU N' on their host, or 'rank N'). Returns message -> {rank: why} for the joined lines."""
    if ranks is None:
        return {}
    rank_col = logs["rank"].to_numpy()
    own = np.isin(rank_col, ranks)
    host_level = mask & (rank_col < 0)
    mask &= own
    idx = np.flatnonzero(host_level)
    if not len(idx):
        return {}
    join = rank_join(bundle.manifest, bundle.ranks)
    wanted = set(ranks)
    why: dict[str, dict[int, str]] = {}
    hosts, msgs = logs["host"].astype(str).to_numpy(), logs["message"].to_numpy()
    for i in idx:
        host = hosts[i]
        named = {r: w for r, w in join.reasons(str(msgs[i]), [host] if host else []).items() if r in wanted}
        if named:
            mask[i] = True
            why.setdefault(str(msgs[i]), {}).update(named)
    return why
