"""Intra-worker test: each worker against its own repetitions of the same node.

Decode steps and layers repeat the same kernels and frames many times. Compared like with like
(same name, same batch shape), an occurrence far above the node's own median is a stall or a
spike: a GC pause inside a Python frame, a GPU stalled by a hardware error, a blocking read.
Spikes that hit (nearly) every rank at once are load, not a fault, and are dropped.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from tools.outpost.models import DetectorConfig
from tools.outpost.tree import CLS_COPY, CLS_CPU, CLS_GPU, KV_NAMES, STORAGE_NAMES, NodeTable

TESTED = (CLS_GPU, CLS_COPY, CLS_CPU)


def intra_worker(table: NodeTable, cfg: DetectorConfig) -> pd.DataFrame:
    """Occurrences far above their own history. One row per flagged node occurrence."""
    n = table.nodes
    sub = n[n["cls"].isin(TESTED)][["rank", "step", "name_code", "shape_key", "cls", "kind", "value", "ts_ns", "dur_ns", "local"]]
    if sub.empty:
        return pd.DataFrame()
    key = ["rank", "name_code", "shape_key"]
    g = sub.groupby(key, sort=False)["value"]
    med = g.transform("median").to_numpy()
    cnt = g.transform("size").to_numpy()
    absdev = np.abs(sub["value"].to_numpy() - med)
    mad = pd.Series(absdev, index=sub.index).groupby([sub[k] for k in key], sort=False).transform("median").to_numpy()
    val = sub["value"].to_numpy()
    excess = val - med
    floor = np.maximum(cfg.intra_min_ns, cfg.z * 1.4826 * mad)
    hit = (cnt >= cfg.min_steps_for_baseline) & (val >= med * (1.0 + cfg.intra_effect)) & (excess >= floor)
    out = sub[hit].copy()
    if out.empty:
        return out
    out["baseline"] = med[hit]
    out["excess"] = excess[hit]
    # Load hits every worker at once; a fault does not.
    ranks_total = n["rank"].nunique()
    per_step = out.groupby("step")["rank"].transform("nunique")
    if ranks_total >= 3:
        out = out[per_step.to_numpy() < max(3, int(np.ceil(0.75 * ranks_total)))]
    out["method"] = "intra"
    return out


def episodic_frames(table: NodeTable, cfg: DetectorConfig) -> pd.DataFrame:
    """Blocking I/O and KV-cache swapping inside the serving loop: frames that do not run every
    step (so they have no history to compare with), judged by the time they hold the worker."""
    n = table.nodes
    names = table.names
    flag = np.fromiter((bool(STORAGE_NAMES.search(x) or KV_NAMES.search(x)) for x in names), dtype=bool, count=len(names))
    host = n["kind"].isin(["python", "cpu_op"]).to_numpy()
    sub = n[host & flag[n["name_code"].to_numpy()]]
    if sub.empty:
        return pd.DataFrame()
    # Outermost matching frame only: a load wraps its read.
    top = sub.sort_values("dur_ns", ascending=False).drop_duplicates(["rank", "step"])
    top = top[top["dur_ns"] >= cfg.intra_min_ns]
    if top.empty:
        return pd.DataFrame()
    out = top[["rank", "step", "name_code", "cls", "kind", "ts_ns", "dur_ns", "local"]].copy()
    out["value"] = out["dur_ns"].astype(float)
    out["baseline"] = 0.0
    out["excess"] = out["value"]
    out["method"] = "intra"
    return out
