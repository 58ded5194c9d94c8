"""`trace_slice`: events of a rank / steps / window / name, summarised within a token budget."""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError

from kat.tools.context import IncidentContext
from kat.tools.evidence import CHARS_PER_TOKEN, ToolResult, clip_text
from kat.tools.telemetry import BundleError
from kat.tools.telemetry.queries import EventQuery, query_events

NAME = "trace_slice"
DESCRIPTION = (
    "Look at trace events of one or more ranks, optionally restricted to steps, a time window "
    "(epoch ns), an event-name regex and event kinds. Returns per-name totals (count, mean, max "
    "duration), the same names on peer ranks for comparison, and the first rows."
)


class TraceSliceArgs(BaseModel):
    ranks: list[int] | None = Field(None, description="ranks to show (default: all)")
    steps: list[int] | None = Field(None, description="engine steps (ProfilerStep numbers)")
    around_step: int | None = Field(None, description="shortcut: this step and 2 on each side")
    start_ns: int | None = Field(None, description="window start, epoch ns")
    end_ns: int | None = Field(None, description="window end, epoch ns")
    name_pattern: str | None = Field(None, description="regex on the event name, case-insensitive")
    kinds: list[str] | None = Field(None, description="python, cpu_op, cuda_runtime, kernel, memcpy, memset, collective, annotation, step")
    compare_peers: bool = Field(True, description="also summarise the same filter on the other ranks")
    token_budget: int = Field(1200, ge=200, le=8000)


_AGG_ROWS = 10_000


def _by_name(rows: list[dict]) -> list[dict]:
    """Per (name, kind) totals from the matched rows, largest total first.

    Computed here from the rows: EventQueryResult.by_name currently labels groups with the row
    index instead of the event name (reported to the owner of tools/telemetry)."""
    acc: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        acc.setdefault((str(r["name"]), str(r["kind"])), []).append(int(r["dur_ns"] or 0))
    out = [
        {
            "name": n,
            "kind": k,
            "count": len(d),
            "mean_ns": sum(d) / len(d),
            "max_ns": max(d),
            "total_ns": sum(d),
            "ranks": sorted({int(r["rank"]) for r in rows if str(r["name"]) == n})[:32],
        }
        for (n, k), d in acc.items()
    ]
    return sorted(out, key=lambda x: -x["total_ns"])


def _names(by: list[dict], top: int) -> list[dict]:
    return [
        {
            "name": clip_text(n["name"], 100),
            "kind": n["kind"],
            "count": n["count"],
            "mean_us": round(n["mean_ns"] / 1e3, 1),
            "max_us": round(n["max_ns"] / 1e3, 1),
            "total_ms": round(n["total_ns"] / 1e6, 3),
        }
        for n in by[:top]
    ]


def _per_rank(rows: list[dict]) -> list[dict]:
    acc: dict[int, list[int]] = {}
    for r in rows:
        acc.setdefault(int(r["rank"]), []).append(int(r["dur_ns"] or 0))
    return [
        {"rank": k, "count": len(v), "max_us": round(max(v) / 1e3, 1), "total_ms": round(sum(v) / 1e6, 3)} for k, v in sorted(acc.items())
    ]


def run(ctx: IncidentContext, args: TraceSliceArgs) -> ToolResult:
    q = args.model_dump(exclude_none=True)
    steps = args.steps
    if args.around_step is not None:
        steps = sorted(set(steps or []) | set(range(args.around_step - 2, args.around_step + 3)))
    budget_chars = args.token_budget * CHARS_PER_TOKEN
    try:
        bundle = ctx.bundle
        eq = EventQuery(
            ranks=args.ranks,
            steps=steps,
            start_ns=args.start_ns,
            end_ns=args.end_ns,
            kinds=args.kinds,
            name_pattern=args.name_pattern,
            limit=_AGG_ROWS,
        )
        res = query_events(bundle, eq)
    except (ValidationError, ValueError, BundleError) as exc:
        return ToolResult(tool=NAME, status="error", query=q, range=str(ctx.path.name), message=str(exc))
    if res.status != "ok":
        return ToolResult(tool=NAME, status=res.status, query=q, range=res.searched, message=res.message)
    top = max(5, budget_chars // 600)
    n_rows = max(5, budget_chars // 400)
    by = _by_name(res.rows)
    data: dict = {
        "total_matches": res.total_matches,
        "distinct_names": len(by),
        "by_name": _names(by, top),
        "per_rank": _per_rank(res.rows)[:64],
        "rows": [{k: r.get(k) for k in ("rank", "step", "kind", "name", "ts_ns", "dur_ns")} for r in res.rows[:n_rows]],
    }
    for r in data["rows"]:
        r["name"] = clip_text(str(r["name"]), 80)
    # Per-rank, per-name comparison: the asked ranks against everyone else.
    if args.compare_peers and args.ranks:
        peers = [r for r in bundle.ranks if r not in args.ranks]
        if peers:
            pq = eq.model_copy(update={"ranks": peers})
            pres = query_events(bundle, pq)
            if pres.status == "ok":
                peer = {(n["name"], n["kind"]): n for n in _by_name(pres.rows)}
                data["vs_peers"] = [
                    {
                        "name": clip_text(n["name"], 100),
                        "mean_us": round(n["mean_ns"] / 1e3, 1),
                        "peer_mean_us": round(peer[(n["name"], n["kind"])]["mean_ns"] / 1e3, 1),
                        "ratio": round(n["mean_ns"] / max(1.0, peer[(n["name"], n["kind"])]["mean_ns"]), 2),
                    }
                    for n in by[:top]
                    if (n["name"], n["kind"]) in peer
                ]
    more = ""
    if res.total_matches > len(data["rows"]) or len(by) > top:
        more = (
            f"{res.total_matches} events, {len(by)} distinct names; showing {len(data['rows'])} rows and "
            f"{min(top, len(by))} names: narrow ranks/steps/name_pattern or raise token_budget"
        )
    slow = data.get("vs_peers") or []
    worst = max(slow, key=lambda x: x["ratio"], default=None)
    summary = f"{res.total_matches} events on ranks {args.ranks or 'all'}"
    if worst and worst["ratio"] > 1.2:
        summary += f"; slowest vs peers: {worst['name']} {worst['ratio']}x ({worst['mean_us']} vs {worst['peer_mean_us']} us)"
    note = f"totals cover the first {_AGG_ROWS} of {res.total_matches} events" if res.truncated else ""
    return ToolResult(tool=NAME, status="ok", query=q, range=res.searched, summary=summary, data=data, more=more, message=note)
