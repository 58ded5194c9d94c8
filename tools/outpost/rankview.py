"""Per-rank step times and spans: what the final calibration needs from the node table.

Calibration (calibrate.py) reads only a few per-rank facts: each step's duration, the time span
of a rank's steps, and how many steps each rank has. A single process reads them off its node
table; the distributed path (phases.py) gets them as small per-group summaries and never holds
a node table on the driver. Both answer the same questions the same way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from kat.tools.outpost.tree import CLS_STEP, NodeTable


class RankTimes(Protocol):
    n_ranks: int

    def step_time(self) -> pd.Series:
        """(rank, step) -> duration of the step span (ns)."""
        ...

    def span(self, rank: int, lo: int, hi: int) -> tuple[int, int]:
        """(first start, last end) of the rank's nodes in steps lo..hi; (0, 0) when it has none."""
        ...

    def steps_per_rank(self) -> pd.Series:
        """rank -> number of distinct profiler steps (step >= 0) it has nodes in."""
        ...


def step_time(table: NodeTable) -> pd.Series:
    n = table.nodes
    st = n.loc[(n["cls"] == CLS_STEP).to_numpy() & (n["step"].to_numpy() >= 0), ["rank", "step", "dur_ns"]]
    return st.groupby(["rank", "step"])["dur_ns"].max().astype(float)


def rank_step_spans(table: NodeTable) -> pd.DataFrame:
    """Columns rank, step, start_ns, end_ns: one row per rank-step (step -1: outside any step)."""
    n = table.nodes
    f = pd.DataFrame({"rank": n["rank"].to_numpy(), "step": n["step"].to_numpy(), "start_ns": n["ts_ns"].to_numpy()})
    f["end_ns"] = f["start_ns"].to_numpy() + n["dur_ns"].to_numpy()
    return f.groupby(["rank", "step"], sort=True).agg(start_ns=("start_ns", "min"), end_ns=("end_ns", "max")).reset_index()


class TableTimes:
    """Read off a node table (the single-process path)."""

    def __init__(self, table: NodeTable) -> None:
        self.table = table
        self.n_ranks = len(table.ranks)

    def step_time(self) -> pd.Series:
        return step_time(self.table)

    def span(self, rank: int, lo: int, hi: int) -> tuple[int, int]:
        n = self.table.nodes
        mine = n.loc[(n["rank"].to_numpy() == rank) & (n["step"].to_numpy() >= lo) & (n["step"].to_numpy() <= hi), ["ts_ns", "dur_ns"]]
        if not len(mine):
            return 0, 0
        return int(mine["ts_ns"].min()), int((mine["ts_ns"] + mine["dur_ns"]).max())

    def steps_per_rank(self) -> pd.Series:
        n = self.table.nodes
        return n.loc[n["step"].to_numpy() >= 0].groupby("rank")["step"].nunique()


class SummaryTimes:
    """Built from per-group summaries (`step_time`, `rank_step_spans` of each group's table)."""

    def __init__(self, step_times: pd.Series, spans: pd.DataFrame, n_ranks: int) -> None:
        self._step_time = step_times
        self.spans = spans
        self.n_ranks = n_ranks

    def step_time(self) -> pd.Series:
        return self._step_time

    def span(self, rank: int, lo: int, hi: int) -> tuple[int, int]:
        s = self.spans
        mine = s[(s["rank"].to_numpy() == rank) & (s["step"].to_numpy() >= lo) & (s["step"].to_numpy() <= hi)]
        if not len(mine):
            return 0, 0
        return int(mine["start_ns"].min()), int(mine["end_ns"].max())

    def steps_per_rank(self) -> pd.Series:
        s = self.spans
        return s[s["step"].to_numpy() >= 0].groupby("rank")["step"].nunique()


def concat_step_times(parts: list[pd.Series]) -> pd.Series:
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.Series(np.zeros(0), index=pd.MultiIndex.from_arrays([[], []], names=["rank", "step"]), dtype=float)
    return pd.concat(parts).sort_index()
