"""Match each rank's collective kernels with its peers' copies of the same collective.

The n-th collective of a group in a step on one rank is the n-th one on every member. A kernel
starts when its rank reaches it; the members that started earlier spin until the last one
arrives, so the spread of start times is how long the last rank kept the others waiting.
"""

from __future__ import annotations

import pandas as pd

KEY = ["group", "step", "coll", "ordinal"]


def match_instances(c: pd.DataFrame) -> pd.DataFrame:
    """Collective rows (rank, step, ts_ns, coll, group, ...) -> rows seen on 2+ ranks, with

    inst (instance id), first_ts, last_ts, skew (ns), wait (ns this row's rank waited) and
    is_last (this row's rank arrived last; one row per instance).
    """
    if c.empty:
        return c.assign(inst=[], first_ts=[], last_ts=[], skew=[], wait=[], is_last=[])
    c = c.sort_values(["rank", "ts_ns"], kind="stable").copy()
    c["ordinal"] = c.groupby(["rank", "group", "step", "coll"], sort=False).cumcount()
    c["inst"] = c.groupby(KEY, sort=False).ngroup()
    c = c[c.groupby("inst")["ts_ns"].transform("size") >= 2].copy()
    g = c.groupby("inst", sort=False)["ts_ns"]
    c["last_ts"] = g.transform("max")
    c["first_ts"] = g.transform("min")
    c["wait"] = c["last_ts"] - c["ts_ns"]
    c["skew"] = c["last_ts"] - c["first_ts"]
    last = c["ts_ns"] == c["last_ts"]
    c["is_last"] = last & ~c[last].duplicated("inst").reindex(c.index, fill_value=True)
    return c


def collective_rows(frame: pd.DataFrame, rank: int) -> pd.DataFrame:
    """A rank's canonical events -> its collective rows in the form match_instances takes."""
    m = (frame["kind"] == "collective").to_numpy()
    sub = frame[m]
    out = pd.DataFrame(
        {
            "rank": rank,
            "step": sub["step"].to_numpy(),
            "ts_ns": sub["ts_ns"].to_numpy(),
            "coll": sub["coll_name"].astype(str).to_numpy(),
            "group": sub["group_ranks"].astype(str).to_numpy(),
        }
    )
    for extra in ("dur_ns", "pid", "tid"):
        if extra in sub.columns:
            out[extra] = sub[extra].to_numpy()
    return out
