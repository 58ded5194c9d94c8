"""Rank-level tests across data-parallel replicas: is one rank an outlier among the ranks at its
tensor-parallel position in the other replicas, over the whole capture?

The lock-step tests (significance.py, pooled.py) compare a rank with its own TP group, so a rank
with no TP peer (tp1) is never tested, and a fault that slows a whole TP group alike (a host-level
cause on the group's host) cancels out. Replicas are the peers that remain. They are not in
lock-step (their step k is not simultaneous) and continuous batching gives each its own batches,
so no per-node pairing holds; only broad per-step quantities compare:

- per (rank, step): untraced time, time per class of work (gpu_compute, copy, cpu);
- each value is aligned on its replica group's median in that step and divided by it (pooled.py's
  relative deviation), pooled over replica groups by quantity;
- sustained or recurring excess: pooled.py's ESD over the exact hypergeometric rank test
  (distribution-free: the rank's deviations exchangeable with the other ranks');
- one-off excess (a stall): significance.peak_tests on the same deviations (kind `peak_replica`).

Phases: `replica_values` is per unit (a small table, never node rows); `replica_tests` runs in
the merge over every unit's table (units never span replicas) and returns rows like
significance.group_tests', before the single FDR pass.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from kat.tools.outpost.models import DetectorConfig
from kat.tools.outpost.pooled import candidates, pool_of, pooled_rows
from kat.tools.outpost.samples import Samples
from kat.tools.outpost.significance import effect_floor_ms, episode, peak_tests
from kat.tools.outpost.tree import CLS_COPY, CLS_CPU, CLS_GPU, CLS_STEP, NodeTable

VALUE_COLUMNS = ["rank", "step", "key", "v"]
_CLASSES = (CLS_GPU, CLS_COPY, CLS_CPU)
_DEVICE = {f"class[{CLS_GPU}]", f"class[{CLS_COPY}]"}  # timed by the device's clock
STEP_KEY = "step_time"  # the step span's duration: the share's denominator (not tested)
UNTRACED_KEY = "untraced"
BATCH_KEY = "batch"  # tokens in the rank's step (not tested: the work the time is judged against)
_LEADING = re.compile(r"\d+")  # a kernel's first input's leading dimension: its tokens


def replica_values(table: NodeTable, replicas: list[list[int]]) -> pd.DataFrame:
    """Per (rank, step) of every rank in a replica group: untraced time, time per class of work,
    step time (ns). Columns VALUE_COLUMNS."""
    n = table.nodes
    members = np.array(sorted({r for g in replicas for r in g}), dtype=np.int64)
    if n.empty or not len(members):
        return pd.DataFrame(columns=VALUE_COLUMNS)
    sel = n[(n["step"].to_numpy() >= 0) & np.isin(n["rank"].to_numpy(), members)]
    cls = sel["cls"].astype(str)
    step = sel[cls.to_numpy() == CLS_STEP]
    parts = [
        step.groupby(["rank", "step"])["value"].sum().rename(UNTRACED_KEY),
        step.groupby(["rank", "step"])["dur_ns"].max().rename(STEP_KEY),
    ]
    work = sel[cls.isin(_CLASSES).to_numpy()]
    if not work.empty:
        w = work.assign(c=cls[cls.isin(_CLASSES)].to_numpy()).groupby(["rank", "step", "c"])["value"].sum()
        for c, s in w.groupby(level="c"):
            parts.append(s.droplevel("c").rename(f"class[{c}]"))
    batch = _batch(work)
    if batch is not None:
        parts.append(batch)
    out = pd.concat(parts, axis=1).reset_index().melt(id_vars=["rank", "step"], var_name="key", value_name="v")
    # A rank-step with no work of a class did none of it: 0, not missing (its peers' stratum stays whole).
    out = out[out["step"].isin(step["step"].unique())]
    out = out[(out["key"] != BATCH_KEY) | out["v"].notna()].fillna({"v": 0.0})
    return out.astype({"rank": np.int64, "step": np.int64, "v": float})[VALUE_COLUMNS].reset_index(drop=True)


def _batch(work: pd.DataFrame) -> pd.Series | None:
    """Per (rank, step): the median leading dimension of its device kernels' (else its ops')
    first input, the batch the step's work scales with; None when the trace records no shapes."""
    if work.empty or "shape_key" not in work:
        return None
    cats = work["shape_key"].astype("category").cat
    lead = np.array([float(m.group()) if (m := _LEADING.search(str(x))) else np.nan for x in cats.categories] + [np.nan])
    dim = lead[np.where(cats.codes.to_numpy() >= 0, cats.codes.to_numpy(), len(lead) - 1)]
    dev = work["device"].to_numpy() >= 0
    use = dev if (dev & ~np.isnan(dim)).any() else np.ones(len(work), dtype=bool)
    w = pd.DataFrame({"rank": work["rank"].to_numpy()[use], "step": work["step"].to_numpy()[use], "b": dim[use]}).dropna()
    if w.empty:
        return None
    return w.groupby(["rank", "step"])["b"].median().rename(BATCH_KEY)


