"""Inter-worker test: each worker against its synchronous peers at the same tree node.

Peers of a tensor-parallel group run the same kernels on the same batch, so at a given
(step, name, occurrence) their times should agree. A node's excess over the peer median is
summed per rank, step and node class; a rank-step is anomalous when that excess is large in
absolute terms, large relative to the peers' time, and far outside the spread of the other
ranks (robust z). Collectives are not judged here: their length is mostly waiting (arrival.py).

Every per-node quantity is computed a few steps at a time (`CHUNK_ROWS` compared nodes per
pass) with one combined integer key per grouping: the node table of a ten-million-event trace
is large, and pandas groupbys over several of its columns at once would be several times larger.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kat.tools.outpost.models import DetectorConfig
from kat.tools.outpost.tree import CLS_COPY, CLS_CPU, CLS_GPU, NodeTable, consecutive_runs, first_rows, group_ids

TESTED = (CLS_GPU, CLS_COPY, CLS_CPU)
CHUNK_ROWS = 1 << 18  # compared nodes per pass: bounds the groupby temporaries on big traces
_RSC = ["rank", "step", "cls"]


def rank_group(groups: list[list[int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for gi, g in enumerate(groups):
        for r in g:
            out.setdefault(r, gi)
    return out


@dataclass
class _Compared:
    """Nodes compared with a baseline: their rows in the node table (ascending) and the
    baseline (the peers' median) of each; `group_of` maps a rank to its peer group."""

    rows: np.ndarray
    peer_med: np.ndarray
    group_of: np.ndarray

    def __getitem__(self, mask: np.ndarray) -> _Compared:
        return _Compared(self.rows[mask], self.peer_med[mask], self.group_of)


@dataclass
class Spread:
    """The noise scale `_flag_by` judges ratios against: the median |ratio - 1| over every
    rank-step of the capture, per node class (`by_class`) and per class and node name
    (`by_node`). Given when the table holds only some of the capture's ranks (phases.py);
    otherwise measured on the table itself."""

    by_class: dict[str, float]
    by_node: dict[tuple[str, str], float]

    def coded(self, names: np.ndarray) -> _CodedSpread:
        code = {str(x): i for i, x in enumerate(names)}
        return _CodedSpread(self.by_class, {(c, code[nm]): v for (c, nm), v in self.by_node.items() if nm in code})


@dataclass
class _CodedSpread:
    by_class: dict[str, float]
    by_node: dict[tuple[str, int], float]

    def median(self, agg: pd.DataFrame, extra: list[str]) -> np.ndarray:
        cls = agg["cls"].astype(str).to_numpy()
        if not extra:
            return np.array([self.by_class.get(c, np.nan) for c in cls], dtype=float)
        return np.array([self.by_node.get((c, int(k)), np.nan) for c, k in zip(cls, agg["name_code"].to_numpy())], dtype=float)


def spread_samples(aggs: tuple[pd.DataFrame, pd.DataFrame], names: np.ndarray) -> pd.DataFrame:
    """|ratio - 1| of every rank-step (class rows, then node rows) of `_aggregates`: what a
    Spread is the median of. Columns node (False: class rows), cls, name, dev."""
    parts = []
    for agg, by_node in zip(aggs, (False, True)):
        if agg.empty:
            continue
        dev = (agg["observed"] / agg["baseline"].clip(lower=1.0) - 1.0).abs().to_numpy()
        name = names[agg["name_code"].to_numpy()] if by_node else np.full(len(agg), "", dtype=object)
        parts.append(pd.DataFrame({"node": by_node, "cls": agg["cls"].astype(str).to_numpy(), "name": name, "dev": dev}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["node", "cls", "name", "dev"])


def spread_of(samples: pd.DataFrame) -> Spread:
    """The Spread of the capture from every unit's `spread_samples`."""
    if samples.empty:
        return Spread({}, {})
    cls_rows = ~samples["node"].to_numpy(dtype=bool)
    by_class = samples[cls_rows].groupby("cls")["dev"].median().to_dict()
    by_node = samples[~cls_rows].groupby(["cls", "name"])["dev"].median().to_dict()
    return Spread({str(k): float(v) for k, v in by_class.items()}, {(str(c), str(nm)): float(v) for (c, nm), v in by_node.items()})


def _group_lut(gmap: dict[int, int]) -> np.ndarray:
    """rank -> group index as an array (ranks are small non-negative ints); -1 outside any group."""
    lut = np.full(max(gmap) + 1, -1, dtype=np.int32)
    lut[list(gmap)] = list(gmap.values())
    return lut


def _rows_dtype(n: pd.DataFrame) -> type[np.signedinteger]:
    return np.int32 if len(n) < 2**31 else np.int64


def _step_chunks(step: np.ndarray) -> Iterator[np.ndarray]:
    """Ascending positions into `step`, a run of whole steps (about `CHUNK_ROWS` rows) at a
    time: every per-node comparison and per-rank-step sum stays inside one step."""
    size = CHUNK_ROWS
    if len(step) <= size:
        yield np.arange(len(step))
        return
    values, counts = np.unique(step, return_counts=True)
    ends = np.cumsum(counts)
    lo = 0
    while lo < len(values):
        base = ends[lo - 1] if lo else 0
        hi = max(lo, int(np.searchsorted(ends, base + size, side="right")) - 1)  # last step that still fits
        yield np.flatnonzero((step >= values[lo]) & (step <= values[hi]))
        lo = hi + 1


def _sustained(
    agg: pd.DataFrame, floor: np.ndarray, cfg: DetectorConfig, extra: list[str] | None = None, full_effect: bool = False
) -> pd.Series:
    """Moderate deviations that persist over consecutive steps: each step alone is within noise,
    together (z summed over the run, divided by sqrt of its length) they are not. With
    full_effect every step must still clear the full effect size (noisier comparisons)."""
    effect = cfg.min_effect if full_effect else cfg.min_effect / 2
    soft = ((agg["ratio"] >= 1.0 + effect) & (agg["excess"] >= floor / 2) & (agg["z"] >= 2.0)).to_numpy()
    out = np.zeros(len(agg), dtype=bool)
    for _, g in agg[soft].groupby(["rank", "cls"] + (extra or []), sort=False, observed=True):
        g = g.sort_values("step")
        z, idx = g["z"].to_numpy(), g.index.to_numpy()
        for run in consecutive_runs(g["step"].to_numpy()):
            n = run.stop - run.start
            if n >= cfg.sustained_steps and z[run].sum() / np.sqrt(n) >= cfg.z:
                out[agg.index.get_indexer(idx[run])] = True
    return pd.Series(out, index=agg.index)


def inter_worker(table: NodeTable, groups: list[list[int]], cfg: DetectorConfig, spread: Spread | None = None) -> pd.DataFrame:
    """Rank-steps whose work of one class runs slower than their peers'. One row per (rank, step, cls).
    `spread`: the capture's noise scale when `table` holds only some of its groups."""
    comp = _worker_compared(table, groups)
    if comp is None:
        return pd.DataFrame()
    return _flag(table.nodes, comp, cfg, spread=spread.coded(table.names) if spread is not None else None)


def worker_spread_samples(table: NodeTable, groups: list[list[int]]) -> pd.DataFrame:
    """`spread_samples` of the inter-worker comparisons of `table`'s groups."""
    comp = _worker_compared(table, groups)
    return spread_samples(_aggregates(table.nodes, comp)[:2], table.names) if comp is not None else spread_samples((), table.names)


def _worker_compared(table: NodeTable, groups: list[list[int]]) -> _Compared | None:
    """Every node all members of its lock-step group ran, with the peers' median."""
    n = table.nodes
    groups = [g for g in groups if len(g) > 1]
    gmap = rank_group(groups)
    if not gmap:
        return None
    rows = np.flatnonzero(n["cls"].isin(TESTED).to_numpy() & n["rank"].isin(list(gmap)).to_numpy()).astype(_rows_dtype(n))
    if not len(rows):
        return None
    lut, sizes = _group_lut(gmap), np.array([len(g) for g in groups])
    rank, step, name, occ, value = (n[c].to_numpy() for c in ("rank", "step", "name_code", "occ", "value"))
    peer_med = np.zeros(len(rows))
    compared = np.zeros(len(rows), dtype=bool)
    for pos in _step_chunks(step[rows]):
        r = rows[pos]
        group = lut[rank[r]]
        ids = group_ids(group, step[r], name[r], occ[r])
        members = np.bincount(ids)[ids]
        # Only nodes every member ran: sampled or truncated traces would compare unlike things.
        full = members == sizes[group]
        pos, r, ids, members = pos[full], r[full], ids[full], members[full]
        v = value[r]
        grp = pd.Series(v).groupby(ids)
        med = grp.transform("median").to_numpy()
        # With two peers the median is their mean and hides who deviates: compare with the other one.
        two = members == 2
        if two.any():
            med = np.where(two, grp.transform("sum").to_numpy() - v, med)
        peer_med[pos] = med
        compared[pos] = True
    if not compared.any():
        return None
    return _Compared(rows[compared], peer_med[compared], lut)


def inter_replica(
    table: NodeTable,
    replica_groups: list[list[int]],
    cfg: DetectorConfig,
    peers: pd.DataFrame | None = None,
    spread: Spread | None = None,
) -> pd.DataFrame:
    """Peers that are not in lock-step (data-parallel replicas, pipeline stage peers) run other
    batches: compare them per node *and batch shape*, against the other peers' median for the
    same shape, so an uneven load balancer is not mistaken for a slow worker. When `table`
    holds only some replicas' ranks (phases.py), `peers` (`replica_peers` over the capture)
    and `spread` (the capture's noise scale of these comparisons) come from the whole capture."""
    got = _replica_compared(table, replica_groups, peers)
    if got is None:
        return pd.DataFrame()
    n, cls_cats = table.nodes, list(table.nodes["cls"].cat.categories)
    coded = spread.coded(table.names) if spread is not None else None
    parts = [_flag(n, comp, conf, sustained_only=True, spread=coded) for comp, conf in _replica_classes(got, cls_cats, cfg)]
    parts = [x for x in parts if not x.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _replica_classes(got: tuple[_Compared, np.ndarray], cls_cats: list[str], cfg: DetectorConfig) -> list[tuple[_Compared, DetectorConfig]]:
    comp, cls = got
    # Replicas run different batches: only persistent deviations count; copies need twice the
    # lock-step floor; host-side work (scheduling scales with the batch, and is compared by name
    # only) must also clear a larger effect.
    device_cfg = cfg.model_copy(update={"min_copy_excess_ns": 2 * cfg.min_copy_excess_ns})
    # Copies of a few microseconds swing by a third between replicas with different batches.
    copy_cfg = device_cfg.model_copy(update={"min_effect": max(cfg.min_effect, cfg.replica_copy_effect)})
    host_cfg = cfg.model_copy(update={"min_effect": max(cfg.min_effect, cfg.replica_effect)})
    return [
        (comp[cls == cls_cats.index(c)], conf)
        for c, conf in ((CLS_GPU, device_cfg), (CLS_COPY, copy_cfg), (CLS_CPU, host_cfg))
        if c in cls_cats and (cls == cls_cats.index(c)).any()
    ]


def replica_spread_samples(table: NodeTable, replica_groups: list[list[int]], peers: pd.DataFrame | None) -> pd.DataFrame:
    """`spread_samples` of the replica comparisons of `table` (against `peers`)."""
    got = _replica_compared(table, replica_groups, peers)
    if got is None:
        return spread_samples((), table.names)
    cls_cats = list(table.nodes["cls"].cat.categories)
    parts = [
        spread_samples(_aggregates(table.nodes, comp)[:2], table.names) for comp, _ in _replica_classes(got, cls_cats, DetectorConfig())
    ]
    return pd.concat(parts, ignore_index=True) if parts else spread_samples((), table.names)


_NO_SHAPE = "\x00"  # shape key of nodes compared by name alone (host ops, and no "" category)


@dataclass
class _ReplicaNodes:
    rows: np.ndarray
    cls: np.ndarray
    group: np.ndarray
    name: np.ndarray
    shape: np.ndarray
    rank: np.ndarray
    lut: np.ndarray
    per_rank_ids: np.ndarray
    per_rank: np.ndarray  # each rank's median per (node, shape), by per_rank_ids
    first: np.ndarray  # first row of each per_rank id


def _replica_nodes(table: NodeTable, replica_groups: list[list[int]]) -> _ReplicaNodes | None:
    n = table.nodes
    groups = [g for g in replica_groups if len(g) > 2]
    gmap = rank_group(groups)
    if not gmap:
        return None
    # Python frames (scheduling, batching, sampling) do work proportional to each replica's own
    # queue: across replicas only framework ops, launch calls and device work are comparable.
    rows = np.flatnonzero(
        n["cls"].isin(TESTED).to_numpy() & n["rank"].isin(list(gmap)).to_numpy() & (n["kind"] != "python").to_numpy()
    ).astype(_rows_dtype(n))
    cls_cats = list(n["cls"].cat.categories)
    cls = n["cls"].array.codes[rows]
    cpu = cls == cls_cats.index(CLS_CPU)
    # Device work scales with the batch: compare it per shape. Host-side op costs barely do,
    # and their shapes differ across replicas, so host ops compare by name alone.
    shape_cats = n["shape_key"].cat.categories
    no_shape = shape_cats.get_loc("") if "" in shape_cats else -1
    shape = np.where(cpu, no_shape, n["shape_key"].array.codes[rows])
    keep = (shape != no_shape) | cpu
    rows, cls, shape = rows[keep], cls[keep], shape[keep]
    if not len(rows):
        return None
    rank, name, value = n["rank"].to_numpy()[rows], n["name_code"].to_numpy()[rows], n["value"].to_numpy()[rows]
    lut = _group_lut(gmap)
    group = lut[rank]
    # Each rank's median per (node, shape), then the median over the ranks (at least three).
    per_rank_ids = group_ids(group, name, shape, rank)
    per_rank = pd.Series(value).groupby(per_rank_ids).median().to_numpy()
    return _ReplicaNodes(rows, cls, group, name, shape, rank, lut, per_rank_ids, per_rank, first_rows(per_rank_ids))


def _shape_names(table: NodeTable, shape: np.ndarray) -> np.ndarray:
    cats = np.asarray(table.nodes["shape_key"].cat.categories, dtype=object)
    no_shape = "" in cats
    out = np.full(len(shape), _NO_SHAPE, dtype=object)
    ok = shape >= 0
    out[ok] = cats[shape[ok]]
    if no_shape:
        out[out == ""] = _NO_SHAPE
    return out


def replica_rank_medians(table: NodeTable, replica_groups: list[list[int]]) -> pd.DataFrame:
    """Each rank's median per (replica group, node name, shape): what `replica_peers` combines."""
    nodes = _replica_nodes(table, replica_groups)
    if nodes is None:
        return pd.DataFrame(columns=["group", "name", "shape", "rank", "median"])
    f = nodes.first
    return pd.DataFrame(
        {
            "group": nodes.group[f],
            "name": table.names[nodes.name[f]],
            "shape": _shape_names(table, nodes.shape[f]),
            "rank": nodes.rank[f],
            "median": nodes.per_rank,
        }
    )


def replica_peers(medians: pd.DataFrame) -> pd.DataFrame:
    """The replicas' median per (group, name, shape) over at least three ranks' medians."""
    if medians.empty:
        return pd.DataFrame(columns=["group", "name", "shape", "peer"])
    peer = medians.groupby(["group", "name", "shape"])["median"].agg(["median", "size"]).reset_index()
    peer = peer[peer["size"] >= 3]
    return peer.rename(columns={"median": "peer"})[["group", "name", "shape", "peer"]]


def _replica_compared(table: NodeTable, replica_groups: list[list[int]], peers: pd.DataFrame | None) -> tuple[_Compared, np.ndarray] | None:
    nodes = _replica_nodes(table, replica_groups)
    if nodes is None:
        return None
    f = nodes.first
    if peers is None:
        node_ids = group_ids(nodes.group[f], nodes.name[f], nodes.shape[f])
        peer = pd.Series(nodes.per_rank).groupby(node_ids).agg(["median", "size"])
        by_id = np.where(peer["size"].to_numpy() >= 3, peer["median"].to_numpy(), np.nan)[node_ids]
    else:
        key = pd.MultiIndex.from_arrays([nodes.group[f], table.names[nodes.name[f]], _shape_names(table, nodes.shape[f])])
        by_id = peers.set_index(["group", "name", "shape"])["peer"].reindex(key).to_numpy(dtype=float)
    peer_med = by_id[nodes.per_rank_ids]
    ok = ~np.isnan(peer_med)
    if not ok.any():
        return None
    return _Compared(nodes.rows, peer_med, nodes.lut)[ok], nodes.cls[ok]


def _chunk_frame(n: pd.DataFrame, comp: _Compared, pos: np.ndarray) -> pd.DataFrame:
    """The compared nodes at `pos` with what the tests sum over them."""
    r = comp.rows[pos]
    rank, value, peer_med = n["rank"].to_numpy()[r], n["value"].to_numpy()[r], comp.peer_med[pos]
    return pd.DataFrame(
        {
            "group": comp.group_of[rank],
            "rank": rank,
            "step": n["step"].to_numpy()[r],
            "cls": pd.Categorical.from_codes(n["cls"].array.codes[r], dtype=n["cls"].dtype),
            "name_code": n["name_code"].to_numpy()[r],
            "value": value,
            "peer_med": peer_med,
            "excess": value - peer_med,
            "ts_ns": n["ts_ns"].to_numpy()[r],
            "end": n["ts_ns"].to_numpy()[r] + n["dur_ns"].to_numpy()[r],
            "row": r,
        },
        copy=False,
    )


def _aggregate(f: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Sums per group of `keys` (groups in order of first appearance), with the row of each
    group's first node so that chunks can be put back in table order."""
    ids = group_ids(*(f[k].array.codes if isinstance(f[k].dtype, pd.CategoricalDtype) else f[k].to_numpy() for k in keys))
    first = first_rows(ids)
    sums = f[["value", "peer_med", "excess"]].groupby(ids).sum()
    agg = f[keys].iloc[first].reset_index(drop=True)
    agg["observed"] = sums["value"].to_numpy()
    agg["baseline"] = sums["peer_med"].to_numpy()
    agg["excess"] = sums["excess"].to_numpy()
    agg["start_ns"] = f["ts_ns"].groupby(ids).min().to_numpy()
    agg["count"] = np.bincount(ids)
    agg["first"] = f["row"].to_numpy()[first]
    return agg


def _aggregates(n: pd.DataFrame, comp: _Compared) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Per (group, rank, step, cls) and per (..., name) sums of the compared nodes, in table
    order, and the end of each rank-step-class."""
    keys = ["group", "rank", "step", "cls"]
    by_class, by_node, ends = [], [], []
    for pos in _step_chunks(n["step"].to_numpy()[comp.rows]):
        f = _chunk_frame(n, comp, pos)
        by_class.append(_aggregate(f, keys))
        by_node.append(_aggregate(f, keys + ["name_code"]))
        ends.append(f["end"].groupby([f[k] for k in _RSC], observed=True).max())
        del f
    end = pd.concat(ends)

    def in_order(parts: list[pd.DataFrame]) -> pd.DataFrame:
        agg = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return agg.sort_values("first", kind="stable").drop(columns="first").reset_index(drop=True)

    return in_order(by_class), in_order(by_node), end


def _flag(
    n: pd.DataFrame, comp: _Compared, cfg: DetectorConfig, sustained_only: bool = False, spread: _CodedSpread | None = None
) -> pd.DataFrame:
    """Rank-steps whose excess over peers is beyond noise, judged per node class and per node
    name (a class total hides one slow op among many noisy ones; a name alone misses a
    slowdown spread thin over many ops). One row per (rank, step, class), the larger finding."""
    by_class, by_node, end = _aggregates(n, comp)
    # A single node in a single step is too little evidence: per-node findings must persist.
    found = [_flag_by(by_class, [], cfg, sustained_only, spread), _flag_by(by_node, ["name_code"], cfg, True, spread)]
    found = [x for x in found if not x.empty]
    if not found:
        return pd.DataFrame()
    for x in found:
        if "top_excess" not in x:  # the class-level finding is named by its largest node
            _name_top(x, n, comp)
        x["top_share"] = x["top_excess"] / x["excess"].clip(lower=1.0)
        x["end_ns"] = end.reindex(pd.MultiIndex.from_frame(x[_RSC])).to_numpy()
    out = pd.concat(found, ignore_index=True).sort_values("excess", ascending=False)
    out = out.drop_duplicates(["rank", "step", "cls"]).reset_index(drop=True)
    out["method"] = "inter"
    return out


def _name_top(out: pd.DataFrame, n: pd.DataFrame, comp: _Compared) -> None:
    """The node that contributes most of each flagged rank-step's excess names the anomaly
    (adds name_code and top_excess to `out`, in place). Only the chunks holding a flagged step
    are read again; their nodes go back into table order before the (tie-sensitive) sort."""
    want = out[_RSC]
    step = n["step"].to_numpy()[comp.rows]
    flagged = np.isin(step, np.unique(out["step"].to_numpy()))
    cand = [
        _chunk_frame(n, comp, pos).merge(want, on=_RSC)[_RSC + ["name_code", "excess", "row"]]
        for pos in (p[flagged[p]] for p in _step_chunks(step))
        if len(pos)
    ]
    nodes = pd.concat(cand, ignore_index=True).sort_values("row", kind="stable").drop(columns="row")
    top = nodes.merge(want, on=_RSC).sort_values("excess", ascending=False).drop_duplicates(_RSC)
    named = out.merge(top[_RSC + ["name_code", "excess"]].rename(columns={"excess": "top_excess"}), on=_RSC, how="left")
    for c in ("name_code", "top_excess"):
        out[c] = named[c].to_numpy()


def _flag_by(
    agg: pd.DataFrame, extra: list[str], cfg: DetectorConfig, sustained_only: bool = False, spread: _CodedSpread | None = None
) -> pd.DataFrame:
    agg["ratio"] = agg["observed"] / agg["baseline"].clip(lower=1.0)
    # Noise scale: the spread of the ratio over every rank-step of the same class (or node);
    # faults are the minority. A floor keeps near-zero spreads from making any wobble huge.
    dev = (agg["ratio"] - 1.0).abs()
    noise_keys = [agg["cls"]] + [agg[k] for k in extra]
    med = dev.groupby(noise_keys, observed=True).transform("median").to_numpy() if spread is None else spread.median(agg, extra)
    sigma = np.maximum(1.4826 * med, 0.01)
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
    return out
