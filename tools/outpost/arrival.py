"""Arrival test: at a collective, the worker that enters last is the culprit.

All members of a collective finish together, so the long collective kernels belong to the
workers that arrived early and waited; the last to arrive shows the shortest one. For every
collective instance we measure each member's entry against the members' median entry; a rank
that is last in most of a step's collectives, by a margin, is late in that step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kat.tools.outpost.inter import rank_group
from kat.tools.outpost.models import DetectorConfig
from kat.tools.outpost.tree import CLS_COLL, NodeTable, consecutive_runs


def _group_keys(sub: pd.DataFrame, groups: list[list[int]]) -> tuple[pd.Series, dict[str, int]]:
    """Process group of each collective: its recorded member list, else the rank's TP group."""
    gmap = rank_group([g for g in groups if len(g) > 1])
    recorded = sub["group_ranks"].astype(str)
    # One string per rank, looked up: not one Python call per collective row.
    by_rank = {r: ",".join(map(str, groups[g])) for r, g in gmap.items()}
    fallback = sub["rank"].map(by_rank).fillna("").astype(object)
    key = recorded.where(recorded != "", fallback)
    sizes = {k: len(k.split(",")) for k in key.unique() if k}
    return key, sizes


def collective_instances(table: NodeTable, groups: list[list[int]]) -> pd.DataFrame:
    """One row per (collective instance, member) with entry time, duration and lateness."""
    n = table.nodes
    sub = n.loc[(n["cls"] == CLS_COLL).to_numpy(), ["rank", "step", "name_code", "occ", "ts_ns", "dur_ns", "device"]]
    if sub.empty:
        return sub
    # Message size and member list are kept for collective nodes only (table.colls).
    colls = table.colls.loc[sub.index]
    sub.insert(6, "msg_bytes", colls["msg_bytes"].to_numpy())
    sub["group_ranks"] = colls["group_ranks"].to_numpy()
    key, sizes = _group_keys(sub, groups)
    sub["gkey"] = key.to_numpy()
    sub = sub[sub["gkey"] != ""]
    k = ["gkey", "step", "name_code", "occ"]
    grp = sub.groupby(k, sort=False)
    sub["members"] = grp["ts_ns"].transform("size")
    sub = sub[sub["members"].to_numpy() == sub["gkey"].map(sizes).to_numpy()]
    if sub.empty:
        return sub
    grp = sub.groupby(k, sort=False)
    sub["entry_med"] = grp["ts_ns"].transform("median")
    sub["late_ns"] = sub["ts_ns"] - sub["entry_med"]
    sub["is_last"] = sub["ts_ns"] == grp["ts_ns"].transform("max")
    sub["blame_ns"] = _blame(grp.ngroup().to_numpy(), sub["ts_ns"].to_numpy())
    sub["transfer_ns"] = grp["dur_ns"].transform("min")  # the last arriver waits least: ~pure transfer
    sub["end_ns"] = sub["ts_ns"] + sub["dur_ns"]
    return sub