def _per_batch(v: pd.DataFrame) -> pd.DataFrame:
    """Each value at its replica group's median batch of the step: replicas batch differently
    (continuous batching), and a rank given more tokens is not slow. Per test, the time per extra
    token is the median slope over the (rank, step) points (Theil-Sen through the step's median:
    robust to a minority of slow ranks); never negative. Without batches, values are unchanged."""
    b = v[v["key"] == BATCH_KEY].set_index(["rank", "step"])["v"]
    v = v[v["key"] != BATCH_KEY].reset_index(drop=True)
    if b.empty:
        return v
    x = b.reindex(pd.MultiIndex.from_arrays([v["rank"], v["step"]])).to_numpy()
    grp = [v["g"], v["key"], v["step"]]
    dx = x - pd.Series(x).groupby(grp).transform("median").to_numpy()
    dv = v["v"].to_numpy() - v.groupby(["g", "key", "step"])["v"].transform("median").to_numpy()
    ok = np.isfinite(dx) & (dx != 0)
    slope = pd.Series(np.where(ok, dv / np.where(ok, dx, 1.0), np.nan)).groupby([v["g"], v["key"]]).transform("median")
    adj = np.clip(slope.fillna(0.0).to_numpy(), 0.0, None) * np.nan_to_num(dx)
    return v.assign(v=v["v"].to_numpy() - adj)


