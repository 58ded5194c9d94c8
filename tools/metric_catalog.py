"""`metric_catalog`: what metrics the incident has, sorted into families. Call it first.

Lists, per family (knowledge/metric_families.py), the metric names with their exporter, label
keys and a few values, the hosts/GPUs/ranks covered and the time span. Unknown names land in
`unclassified` and stay searchable with metric_lookup / metric_compare.
"""

from __future__ import annotations

from collections import defaultdict

from pydantic import BaseModel, Field

from kat.knowledge.metric_families import FAMILIES
from kat.tools.context import IncidentContext
from kat.tools.evidence import ToolResult
from kat.tools.metric_series import live_echo, searched, series_of
from kat.tools.telemetry import BundleError

NAME = "metric_catalog"
DESCRIPTION = (
    "List the incident's metrics classified into families (gpu_temperature, sm_clock, throttle_reasons, "
    "power_draw, power_limit, ecc_xid, nvlink, pcie, nic_retransmits, cpu_usage, cpu_throttling, run_queue, "
    "load, numa, disk_io, kv_cache, preemptions, request_rate, prompt_length, latency, runtime_gc, log_volume, "
    "..., unclassified): names, exporter, label keys and values, hosts/GPUs/ranks covered, time span. "
    "Call it before metric_lookup / metric_compare: metric names differ between exporters."
)


class MetricCatalogArgs(BaseModel):
    family: str | None = Field(None, description="only this family")
    token_budget: int = Field(2500, ge=200, le=8000)


def run(ctx: IncidentContext, args: MetricCatalogArgs) -> ToolResult:
    q = args.model_dump(exclude_none=True)
    if args.family is not None and args.family not in FAMILIES:
        return ToolResult(tool=NAME, status="error", query=q, message=f"unknown family {args.family!r}; families: {list(FAMILIES)}")
    try:
        series = series_of(ctx.bundle)
    except (BundleError, ValueError) as exc:
        return ToolResult(tool=NAME, status="error", query=q, range=ctx.path.name, message=str(exc))
    from kat.tools.telemetry.metric_source import metric_source_of

    src = searched(ctx.bundle, "every metric", metric_source_of(ctx.bundle).describe())
    q.update(live_echo(ctx.bundle))
    if not series:
        return ToolResult(tool=NAME, status="no_data", query=q, range=src, message="the bundle has no metrics")
    fams: dict[str, dict] = defaultdict(lambda: {"metrics": {}, "hosts": set(), "gpus": set(), "ranks": set()})
    t0 = min(int(s.ts.min()) for s in series if len(s.ts))
    t1 = max(int(s.ts.max()) for s in series if len(s.ts))
    for s in series:
        if args.family and s.family != args.family:
            continue
        f = fams[s.family]
        m = f["metrics"].setdefault(s.name, {"exporter": s.exporter, "series": 0, "counter": s.counter, "labels": defaultdict(set)})
        m["series"] += 1
        for k, v in s.labels.items():
            if len(m["labels"][k]) < 6:
                m["labels"][k].add(v)
        if s.host:
            f["hosts"].add(s.host)
        if s.gpu is not None:
            f["gpus"].add(f"{s.host}:{s.gpu}")
        if s.rank is not None:
            f["ranks"].add(s.rank)
    data = {
        "time_span_ns": [t0, t1],
        "families": {
            fam: {
                "about": FAMILIES[fam][0],
                "scope": FAMILIES[fam][1],
                "metrics": [
                    {
                        "name": n,
                        "exporter": m["exporter"],
                        "series": m["series"],
                        "counter_as_rate": m["counter"],
                        "labels": {k: sorted(v) for k, v in m["labels"].items()},
                    }
                    for n, m in sorted(f["metrics"].items())
                ],
                "hosts": sorted(f["hosts"]),
                "gpus": sorted(f["gpus"]),
                "ranks": sorted(f["ranks"]),
            }
            for fam, f in sorted(fams.items())
        },
    }
    absent = [f for f in FAMILIES if f not in fams and f != "unclassified"]
    data["absent_families"] = absent
    summary = f"{sum(len(f['metrics']) for f in fams.values())} metrics in {len(fams)} families: " + ", ".join(
        f"{k} ({len(v['metrics'])})" for k, v in sorted(fams.items())
    )
    return ToolResult(tool=NAME, status="ok", query=q, range=src, summary=summary, data=data)
