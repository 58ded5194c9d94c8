"""Intra-worker test: each worker against its own repetitions of the same node.

Decode steps and layers repeat the same kernels and frames many times. Compared like with like
(same name, same batch shape), an occurrence far above the node's own median is a stall or a
spike: a GC pause inside a Python frame, a GPU stalled by a hardware error, a blocking read.
Spikes that hit (nearly) every rank at once are load, not a fault, and are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kat.tools.outpost.models import DetectorConfig
from kat.tools.outpost.tree import CLS_COPY, CLS_CPU, CLS_GPU, KV_NAMES, STORAGE_NAMES, NodeTable, group_ids

TESTED = (CLS_GPU, CLS_COPY, CLS_CPU)


def intra_worker(table: NodeTable, cfg: DetectorConfig, load: StepLoad | None = None) -> pd.DataFrame:
    """Occurrences far above their own history. One row per flagged node occurrence.
    `load`: how many ranks of the whole capture spike in each step, when `table` holds only
    some of its ranks (one group, phases.py); None: count them in `table`."""
    out = intra_spikes(table, cfg)
    if out.empty:
        return out
    # Load hits every worker at once; a fault does not.
    load = load or StepLoad.of(out, len(table.offsets))
    if load.ranks_total >= 3:
        per_step = out["step"].map(load.ranks_per_step).fillna(0).to_numpy()
        out = out[per_step < max(3, int(np.ceil(0.75 * load.ranks_total)))]
    out["method"] = "intra"
    return out


@dataclass
class StepLoad:
    """Per step, how many ranks have an intra-worker spike in it; ranks with nodes."""

    ranks_per_step: dict[int, int]
    ranks_total: int

    @classmethod
    def of(cls, spikes: pd.DataFrame, ranks_total: int) -> StepLoad:
        return cls(spikes.groupby("step")["rank"].nunique().to_dict() if not spikes.empty else {}, ranks_total)


def intra_spikes(table: NodeTable, cfg: DetectorConfig) -> pd.DataFrame:
    """Every occurrence far above its own history, before the load filter."""
    n = table.nodes
    tested = n["cls"].isin(TESTED).to_numpy()
    name, shape, value = n["name_code"].to_numpy(), n["shape_key"].array.codes, n["value"].to_numpy()
    hits, baselines, excesses = [], [], []
    # A node's history is its own rank's: one rank at a time keeps the groupby temporaries small.
    for start, end in table.rank_spans().values():
        rows = np.flatnonzero(tested[start:end]) + start
        if not len(rows):
            continue
        ids = group_ids(name[rows], shape[rows])
        val = value[rows]
        med = pd.Series(val).groupby(ids).transform("median").to_numpy()
        cnt = np.bincount(ids)[ids]
        mad = pd.Series(np.abs(val - med)).groupby(ids).transform("median").to_numpy()
        excess = val - med
        floor = np.maximum(cfg.intra_min_ns, cfg.z * 1.4826 * mad)
        hit = (cnt >= cfg.min_steps_for_baseline) & (val >= med * (1.0 + cfg.intra_effect)) & (excess >= floor)
        # The first call of an op in a capture pays for warm-up (allocation, caching, lazy init): never a finding.
        hit[_first_by_time(ids, n["ts_ns"].to_numpy()[rows])] = False
        hits.append(rows[hit])
        baselines.append(med[hit])
        excesses.append(excess[hit])
    if not hits or not sum(len(h) for h in hits):
        return pd.DataFrame()
    rows = np.concatenate(hits)
    out = n.iloc[rows][["rank", "step", "name_code", "shape_key", "cls", "kind", "value", "ts_ns", "dur_ns", "local"]]
    out["baseline"] = np.concatenate(baselines)
    out["excess"] = np.concatenate(excesses)
    return out


def _first_by_time(ids: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Position of the earliest occurrence of each group."""
    order = np.lexsort((ts, ids))
    starts = np.flatnonzero(np.r_[True, ids[order][1:] != ids[order][:-1]])
    return order[starts]


def episodic_frames(table: NodeTable, cfg: DetectorConfig) -> pd.DataFrame:
    """Blocking I/O and KV-cache swapping inside the serving loop: frames that do not run every
    step (so they have no history to compare with), judged by the time they hold the worker."""
    n = table.nodes
    names = table.names
    storage = np.fromiter((STORAGE_NAMES.search(x) is not None for x in names), dtype=bool, count=len(names))
    kv = np.fromiter((KV_NAMES.search(x) is not None for x in names), dtype=bool, count=len(names))
    host = n["kind"].isin(["python", "cpu_op"]).to_numpy()
    code = n["name_code"].to_numpy()
    kv_frame = host & kv[code]
    is_kv = kv_frame & _episodic(table, kv_frame)
    flagged = (host & storage[code]) | is_kv
    if not flagged.any():
        return pd.DataFrame()
    # A KV swap frame only launches its copies: the time it holds the worker is the device
    # work underneath it, not the few microseconds of the launch.
    held = n["dur_ns"].to_numpy()[flagged].astype(float)
    if is_kv.any():
        held = np.where(is_kv[flagged], np.maximum(held, _device_time_below(table, is_kv)[flagged]), held)
    sub = n[flagged].assign(value=held)
    # Outermost matching frame only: a load wraps its read.
    top = sub.sort_values("value", ascending=False).drop_duplicates(["rank", "step"])
    top = top[top["value"] >= cfg.intra_min_ns]
    if top.empty:
        return pd.DataFrame()
    out = top[["rank", "step", "name_code", "cls", "kind", "ts_ns", "dur_ns", "local", "value"]].copy()
    out["dur_ns"] = np.maximum(out["dur_ns"].to_numpy(), out["value"].to_numpy().astype(np.int64))
    out["baseline"] = 0.0
    out["excess"] = out["value"]
    out["method"] = "intra"
    return out


def _episodic(table: NodeTable, mask: np.ndarray) -> np.ndarray:
    """Frames that run in at most half of their rank's steps: a swap that happens every step is
    how that deployment works (e.g. routine KV offload), judged by the ordinary intra test."""
    if not mask.any():
        return mask
    n = table.nodes
    sub = n.loc[mask, ["rank", "step", "name_code"]]
    steps_with = sub.groupby(["rank", "name_code"])["step"].transform("nunique").to_numpy()
    step = n["step"].to_numpy()
    steps_total = pd.Series({r: len(np.unique(step[a:b])) for r, (a, b) in table.rank_spans().items()})
    total = sub["rank"].map(steps_total).to_numpy()
    out = np.zeros(len(n), dtype=bool)
    out[np.flatnonzero(mask)] = steps_with <= np.maximum(1, total // 2)
    return out


def _device_time_below(table: NodeTable, frames: np.ndarray, depth: int = 6) -> np.ndarray:
    """For each flagged frame, the summed duration of the GPU work launched beneath it (device
    nodes hang under their launch call, which hangs under the frames that issued it)."""
    n = table.nodes
    gparent = table.global_parents()
    device = np.flatnonzero(n["device"].to_numpy() >= 0)
    dur = n["dur_ns"].to_numpy()[device].astype(float)
    total = np.zeros(len(n))
    cur = device
    for _ in range(depth):
        cur = np.where(cur >= 0, gparent[np.maximum(cur, 0)], -1)
        hit = (cur >= 0) & frames[np.maximum(cur, 0)]
        if hit.any():
            np.add.at(total, cur[hit], dur[hit])
            cur = np.where(hit, -1, cur)  # counted once, under the innermost flagged frame
        if not (cur >= 0).any():
            break
    return total