def _blame(instance: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Per member of each collective instance: for the last to enter, how long it entered after
    the next-latest member (the time everyone else waited on it alone); 0 for the others."""
    out = np.zeros(len(ts), dtype=np.int64)
    if not len(ts):
        return out
    order = np.lexsort((ts, instance))
    inst_sorted = instance[order]
    last = np.flatnonzero(np.r_[inst_sorted[1:] != inst_sorted[:-1], True])
    last = last[last > 0]
    last = last[inst_sorted[last - 1] == inst_sorted[last]]  # instances of one member blame nobody
    out[order[last]] = ts[order[last]] - ts[order[last - 1]]
    return out


def late_arrivals(inst: pd.DataFrame, cfg: DetectorConfig) -> pd.DataFrame:
    """Rank-steps that arrive last at most of their collectives by a margin (`classic`), or that
    keep their peers waiting far longer than any member usually does (`blame_outlier`: one long
    delay before a single collective of the step is as telling as a short one before each)."""
    if inst.empty:
        return pd.DataFrame()
    inst = inst.assign(late_pos=inst["late_ns"].clip(lower=0))
    agg = (
        inst.groupby(["gkey", "rank", "step"], sort=False)
        .agg(
            n=("late_ns", "size"),
            last_share=("is_last", "mean"),
            late_ns=("late_ns", "median"),
            total_late=("late_pos", "sum"),
            blame_ns=("blame_ns", "sum"),
            start_ns=("ts_ns", "min"),
            end_ns=("end_ns", "max"),
            name_code=("name_code", "first"),
            wait_ns=("dur_ns", "sum"),
            transfer_ns=("transfer_ns", "sum"),
        )
        .reset_index()
    )
    # Margin: both an absolute floor and a share of a typical collective, so jitter never counts.
    typical = inst.groupby(["gkey", "step"])["transfer_ns"].median()
    floor = np.maximum(cfg.arrival_min_ns, 0.5 * typical.reindex(pd.MultiIndex.from_frame(agg[["gkey", "step"]])).to_numpy())
    # `classic`: last at most collectives by a margin, a rank that is late throughout the step.
    agg["classic"] = (agg["last_share"] >= cfg.arrival_share) & (agg["late_ns"] >= floor)
    agg["blame_outlier"] = _blame_outliers(agg, floor, cfg)
    out = agg[(agg["classic"] | agg["blame_outlier"]).to_numpy()].copy()
    out["method"] = "arrival"
    return out


def _blame_outliers(agg: pd.DataFrame, floor: np.ndarray, cfg: DetectorConfig) -> pd.Series:
    """Rank-steps whose blame (time the peers waited on that rank alone) clears the lateness
    floor and is several times the group's usual worst blame in a step (the median over steps
    of the largest blame of any member): in one step by `blame_factor`, or by two thirds of it
    over `sustained_steps` consecutive steps. Most members blame nobody in most steps, so a
    spread around a median would be zero; the usual worst case is the noise that matters."""
    blame = agg["blame_ns"].astype(np.float64)
    worst = blame.groupby([agg["gkey"], agg["step"]]).transform("max")
    usual = worst.groupby(agg["gkey"]).transform("median").to_numpy()
    above = blame.to_numpy() >= floor
    hit = pd.Series(above & (blame.to_numpy() >= cfg.blame_factor * usual), index=agg.index)
    soft = agg[above & (blame.to_numpy() >= cfg.blame_factor * 2 / 3 * usual)]
    for _, g in soft.groupby(["gkey", "rank"], sort=False):
        idx = g.sort_values("step").index.to_numpy()
        for run in consecutive_runs(agg.loc[idx, "step"].to_numpy()):
            if run.stop - run.start >= cfg.sustained_steps:
                hit.loc[idx[run]] = True
    return hit


def _like_sized_baseline(per: pd.DataFrame, q: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """For each instance: a low quantile of the same collective's transfer times at a similar
    message size (quarter-octave bins: batch sizes change every step). The low quantile
    resists a long fault window pulling the baseline up."""
    size_bin = np.round(np.log2(np.maximum(per["msg_bytes"].to_numpy(dtype=np.float64), 1.0)) * 4).astype(np.int64)
    keys = [per["gkey"], per["name_code"], pd.Series(size_bin, index=per.index)]
    g = per["transfer_ns"].astype(np.float64).groupby(keys, sort=False)
    return g.transform(lambda x: x.quantile(q)).to_numpy(), g.transform("size").to_numpy()


def link_slowdowns(inst: pd.DataFrame, cfg: DetectorConfig) -> pd.DataFrame:
    """Collective instances whose transfer time (the last arriver's kernel) rose against the
    same collective's own history, while nobody arrived late: the link itself is slow."""
    # Only device collectives (NCCL kernels) measure a link; a CPU (gloo) collective's time is
    # mostly its process's scheduling.
    inst = inst[inst["device"] >= 0]
    if inst.empty:
        return pd.DataFrame()
    per = inst.drop_duplicates(["gkey", "step", "name_code", "occ"])[
        ["gkey", "step", "name_code", "occ", "transfer_ns", "msg_bytes", "ts_ns", "end_ns", "late_ns"]
    ].copy()
    lateness = inst.groupby(["gkey", "step", "name_code", "occ"])["late_ns"].max()
    per["max_late"] = lateness.reindex(pd.MultiIndex.from_frame(per[["gkey", "step", "name_code", "occ"]])).to_numpy()
    per["hist_med"], per["hist_n"] = _like_sized_baseline(per)
    per["ratio"] = per["transfer_ns"] / per["hist_med"].clip(lower=1.0)
    step_ratio = (
        per.groupby(["gkey", "step"])
        .agg(
            ratio=("ratio", "median"),
            n=("ratio", "size"),
            observed=("transfer_ns", "sum"),
            baseline=("hist_med", "sum"),
            start_ns=("ts_ns", "min"),
            end_ns=("end_ns", "max"),
            name_code=("name_code", "first"),
            hist_n=("hist_n", "min"),
        )
        .reset_index()
    )
    steps_per_group = step_ratio.groupby("gkey")["step"].transform("nunique")
    hit = (
        (step_ratio["ratio"] >= 1.0 + cfg.link_effect)
        & (steps_per_group >= cfg.min_steps_for_baseline)
        & (step_ratio["hist_n"] >= cfg.min_steps_for_baseline)
        & (step_ratio["observed"] - step_ratio["baseline"] >= cfg.min_excess_ns)
    )
    out = step_ratio[hit].copy()
    out["method"] = "intra"
    return out


def slow_groups(inst: pd.DataFrame, cfg: DetectorConfig) -> pd.DataFrame:
    """Groups whose collectives transfer slower than other groups' same collectives at a
    similar message size: catches a degraded link that was already degraded when the trace
    began (no own history to compare with). Needs at least two comparable groups."""
    inst = inst[inst["device"] >= 0]
    if inst.empty or inst["gkey"].nunique() < 2:
        return pd.DataFrame()
    per = inst.drop_duplicates(["gkey", "step", "name_code", "occ"])[
        ["gkey", "step", "name_code", "transfer_ns", "msg_bytes", "ts_ns", "end_ns"]
    ].copy()
    per["members"] = per["gkey"].str.count(",") + 1
    per["bin"] = np.round(np.log2(np.maximum(per["msg_bytes"].to_numpy(dtype=np.float64), 1.0)) * 4).astype(np.int64)
    med = per.groupby(["members", "name_code", "bin", "gkey"], observed=True)["transfer_ns"].agg(median="median", n="size").reset_index()
    peers = med.groupby(["members", "name_code", "bin"])["gkey"].transform("nunique")
    med = med[peers >= 2]
    if med.empty:
        return pd.DataFrame()
    total = med.groupby(["members", "name_code", "bin"])["median"].transform("sum")
    count = med.groupby(["members", "name_code", "bin"])["median"].transform("size")
    # Each group against the mean of the *other* groups in the same bin.
    others = (total - med["median"]) / (count - 1)
    med["ratio"] = med["median"] / others.clip(lower=1.0)
    med["w"] = med["ratio"] * med["n"]
    score = med.groupby("gkey").agg(w=("w", "sum"), n=("n", "sum"), bins=("ratio", "size")).reset_index()
    score["ratio"] = score["w"] / score["n"]
    bad = score[(score["ratio"] >= 1.0 + cfg.link_effect) & (score["bins"] >= 2) & (score["n"] >= cfg.min_steps_for_baseline)]
    if bad.empty:
        return pd.DataFrame()
    rows = per[per["gkey"].isin(bad["gkey"])]
    agg = (
        rows.groupby(["gkey", "step"])
        .agg(
            observed=("transfer_ns", "sum"),
            start_ns=("ts_ns", "min"),
            end_ns=("end_ns", "max"),
            name_code=("name_code", "first"),
            n=("transfer_ns", "size"),
        )
        .reset_index()
    )
    agg["ratio"] = agg["gkey"].map(bad.set_index("gkey")["ratio"])
    agg["baseline"] = agg["observed"] / agg["ratio"]
    agg["method"] = "inter"
    return agg


def _step_shift(y: np.ndarray, x: np.ndarray, min_side: int) -> tuple[int, float, float]:
    """Best single level shift in a step series: (first step index of the later regime, shift in
    log units, t statistic), fitting y ~ 1 + x + shift so message-size changes are not mistaken
    for a slower link."""
    n = len(y)
    use_x = np.ptp(x) > 1e-9
    best = (-1, 0.0, 0.0)
    for k in range(min_side, n - min_side + 1):
        z = (np.arange(n) >= k).astype(float)
        cols = [np.ones(n), z] + ([x] if use_x else [])
        a = np.column_stack(cols)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        resid = y - a @ coef
        dof = n - a.shape[1]
        if dof <= 0:
            continue
        s2 = float(resid @ resid) / dof
        try:
            cov = s2 * np.linalg.inv(a.T @ a)
        except np.linalg.LinAlgError:
            continue
        se = float(np.sqrt(max(cov[1, 1], 1e-18)))
        t = float(coef[1]) / max(se, 1e-9)
        if abs(t) > abs(best[2]):
            best = (k, float(coef[1]), t)
    return best


def _like_sized_shift(per: pd.DataFrame, later: np.ndarray, min_n: int) -> float | None:
    """Log ratio of transfer times, later regime over earlier, over message-size bins seen in
    both (weighted by the smaller side); None when fewer than `min_n` such pairs exist."""
    size_bin = np.round(np.log2(np.maximum(per["msg_bytes"].to_numpy(dtype=np.float64), 1.0)) * 4).astype(np.int64)
    df = pd.DataFrame({"bin": size_bin, "later": later, "y": np.log(np.maximum(per["transfer_ns"].to_numpy(dtype=float), 1.0))})
    med = df.groupby(["bin", "later"])["y"].agg(["median", "size"]).unstack("later")
    if med.shape[1] < 4:
        return None
    both = med[(med[("size", False)] >= 1) & (med[("size", True)] >= 1)]
    w = np.minimum(both[("size", False)], both[("size", True)]).to_numpy(dtype=float)
    if w.sum() < min_n:
        return None
    diff = (both[("median", True)] - both[("median", False)]).to_numpy()
    return float(np.sum(w * diff) / np.sum(w))


def _interpolated_shift(per: pd.DataFrame, later: np.ndarray, min_n: int) -> float | None:
    """When message sizes change every step (no size bin on both sides): fit log time against
    log size on the earlier regime and read the later messages whose sizes lie inside the
    earlier range off it (interpolation only: bigger messages than ever seen before are load)."""
    x = np.log(np.maximum(per["msg_bytes"].to_numpy(dtype=float), 1.0))
    y = np.log(np.maximum(per["transfer_ns"].to_numpy(dtype=float), 1.0))
    xe, ye = x[~later], y[~later]
    if len(xe) < min_n:
        return None
    inside = later & (x >= xe.min()) & (x <= xe.max())
    if inside.sum() < min_n:
        return None
    coef = np.polyfit(xe, ye, 1) if np.ptp(xe) > 1e-9 else np.array([0.0, float(np.median(ye))])
    return float(np.median(y[inside] - np.polyval(coef, x[inside])))


def link_shifts(inst: pd.DataFrame, cfg: DetectorConfig) -> pd.DataFrame:
    """Collectives whose transfer time steps up (or down) to a new level part-way through the
    trace and stays there: a link that degraded (or recovered) during the capture. A long fault
    window defeats the episodic test above (most of the history is already slow); a level shift
    does not. Faults that cover the whole capture leave no healthy level to compare with."""
    inst = inst[(inst["device"] >= 0) & (inst["step"] >= 0)]
    if inst.empty:
        return pd.DataFrame()
    per = inst.drop_duplicates(["gkey", "step", "name_code", "occ"])
    steps = (
        per.groupby(["gkey", "name_code", "step"])
        .agg(
            y=("transfer_ns", lambda v: float(np.median(np.log(np.maximum(v.to_numpy(dtype=float), 1.0))))),
            x=("msg_bytes", lambda v: float(np.median(np.log(np.maximum(v.to_numpy(dtype=float), 1.0))))),
            observed=("transfer_ns", "sum"),
            n=("transfer_ns", "size"),
            start_ns=("ts_ns", "min"),
            end_ns=("end_ns", "max"),
        )
        .reset_index()
    )
    min_side = cfg.min_steps_for_baseline
    rows = []
    for (gkey, code), g in steps.groupby(["gkey", "name_code"], sort=False):
        if len(g) < 2 * min_side:
            continue
        g = g.sort_values("step")
        k, shift, t = _step_shift(g["y"].to_numpy(), g["x"].to_numpy(), min_side)
        if k < 0 or abs(shift) < np.log1p(cfg.link_effect) or abs(t) < cfg.z:
            continue
        # Confirm on like-sized messages only: more load means bigger messages, which take
        # longer on a healthy link; the same message taking longer means the link slowed.
        later = set(g["step"].iloc[k:])
        mine = per[(per["gkey"] == gkey) & (per["name_code"] == code)]
        is_later = mine["step"].isin(later).to_numpy()
        like = _like_sized_shift(mine, is_later, min_side)
        if like is None:
            like = _interpolated_shift(mine, is_later, min_side)
        if like is None or np.sign(like) != np.sign(shift) or abs(like) < np.log1p(cfg.link_effect):
            continue
        slow = g.iloc[k:] if shift > 0 else g.iloc[:k]
        ratio = float(np.exp(abs(like)))
        rows.append(slow.assign(gkey=gkey, name_code=code, ratio=ratio, baseline=slow["observed"] / ratio))
    if not rows:
        return pd.DataFrame()
    out = pd.concat(rows, ignore_index=True)
    out = out[out["observed"] - out["baseline"] >= cfg.min_excess_ns]
    out["method"] = "intra"
    return out[["gkey", "step", "name_code", "observed", "baseline", "ratio", "start_ns", "end_ns", "n", "method"]]