def _samples(values: pd.DataFrame, replicas: list[list[int]]) -> tuple[Samples, np.ndarray]:
    """One test per (replica group, quantity); strata are (test, step)."""
    gid = {r: i for i, g in enumerate(replicas) for r in g}
    v = values[values["rank"].isin(list(gid))].reset_index(drop=True)
    v = _per_batch(v.assign(g=v["rank"].map(gid).to_numpy()))
    group = v["g"].to_numpy()
    keys, kcode = np.unique(v["key"].to_numpy(dtype=object), return_inverse=True)
    codes, test = np.unique(group * len(keys) + kcode, return_inverse=True)
    stratum = pd.factorize(pd.MultiIndex.from_arrays([test, v["step"].to_numpy()]))[0]
    sizes = np.array([len(replicas[int(c) // len(keys)]) for c in codes])
    names = [str(keys[int(c) % len(keys)]) for c in codes]
    device = np.array([x in _DEVICE for x in names])
    s = Samples(test, stratum, v["rank"].to_numpy(), v["v"].to_numpy(dtype=float), v["step"].to_numpy(), names, device)
    return s, sizes


def _aligned(s: Samples, sizes: np.ndarray) -> pd.DataFrame:
    """Each (rank, step) value against its replica group's median in that step (steps every
    member ran): d (ns), e (relative), m (the median)."""
    df = pd.DataFrame({"test": s.test, "stratum": s.stratum, "rank": s.rank, "step": s.step, "v": s.value})
    df = df[df.groupby("stratum", sort=False)["v"].transform("size").to_numpy() == sizes[df["test"].to_numpy()]].copy()
    df["m"] = df.groupby("stratum", sort=False)["v"].transform("median").to_numpy()
    df["d"] = df["v"].to_numpy() - df["m"].to_numpy()
    df["e"] = df["d"].to_numpy() / np.maximum(df["m"].to_numpy(), 1.0)
    df["key"] = np.asarray(s.labels, dtype=object)[df["test"].to_numpy()]
    return df


def replica_tests(values: pd.DataFrame, replicas: list[list[int]], cfg: DetectorConfig, few: bool) -> pd.DataFrame:
    """Rows (kind, label, rank, test, T, strata, z, p, floor_ns, device, effect_ms, effect_share,
    first_step, last_step, material) of the replica tests, before the FDR pass. `few`: too few
    steps for per-step tests (a fact of the whole capture)."""
    replicas = [g for g in replicas if len(g) > 2]
    if few or values.empty or not replicas:
        return pd.DataFrame()
    s, sizes = _samples(values, replicas)
    df = _aligned(s, sizes)
    if df.empty:
        return pd.DataFrame()
    # The pooled test itself, on the replica groups' deviations (every replica is in this table).
    out = [pooled_rows(pool_of(df, "replica"), candidates(df, "replica"))]
    pk = peak_tests(s, sizes, np.unique(s.test))
    if not pk.empty:
        out.append(pk.assign(kind="peak_replica"))
    res = pd.concat(out, ignore_index=True)
    res["label"] = [s.labels[int(t)] for t in res["test"]]
    res["device"] = s.device[res["test"].to_numpy()] if s.device is not None else False
    # Step time is the share's denominator, never a test: it holds the waits on a slow TP peer.
    res = res[(res["strata"] >= cfg.min_steps_for_baseline) & (res["label"] != STEP_KEY)].reset_index(drop=True)
    if not res.empty:
        _effects(res, df, cfg)
    return res


def _effects(res: pd.DataFrame, df: pd.DataFrame, cfg: DetectorConfig) -> None:
    """Episode, effect and materiality of the rows BH could reject (p <= fdr), as
    significance._effects: the excess over the replicas' median where it concentrates, its share
    of the rank's step time; material by cfg's minimum effects and `replica_effect`."""
    res["effect_ms"] = res["T"] / 1e6
    res["effect_share"] = np.nan
    res["first_step"] = -1
    res["last_step"] = -1
    res["material"] = False
    steps = df[df["key"] == STEP_KEY].set_index(["rank", "step"])["v"]
    by = df.sort_values(["test", "rank", "step"], kind="stable").groupby(["test", "rank"], sort=False)
    for i in np.flatnonzero(res["p"].to_numpy() <= cfg.fdr):
        row = res.iloc[i]
        mine = by.get_group((row["test"], row["rank"]))
        lo, hi, best = episode(mine["d"].to_numpy())
        ep = mine["step"].to_numpy()[lo : hi + 1]
        span = float(steps.reindex(pd.MultiIndex.from_product([[int(row["rank"])], ep])).fillna(0.0).sum()) if len(ep) else 0.0
        share = best / span if span > 0 else np.nan
        base = float(mine["m"].to_numpy()[lo : hi + 1].sum())
        res.at[i, "effect_ms"] = best / 1e6
        res.at[i, "effect_share"] = share
        res.at[i, "first_step"] = int(ep.min()) if len(ep) else -1
        res.at[i, "last_step"] = int(ep.max()) if len(ep) else -1
        # Replicas do different work: a real share of the step AND the replica comparison's
        # documented minimum relative excess over what the other replicas took.
        big = bool((np.isnan(share) or share >= cfg.min_effect_share) and base > 0 and best / base >= cfg.replica_effect)
        res.at[i, "material"] = bool(best / 1e6 >= effect_floor_ms(bool(row["device"]), cfg) and big)
