"""Signature checks: does a bundle show the fault signature its ground truth claims?

Used by the tests (present in the fault bundle, absent from `none`) and handy when editing
the simulator. Each check reads only what a user would have: traces, metrics, logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pandas as pd

from kat.evals.simulate.ground_truth import GroundTruth
from kat.tools.telemetry.bundle import Bundle

COMPUTE = re.compile(r"gemm|nvjet|xmma|flash|fmha|RMSNorm|rms_norm|act_and_mul")


def _events(b: Bundle) -> pd.DataFrame:
    return b.all_events()


def _peers(b: Bundle, ranks: list[int]) -> list[int]:
    tp = b.manifest.topology.groups.tp
    group = next((g for g in tp if ranks[0] in g), b.ranks)
    out = [r for r in group if r not in ranks]
    return out or [r for r in b.ranks if r not in ranks]


def _ratio(df: pd.DataFrame, mask: pd.Series, ranks: list[int], peers: list[int]) -> float:
    """Mean duration on `ranks` over mean on `peers`, matched by event name (like with like)."""
    sub = df[mask]
    g = sub.groupby(["name", sub["rank"].isin(ranks)], observed=True)["dur_ns"].mean().unstack()
    sub_p = sub[sub["rank"].isin(peers) | sub["rank"].isin(ranks)]
    if g.shape[1] < 2 or sub_p.empty:
        return 1.0
    g = g.dropna()
    return float((g[True] / g[False]).median()) if len(g) else 1.0


def _steps_mask(df: pd.DataFrame, steps: list[int]) -> pd.Series:
    return df["step"].isin(steps)


def compute_slowdown(b: Bundle, gt: GroundTruth) -> float:
    df = _events(b)
    m = (df["kind"] == "kernel") & df["name"].astype(str).str.contains(COMPUTE) & _steps_mask(df, gt.affected_steps)
    return _ratio(df, m, gt.affected_ranks, _peers(b, gt.affected_ranks))


def collective_ratio(b: Bundle, gt: GroundTruth) -> float:
    """Affected ranks' collective kernels vs their peers' (< 1: they arrive last and wait least)."""
    df = _events(b)
    m = (df["kind"] == "collective") & df["name"].astype(str).str.contains("AllReduce") & _steps_mask(df, gt.affected_steps)
    return _ratio(df, m, gt.affected_ranks, _peers(b, gt.affected_ranks))


def cpu_slowdown(b: Bundle, gt: GroundTruth) -> float:
    df = _events(b)
    m = (df["kind"] == "cpu_op") & _steps_mask(df, gt.affected_steps)
    return _ratio(df, m, gt.affected_ranks, _peers(b, gt.affected_ranks))


def copy_slowdown(b: Bundle, gt: GroundTruth) -> float:
    df = _events(b)
    m = (df["kind"] == "memcpy") & df["name"].astype(str).str.startswith("Memcpy HtoD (Pinned") & _steps_mask(df, gt.affected_steps)
    return _ratio(df, m, gt.affected_ranks, _peers(b, gt.affected_ranks))


def group_collective_floor(b: Bundle, ranks: list[int], steps: list[int], pattern: str = "AllReduce") -> float:
    """Median over collective instances of the shortest member's duration (pure transfer time)."""
    df = _events(b)
    m = (df["kind"] == "collective") & df["name"].astype(str).str.contains(pattern) & _steps_mask(df, steps) & df["rank"].isin(ranks)
    sub = df[m].sort_values(["rank", "ts_ns"]).copy()
    if sub.empty:
        return 0.0
    sub["k"] = sub.groupby("rank").cumcount()
    return float(sub.groupby("k")["dur_ns"].min().median())


def max_kernel_ratio(b: Bundle, gt: GroundTruth) -> float:
    """Worst same-name kernel on the affected ranks over the worst of that name on peers (stalls)."""
    df = _events(b)
    m = (df["kind"] == "kernel") & _steps_mask(df, gt.affected_steps)
    sub = df[m]
    peers = _peers(b, gt.affected_ranks)
    mine = sub[sub["rank"].isin(gt.affected_ranks)].groupby("name", observed=True)["dur_ns"].max()
    theirs = sub[sub["rank"].isin(peers)].groupby("name", observed=True)["dur_ns"].max()
    both = pd.concat([mine, theirs], axis=1, keys=["mine", "theirs"]).dropna()
    return float((both["mine"] / both["theirs"].clip(lower=1)).max()) if len(both) else 1.0


def step_start_lag(b: Bundle, gt: GroundTruth) -> float:
    """Time from each step's start to its first framework op, affected rank minus peers (ns)."""
    df = _events(b)
    steps = df[(df["kind"] == "step") & _steps_mask(df, gt.affected_steps)][["rank", "step", "ts_ns"]]
    ops = df[(df["kind"] == "cpu_op") & _steps_mask(df, gt.affected_steps)].groupby(["rank", "step"])["ts_ns"].min()
    lag = steps.set_index(["rank", "step"])["ts_ns"].rsub(ops).dropna()
    lag = lag.groupby(level="rank").max()
    peers = _peers(b, gt.affected_ranks)
    return float(lag.reindex(gt.affected_ranks).max() - lag.reindex(peers).max())


def longest_python(b: Bundle, ranks: list[int], pattern: str) -> float:
    df = _events(b)
    m = (df["kind"] == "python") & df["name"].astype(str).str.contains(pattern) & df["rank"].isin(ranks)
    return float(df[m]["dur_ns"].max()) if m.any() else 0.0


def tokens_by_step(b: Bundle, ranks: list[int]) -> pd.Series:
    """Tokens per step as a detector sees them: first dim of the GEMM inputs ('Input Dims')."""
    df = _events(b)
    m = (df["kind"] == "cpu_op") & (df["name"].astype(str) == "aten::mm") & df["rank"].isin(ranks)
    sub = df[m]
    t = sub["shape"].astype(str).str.extract(r"^\[\[(\d+),")[0].astype(float)
    return t.groupby(sub["step"]).max()


def metric(b: Bundle, name: str, gt: GroundTruth, rank: int | None = None, host: str | None = None) -> pd.DataFrame:
    m = b.metrics
    sel = m[m["name"].astype(str) == name]
    if rank is not None:
        sel = sel[sel["rank"] == rank]
    if host is not None:
        sel = sel[sel["host"].astype(str) == host]
    return sel


def in_window(df: pd.DataFrame, gt: GroundTruth, pad_ns: int = 1_000_000_000) -> pd.DataFrame:
    w = gt.window
    if w is None:
        raise ValueError(f"{gt.incident_id}: ground truth has no fault window to select rows in")
    return df[(df["ts_ns"] > w.start_ns) & (df["ts_ns"] - pad_ns < w.end_ns)]


def log_hits(b: Bundle, pattern: str) -> int:
    msgs = b.logs["message"].astype(str)
    return int(msgs.str.contains(pattern, regex=True).sum())


def counter_increase(b: Bundle, name: str, **labels: object) -> float:
    m = b.metrics
    sel = m[m["name"].astype(str) == name]
    for k, v in labels.items():
        sel = sel[sel[k].astype(str) == str(v)]
    if sel.empty:
        return 0.0
    by = [c for c in ("host", "gpu", "cpu", "device", "node") if c in sel]
    inc = sel.sort_values("ts_ns").groupby(by, observed=True)["value"].agg(lambda v: v.iloc[-1] - v.iloc[0])
    return float(inc.max())


Check = Callable[[Bundle, GroundTruth], bool]
