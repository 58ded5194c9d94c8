"""From a bundle's traces: step time per rank and step, step spans, collective arrival skew."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kat.agent.report.model import (
    MAX_HEATMAP_RANKS,
    MAX_HEATMAP_STEPS,
    MAX_SKEW_MARKS,
    MAX_TIMELINE_RANKS,
    MAX_TIMELINE_STEPS,
    Arrival,
    LateSummary,
    RankTimeline,
    StepMatrix,
    StepSpan,
)
from kat.tools.telemetry import Bundle
from kat.tools.telemetry.collectives import collective_rows, match_instances


def read_traces(bundle: Bundle) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """One pass over the ranks: (step table, how steps were measured, collective kernels).

    Step table: one row per (rank, step) with start_ns, end_ns, ms, from step events where the
    trace has them. Each rank's columns are reduced at once and dropped, so memory stays small.
    """
    steps_parts, coll_parts = [], []
    used_events = True
    for r in bundle.ranks:
        df = bundle.rank_columns(r, ["kind", "step", "ts_ns", "dur_ns", "coll_name", "group_ranks"])
        is_step, c = (df["kind"] == "step").to_numpy(), (df["kind"] == "collective").to_numpy()
        step = df["step"].to_numpy()
        ts, end = df["ts_ns"].to_numpy(), df["ts_ns"].to_numpy() + df["dur_ns"].to_numpy()
        has = step >= 0
        pick = has & is_step
        if not pick.any():
            pick = has
            used_events = used_events and not has.any()
        if pick.any():
            g = (
                pd.DataFrame({"step": step[pick], "start_ns": ts[pick], "end_ns": end[pick]})
                .groupby("step")
                .agg(start_ns=("start_ns", "min"), end_ns=("end_ns", "max"))
            )
            g = g.reset_index()
            g["rank"] = r
            steps_parts.append(g)
        if c.any():
            coll_parts.append(collective_rows(df, r))
    coll = (
        pd.concat(coll_parts, ignore_index=True)
        if coll_parts
        else pd.DataFrame(columns=["rank", "step", "ts_ns", "dur_ns", "coll", "group"])
    )
    if not steps_parts:
        return pd.DataFrame(columns=["rank", "step", "start_ns", "end_ns", "ms"]), "no steps in the traces", coll
    t = pd.concat(steps_parts, ignore_index=True)
    t["ms"] = (t["end_ns"] - t["start_ns"]) / 1e6
    source = "profiler step events (ProfilerStep# / engine steps)" if used_events else "span of each step's events (no step events)"
    return t, source, coll


def _pick_ranks(all_ranks: list[int], first: list[int], cap: int, score: dict[int, float]) -> list[int]:
    """`first` (suspects, finding ranks), then the ranks that deviate most, up to `cap`."""
    chosen = [r for r in dict.fromkeys(first) if r in all_ranks][:cap]
    rest = sorted((r for r in all_ranks if r not in chosen), key=lambda r: (-score.get(r, 0.0), r))
    return sorted(chosen + rest[: cap - len(chosen)])


def sync_groups(bundle: Bundle, coll: pd.DataFrame) -> list[list[int]]:
    """Ranks that run in lock-step: the manifest's TP groups, else the collectives' groups, else all."""
    tp = [sorted(g) for g in bundle.manifest.topology.groups.tp if len(g) > 1]
    if tp:
        return tp
    seen: list[list[int]] = []
    if not coll.empty:
        for gstr in coll["group"].unique():
            members = sorted({int(x) for x in str(gstr).replace(" ", "").split(",") if x.lstrip("-").isdigit()})
            if len(members) > 1 and members not in seen:
                seen.append(members)
    return seen or [list(bundle.ranks)]


def _peer_deviation(own: pd.DataFrame, groups: list[list[int]]) -> pd.DataFrame:
    """(x - median of the rank's lock-step peers at that step) / that median, %."""
    dev = pd.DataFrame(np.nan, index=own.index, columns=own.columns)
    present = set(own.index)
    for r in own.index:
        peers = sorted({p for g in groups if r in g for p in g if p != r and p in present}) or [p for p in own.index if p != r]
        if not peers:
            continue
        med = own.loc[peers].median(axis=0)
        dev.loc[r] = (own.loc[r] - med) / med.replace(0, np.nan) * 100.0
    return dev


def _bucketed(frame: pd.DataFrame, buckets: list[list[int]]) -> list[list[float | None]]:
    cols = {s: i for i, s in enumerate(frame.columns)}
    arr = frame.to_numpy(dtype=float)
    out = np.full((arr.shape[0], len(buckets)), np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN buckets stay NaN
            for j, b in enumerate(buckets):
                out[:, j] = np.nanmean(arr[:, [cols[s] for s in b]], axis=1)
    return [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in out]


def step_matrix(table: pd.DataFrame, coll: pd.DataFrame, groups: list[list[int]], source: str, priority: list[int]) -> StepMatrix | None:
    if table.empty:
        return None
    t = table
    if not coll.empty:
        cms = (coll.groupby(["rank", "step"])["dur_ns"].sum() / 1e6).rename("coll_ms").reset_index()
        t = table.merge(cms, on=["rank", "step"], how="left")
    else:
        t = table.assign(coll_ms=0.0)
    t = t.assign(own_ms=(t["ms"] - t["coll_ms"].fillna(0.0)).clip(lower=0.0))
    wide = t.pivot_table(index="rank", columns="step", values="ms", aggfunc="sum")
    own = t.pivot_table(index="rank", columns="step", values="own_ms", aggfunc="sum")
    dev = _peer_deviation(own, groups)
    notes: list[str] = []
    score = dev.abs().max(axis=1).fillna(0.0).to_dict()
    ranks = list(wide.index)
    if len(ranks) > MAX_HEATMAP_RANKS:
        keep = _pick_ranks(ranks, priority, MAX_HEATMAP_RANKS, score)
        notes.append(f"{len(ranks)} ranks: showing {len(keep)} (suspects, finding ranks, then the largest deviations)")
        wide, dev = wide.loc[keep], dev.loc[keep]
    steps = [int(s) for s in wide.columns]
    if len(steps) > MAX_HEATMAP_STEPS:
        edges = np.linspace(0, len(steps), MAX_HEATMAP_STEPS + 1).astype(int)
        buckets = [steps[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]
        notes.append(f"{len(steps)} steps: drawn as {len(buckets)} buckets of consecutive steps (bucket mean)")
    else:
        buckets = [[s] for s in steps]
    labels = [str(b[0]) if len(b) == 1 else f"{b[0]}..{b[-1]}" for b in buckets]
    return StepMatrix(
        ranks=[int(r) for r in wide.index],
        steps=labels,
        step_ids=buckets,
        ms=_bucketed(wide, buckets),
        deviation_pct=_bucketed(dev.reindex(columns=wide.columns), buckets),
        groups=groups,
        source=source,
        notes=notes,
    )


def rank_spans(table: pd.DataFrame, priority: list[int]) -> tuple[list[RankTimeline], list[str]]:
    notes: list[str] = []
    if table.empty:
        return [], notes
    ranks = sorted(int(r) for r in table["rank"].unique())
    if len(ranks) > MAX_TIMELINE_RANKS:
        med = table.groupby("step")["ms"].transform("median")
        score = ((table["ms"] - med).abs() / med.replace(0, np.nan)).groupby(table["rank"]).max().fillna(0.0).to_dict()
        keep = _pick_ranks(ranks, priority, MAX_TIMELINE_RANKS, score)
        notes.append(f"{len(ranks)} ranks: the timeline shows {len(keep)} (suspects, finding ranks, then the largest deviations)")
        ranks = keep
    out = []
    merged = False
    for r in ranks:
        t = table[table["rank"] == r].sort_values("start_ns")
        st, s0, s1 = t["step"].to_numpy(), t["start_ns"].to_numpy(), t["end_ns"].to_numpy()
        if len(t) > MAX_TIMELINE_STEPS:
            merged = True
            edges = np.linspace(0, len(t), MAX_TIMELINE_STEPS + 1).astype(int)
            spans = [
                StepSpan(step=int(st[a]), start_ns=int(s0[a]), end_ns=int(s1[a:b].max())) for a, b in zip(edges[:-1], edges[1:]) if b > a
            ]
        else:
            spans = [StepSpan(step=int(a), start_ns=int(b), end_ns=int(c)) for a, b, c in zip(st, s0, s1)]
        out.append(RankTimeline(rank=r, spans=spans))
    if merged:
        notes.append(f"more than {MAX_TIMELINE_STEPS} steps per rank: consecutive steps merged into {MAX_TIMELINE_STEPS} spans")
    return out, notes


def arrivals(c: pd.DataFrame) -> tuple[list[Arrival], list[LateSummary], int, list[str]]:
    """Match each rank's n-th collective of a group in a step with its peers' n-th one.

    A collective kernel starts when its rank reaches it; the peers that started earlier spin
    until the last one arrives, so the start-time spread is how long the last rank kept them.
    """
    if c.empty:
        return [], [], 0, ["no collective kernels in the traces: no arrival skew to show"]
    c = match_instances(c)
    if c.empty:
        return [], [], 0, ["collectives could not be matched across ranks (no two ranks share a group)"]
    inst = c[c["is_last"]][["inst", "coll", "step", "rank", "skew", "first_ts"]].rename(columns={"rank": "last_rank"})
    waited = c.groupby("inst", sort=False)["wait"].sum().rename("waited").reset_index()
    inst = inst.merge(waited, on="inst")
    per_rank = c.groupby("rank")["ts_ns"].size()
    times_last = inst.groupby("last_rank").size()
    waited_on = inst.groupby("last_rank")["waited"].sum()
    late = [
        LateSummary(
            rank=int(r),
            times_last=int(times_last.get(r, 0)),
            instances=int(n),
            waited_on_ms=round(float(waited_on.get(r, 0)) / 1e6, 4),
        )
        for r, n in per_rank.items()
    ]
    late.sort(key=lambda x: (-x.waited_on_ms, x.rank))
    top = inst.nlargest(MAX_SKEW_MARKS, "skew")
    members_of = c[c["inst"].isin(top["inst"])].groupby("inst")
    out = []
    for row in top.itertuples(index=False):
        members = members_of.get_group(row.inst)
        waits = {int(rr): int(w) for rr, w in zip(members["rank"], members["wait"]) if int(rr) != int(row.last_rank)}
        out.append(
            Arrival(
                coll=str(row.coll) or "collective",
                step=int(row.step),
                group=sorted(int(x) for x in members["rank"]),
                ts_ns=int(row.first_ts),
                last_rank=int(row.last_rank),
                skew_ns=int(row.skew),
                waits_ns=waits,
            )
        )
    notes = []
    if len(inst) > MAX_SKEW_MARKS:
        notes.append(f"{len(inst)} collective instances: the {MAX_SKEW_MARKS} largest arrival skews are marked")
    return out, late, int(len(inst)), notes
