"""Why a rank arrived late when none of its measured work ran slow: untraced time.

A late arrival is usually explained by work that ran slower than the peers' (inter/intra tests).
When nothing did, the time went where the trace has no events. Two places are measured, each
against the same step of the peers:

- the step span's own time: a pause before or between the step's ops (GC, the GIL, a blocked
  detokenizer), `software`;
- the entry delay of each host-side collective: from the end of the rank's last compute before
  it to the moment the transport starts. When that delay sits inside frames opened to issue the
  collective (a communicator wrapper), it is the communication path, `network` (host
  collectives are gloo over TCP); otherwise it is a pause, `software`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kat.tools.outpost.models import DetectorConfig
from kat.tools.outpost.tree import CLS_COLL, CLS_CPU, CLS_STEP, NodeTable

# Share of the time the peers waited on the rank that a delay must account for to be its cause.
EXPLAINED_SHARE = 0.5
_COLS = ["gkey", "rank", "step", "component", "excess", "observed", "baseline", "name_code", "local"]


def uninstrumented_causes(table: NodeTable, late: pd.DataFrame, cfg: DetectorConfig) -> pd.DataFrame:
    """For each late (gkey, rank, step): the step's own time or its collectives' entry delay,
    when it exceeds the peers' same quantity in that step by at least half the rank's blame
    (the time the peers waited on it alone), by `min_excess_ns`, and far beyond how much that
    quantity differs between members in other steps (robust z, `cfg.z`).
    Rows: gkey, rank, step, component, excess, observed, baseline, name_code, local."""
    if late.empty:
        return pd.DataFrame(columns=_COLS)
    out = []
    for gkey, rows in late.groupby("gkey", sort=False):
        members = [int(m) for m in str(gkey).split(",") if int(m) in table.offsets]
        delays = {(r, s, role): d for r in members for (s, role), d in _rank_delays(table, r).items()}
        noise = _spread(delays, members)
        for rank, step, blame in zip(rows["rank"], rows["step"], rows["blame_ns"]):
            best = None
            for role in ("step", "entry"):
                mine = delays.get((int(rank), int(step), role))
                others = [delays[(m, int(step), role)].total for m in members if m != rank and (m, int(step), role) in delays]
                if mine is None or not others:
                    continue
                base = float(np.median(others))
                excess = mine.total - base
                need = max(EXPLAINED_SHARE * float(blame), cfg.z * noise.get(role, 0.0), float(cfg.min_excess_ns), 1.0)
                if excess >= need and (best is None or excess > best[1]):
                    best = (mine, excess, base)
            if best is not None:
                d, excess, base = best
                out.append((gkey, rank, step, d.component, excess, d.total, base, d.name_code, d.local))
    return pd.DataFrame(out, columns=_COLS)


def _spread(delays: dict[tuple[int, int, str], _Delay], members: list[int]) -> dict[str, float]:
    """Per role: robust spread (1.4826 x MAD) of each member's delay minus the members' median
    in the same step, over every step: how much members normally differ."""
    by: dict[tuple[int, str], list[float]] = {}
    for (_, s, role), d in delays.items():
        by.setdefault((s, role), []).append(d.total)
    devs: dict[str, list[float]] = {}
    for (_, role), vals in by.items():
        if len(vals) == len(members) and len(vals) > 1:
            med = float(np.median(vals))
            devs.setdefault(role, []).extend(abs(v - med) for v in vals)
    return {role: 1.4826 * float(np.median(v)) for role, v in devs.items()}


@dataclass
class _Delay:
    """Untraced time of one kind in one rank-step, named by the frame that holds most of it."""

    total: float
    component: str
    name_code: int
    local: int


def _rank_delays(table: NodeTable, rank: int) -> dict[tuple[int, str], _Delay]:
    """(step, "step" | "entry") -> untraced time of one rank in each of its steps."""
    n = table.nodes
    sl = slice(*table.rank_spans()[rank])
    # Class codes, not labels: labels would materialise a string per node of the whole table.
    code = {c: i for i, c in enumerate(n["cls"].cat.categories)}
    cls = n["cls"].array.codes[sl]
    step = n["step"].to_numpy()[sl]
    ts = n["ts_ns"].to_numpy()[sl].astype(np.int64)
    dur = n["dur_ns"].to_numpy()[sl].astype(np.int64)
    host = n["device"].to_numpy()[sl] < 0
    name_code = n["name_code"].to_numpy()[sl]
    wanted = step >= 0
    out: dict[tuple[int, str], _Delay] = {}
    value = n["value"].to_numpy()[sl]
    for i in np.flatnonzero((cls == code[CLS_STEP]) & wanted):
        out[(int(step[i]), "step")] = _Delay(float(value[i]), "software", int(name_code[i]), int(i))
    coll = np.flatnonzero((cls == code[CLS_COLL]) & host & wanted)
    if not len(coll):
        return out
    compute = np.flatnonzero((cls == code[CLS_CPU]) & host)
    ends = np.sort(ts[compute] + dur[compute])
    prev = np.searchsorted(ends, ts[coll], side="right") - 1
    prev_end = np.where(prev >= 0, ends[np.maximum(prev, 0)], ts[coll])
    gap = np.maximum(ts[coll] - prev_end, 0)
    # Frames opened inside the gap that are still open when the transport starts: the path that
    # issues the collective (wrapper, c10d call). The outermost one names the delay.
    frames = np.flatnonzero(host & ~np.isin(cls, [code[CLS_COLL], code[CLS_STEP]]))
    frames = frames[np.argsort(ts[frames], kind="stable")]
    fts = ts[frames]
    coll_step = step[coll]
    order = np.argsort(coll_step, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(coll_step[order]) != 0, True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        mine = order[a:b]
        s = coll_step[mine[0]]
        total = float(gap[mine].sum())
        top = mine[np.argmax(gap[mine])]
        c, lo_t = coll[top], prev_end[top]
        lo, hi = np.searchsorted(fts, lo_t, side="left"), np.searchsorted(fts, ts[c], side="right")
        opened = [f for f in frames[lo:hi] if ts[f] + dur[f] >= ts[c]]
        if opened and ts[opened[0]] - lo_t <= 0.5 * gap[top]:
            out[(int(s), "entry")] = _Delay(total, "network", int(name_code[opened[0]]), int(opened[0]))
        else:
            out[(int(s), "entry")] = _Delay(total, "software", int(name_code[c]), int(c))
    return out
