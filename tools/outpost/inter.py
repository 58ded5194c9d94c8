"""Inter-worker test: each worker against its synchronous peers at the same tree node.

Peers of a tensor-parallel group run the same kernels on the same batch, so at a given
(step, name, occurrence) their times should agree. A node's excess over the peer median is
summed per rank, step and node class; a rank-step is anomalous when that excess is large in
absolute terms, large relative to the peers' time, and far outside the spread of the other
ranks (robust z). Collectives are not judged here: their length is mostly waiting (arrival.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from tools.outpost.models import DetectorConfig
from tools.outpost.tree import CLS_COPY, CLS_CPU, CLS_GPU, NodeTable

TESTED = (CLS_GPU, CLS_COPY, CLS_CPU)


def rank_group(groups: list[list[int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for gi, g in enumerate(groups):
        for r in g:
            out.setdefault(r, gi)
    return out


def _sustained(agg: pd.DataFrame, floor: np.ndarray, cfg: DetectorConfig, extra: list[str] | None = None,
               full_effect: bool = False) -> pd.Series:
    """Moderate deviations that persist over consecutive steps: each step alone is within noise,
    together (z summed over the run, divided by sqrt of its length) they are not. With
    full_effect every step must still clear the full effect size (noisier comparisons)."""
    effect = cfg.min_effect if full_effect else cfg.min_effect / 2
    soft = ((agg["ratio"] >= 1.0 + effect) & (agg["excess"] >= floor / 2) & (agg["z"] >= 2.0)).to_numpy()
    out = np.zeros(len(agg), dtype=bool)
    for _, g in agg[soft].groupby(["rank", "cls"] + (extra or []), sort=False, observed=True):
        g = g.sort_values("step")
        steps, z, idx = g["step"].to_numpy(), g["z"].to_numpy(), g.index.to_numpy()
        start = 0
        for i in range(1, len(steps) + 1):
            if i == len(steps) or steps[i] != steps[i - 1] + 1:
                run = slice(start, i)
                if i - start >= cfg.sustained_steps and z[run].sum() / np.sqrt(i - start) >= cfg.z:
                    out[agg.index.get_indexer(idx[run])] = True
                start = i
    return pd.Series(out, index=agg.index)


def inter_worker(table: NodeTable, groups: list[list[int]], cfg: DetectorConfig) -> pd.DataFrame:
    """Rank-steps whose work of one class runs slower than their peers'. One row per (rank, step, cls)."""
    n = table.nodes
    gmap = rank_group([g for g in groups if len(g) > 1])
    if not gmap:
        return pd.DataFrame()
    sub = n[n["cls"].isin(TESTED) & n["rank"].isin(list(gmap))][
        ["rank", "step", "name_code", "occ", "cls", "value", "ts_ns", "dur_ns"]].copy()
    if sub.empty:
        return pd.DataFrame()
    sub["group"] = sub["rank"].map(gmap).to_numpy()
    gsize = pd.Series({gi: len(g) for gi, g in enumerate([g for g in groups if len(g) > 1])})
    key = ["group", "step", "name_code", "occ"]
    grp = sub.groupby(key, sort=False)["value"]
    med = grp.transform("median")
    sub["members"] = grp.transform("size")
    # With two peers the median is their mean and hides who deviates: compare with the other one.
    sub["peer_med"] = np.where(sub["members"].to_numpy() == 2, grp.transform("sum") - sub["value"], med)
    # Only nodes every member ran: sampled or truncated traces would compare unlike things.
    sub = sub[sub["members"].to_numpy() == gsize.reindex(sub["group"]).to_numpy()]
    if sub.empty:
        return pd.DataFrame()
    return _flag(sub, cfg)


def inter_replica(table: NodeTable, replica_groups: list[list[int]], cfg: DetectorConfig) -> pd.DataFrame:
    """Peers that are not in lock-step (data-parallel replicas, pipeline stage peers) run other
    batches: compare them per node *and batch shape*, against the other peers' median for the
    same shape, so an uneven load balancer is not mistaken for a slow worker."""
    n = table.nodes
    groups = [g for g in replica_groups if len(g) > 2]
    gmap = rank_group(groups)
    if not gmap:
        return pd.DataFrame()
    # Python frames (scheduling, batching, sampling) do work proportional to each replica's own
    # queue: across replicas only framework ops, launch calls and device work are comparable.
    sub = n[n["cls"].isin(TESTED) & n["rank"].isin(list(gmap)) & (n["kind"].astype(str) != "python")][
        ["rank", "step", "name_code", "shape_key", "cls", "value", "ts_ns", "dur_ns"]].copy()
    # Device work scales with the batch: compare it per shape. Host-side op costs barely do,
    # and their shapes differ across replicas, so host ops compare by name alone.
    sub["shape_key"] = np.where(sub["cls"].astype(str) == CLS_CPU, "", sub["shape_key"].astype(str))
    sub = sub[(sub["shape_key"] != "") | (sub["cls"].astype(str) == CLS_CPU)]
    if sub.empty:
        return pd.DataFrame()
    sub["group"] = sub["rank"].map(gmap).to_numpy()
    per_rank = sub.groupby(["group", "name_code", "shape_key", "rank"], sort=False, observed=True)["value"].median()
    peer = per_rank.groupby(level=[0, 1, 2], sort=False, observed=True).agg(["median", "size"])
    peer = peer[peer["size"] >= 3]
    idx = pd.MultiIndex.from_frame(sub[["group", "name_code", "shape_key"]])
    sub["peer_med"] = peer["median"].reindex(idx).to_numpy()
    sub = sub[sub["peer_med"].notna()]
    if sub.empty:
        return pd.DataFrame()
    # Replicas run different batches: only persistent deviations count; copies need twice the
    # lock-step floor; host-side work (scheduling scales with the batch, and is compared by name
    # only) must also clear a larger effect.
    cls = sub["cls"].astype(str).to_numpy()
    device_cfg = cfg.model_copy(update={"min_copy_excess_ns": 2 * cfg.min_copy_excess_ns})
    # Copies of a few microseconds swing by a third between replicas with different batches.
    copy_cfg = device_cfg.model_copy(update={"min_effect": max(cfg.min_effect, cfg.replica_copy_effect)})
    host_cfg = cfg.model_copy(update={"min_effect": max(cfg.min_effect, cfg.replica_effect)})
    parts = [_flag(sub[cls == c], conf, sustained_only=True)
             for c, conf in ((CLS_GPU, device_cfg), (CLS_COPY, copy_cfg), (CLS_CPU, host_cfg)) if (cls == c).any()]
    parts = [x for x in parts if not x.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _flag(sub: pd.DataFrame, cfg: DetectorConfig, sustained_only: bool = False) -> pd.DataFrame:
    """Rank-steps whose excess over peers is beyond noise, judged per node class and per node
    name (a class total hides one slow op among many noisy ones; a name alone misses a
    slowdown spread thin over many ops). One row per (rank, step, class), the larger finding."""
    sub = sub.copy()
    sub["excess"] = sub["value"] - sub["peer_med"]
    # A single node in a single step is too little evidence: per-node findings must persist.
    found = [x for x in (_flag_by(sub, cfg, [], sustained_only), _flag_by(sub, cfg, ["name_code"], True)) if not x.empty]
    if not found:
        return pd.DataFrame()
    out = pd.concat(found, ignore_index=True).sort_values("excess", ascending=False)
    out = out.drop_duplicates(["rank", "step", "cls"]).reset_index(drop=True)
    out["method"] = "inter"
    return out


def _flag_by(sub: pd.DataFrame, cfg: DetectorConfig, extra: list[str], sustained_only: bool = False) -> pd.DataFrame:
    keys = ["group", "rank", "step", "cls"] + extra
    agg = sub.groupby(keys, sort=False, observed=True).agg(
        observed=("value", "sum"), baseline=("peer_med", "sum"), excess=("excess", "sum"),
        start_ns=("ts_ns", "min"), count=("value", "size")).reset_index()
    agg["ratio"] = agg["observed"] / agg["baseline"].clip(lower=1.0)
    # Noise scale: the spread of the ratio over every rank-step of the same class (or node);
    # faults are the minority. A floor keeps near-zero spreads from making any wobble huge.
    dev = (agg["ratio"] - 1.0).abs()
    noise_keys = [agg["cls"]] + [agg[k] for k in extra]
    sigma = np.maximum(1.4826 * dev.groupby(noise_keys, observed=True).transform("median"), 0.01)
    agg["z"] = (agg["ratio"] - 1.0) / sigma
    floor = np.where(agg["cls"].to_numpy() == CLS_COPY, cfg.min_copy_excess_ns, cfg.min_excess_ns)
    strong = (agg["ratio"] >= 1.0 + cfg.min_effect) & (agg["excess"] >= floor) & (agg["z"] >= cfg.z)
    hit = _sustained(agg, floor, cfg, extra, full_effect=True) if sustained_only else strong | _sustained(agg, floor, cfg, extra)
    if extra:
        # Per-node tests multiply the hypotheses: only nodes that carry a real share of the
        # rank-step's time may speak on their own (tiny ops are all jitter).
        total = agg.groupby(["rank", "step", "cls"], observed=True)["baseline"].transform("sum")
        hit &= agg["baseline"] >= cfg.node_share * total
    out = agg[hit.to_numpy()].copy()
    if out.empty:
        return out
    if extra:
        out["top_excess"] = out["excess"]
    else:
        # The node that contributes most of the excess names the anomaly.
        top = (sub.merge(out[["rank", "step", "cls"]], on=["rank", "step", "cls"])
               .sort_values("excess", ascending=False).drop_duplicates(["rank", "step", "cls"]))
        out = out.merge(top[["rank", "step", "cls", "name_code", "excess"]].rename(columns={"excess": "top_excess"}),
                        on=["rank", "step", "cls"], how="left")
    out["top_share"] = out["top_excess"] / out["excess"].clip(lower=1.0)
    ends = sub.assign(end=sub["ts_ns"] + sub["dur_ns"]).groupby(["rank", "step", "cls"], observed=True)["end"].max()
    out["end_ns"] = ends.reindex(pd.MultiIndex.from_frame(out[["rank", "step", "cls"]])).to_numpy()
    return out
