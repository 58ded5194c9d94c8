"""Trace trees: the node table every Outpost test works on.

Each event becomes a node with the value the tests compare (exclusive CPU time for host-side
frames, duration for device work), an alignment key (step, name, occurrence) so peers' trees
line up node by node, a shape bucket (the batch shape of the framework op that launched it)
so repetitions are compared like with like, and a class that says which hardware it exercises.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tools.telemetry.bundle import Bundle

# Host-side frames that wait for something else (a peer, the GPU, a queue): their time says
# nothing about the worker's own speed, so they never enter a duration test.
WAIT_NAMES = re.compile(
    r"synchroni[sz]e|cudaMemcpy|hipMemcpy|cudaStreamWaitEvent|cudaEventQuery|wait|dequeue|recv|poll|sleep|"
    r"barrier|broadcast|acquire|select|_get\b|queue\.py|threading\.py|selectors\.py|zmq|ProfilerStep|"
    r"execute_context|record_param_comms|c10d::|nccl:|gloo:|all_reduce|all_gather|reduce_scatter|alltoall|all_to_all",
    re.IGNORECASE,
)
STORAGE_NAMES = re.compile(r"load_file|safetensors|_load_adapter|load_lora|load_weights|read_from_disk|pread|np\.load|"
                           r"torch/serialization|Pageable -> Device", re.IGNORECASE)
KV_NAMES = re.compile(r"preempt|swap_out|swap_in|recompute|evict|kv_offload|hiradix|transfer_async|write_backup", re.IGNORECASE)
H2D = re.compile(r"HtoD|H2D|Host to Device", re.IGNORECASE)
D2H = re.compile(r"DtoH|D2H|Device to Host", re.IGNORECASE)

# Node classes: what hardware a node's time mostly measures.
CLS_GPU = "gpu_compute"
CLS_COPY = "copy"
CLS_CPU = "cpu"
CLS_COLL = "collective"
CLS_WAIT = "wait"
CLS_STEP = "step"

_COLS = ["rank", "kind", "name", "ts_ns", "dur_ns", "step", "parent", "device", "stream", "coll_name", "msg_bytes",
         "group_ranks", "shape"]


@dataclass
class NodeTable:
    """All nodes of all ranks, plus lookups for reporting."""

    nodes: pd.DataFrame
    names: np.ndarray  # code -> name
    events: int
    ranks: list[int]
    offsets: dict[int, int]  # rank -> row of its first node (ranks are stored contiguously)

    def path_of(self, rank: int, local: int, depth: int = 8) -> list[str]:
        """Names from the root down to a node (for the report), at most `depth` levels."""
        base = self.offsets.get(rank)
        if base is None:
            return []
        name_code = self.nodes["name_code"].to_numpy()
        parent = self.nodes["parent"].to_numpy()
        out = []
        idx = base + local
        while len(out) < depth:
            out.append(str(self.names[name_code[idx]]))
            p = int(parent[idx])
            if p < 0:
                break
            idx = base + p
        return list(reversed(out))


def _self_time(df: pd.DataFrame) -> np.ndarray:
    """Duration minus the time of same-thread children (host frames); plain duration otherwise."""
    dur = df["dur_ns"].to_numpy()
    parent = df["parent"].to_numpy()
    kind = df["kind"].to_numpy(dtype=object)
    host = np.isin(kind, ["python", "cpu_op", "cuda_runtime", "annotation", "step", "collective"]) & (df["device"].to_numpy() < 0)
    child = host & (parent >= 0)
    child_sum = np.bincount(parent[child], weights=dur[child], minlength=len(df)) if child.any() else np.zeros(len(df))
    return np.where(host, np.maximum(dur - child_sum, 0), dur)


def _shape_bucket(df: pd.DataFrame) -> np.ndarray:
    """Shape of the nearest framework op at or above each node (kernels inherit their launcher's)."""
    shape = df["shape"].cat.codes.to_numpy().astype(np.int64)
    empty_code = -1
    cats = df["shape"].cat.categories
    if "" in cats:
        empty_code = int(cats.get_loc(""))
    shape = np.where(shape == empty_code, -1, shape)
    parent = df["parent"].to_numpy()
    cur = parent.copy()
    for _ in range(4):
        need = (shape < 0) & (cur >= 0)
        if not need.any():
            break
        shape[need] = shape[cur[need]]
        cur = np.where(need, parent[np.maximum(cur, 0)], -1)
    return shape


def build_nodes(bundle: Bundle) -> NodeTable:
    frames = []
    total = 0
    offsets: dict[int, int] = {}
    rows = 0
    name_index: dict[str, int] = {}
    for r in bundle.ranks:
        df = bundle.events(r)
        total += len(df)
        if df.empty:
            continue
        part = df[_COLS].copy()
        offsets[r] = rows
        rows += len(df)
        part["local"] = np.arange(len(df))
        part["value"] = _self_time(df)
        sb = _shape_bucket(df)
        shape_names = df["shape"].cat.categories.to_numpy(dtype=object)
        part["shape_key"] = pd.Categorical(np.where(sb >= 0, shape_names[np.maximum(sb, 0)], ""))
        # Names: each rank's (small) category table mapped into one global code space.
        cats = df["name"].cat.categories
        lut = np.array([name_index.setdefault(c, len(name_index)) for c in cats], dtype=np.int64)
        codes = df["name"].cat.codes.to_numpy()
        part["name_code"] = np.where(codes >= 0, lut[np.maximum(codes, 0)], -1)
        part = part.drop(columns=["name", "shape"])
        frames.append(part)
    names = np.array(list(name_index), dtype=object)
    if not frames:
        return NodeTable(pd.DataFrame(columns=_COLS), names, total, bundle.ranks, offsets)
    nodes = pd.concat(frames, ignore_index=True)
    for col in ("kind", "coll_name", "group_ranks", "shape_key"):
        nodes[col] = nodes[col].astype("category")
    # Events outside any step form one pseudo-step, so single-step traces still compare repetitions.
    nodes["step"] = np.where(nodes["step"].to_numpy() < 0, -1, nodes["step"].to_numpy())
    nodes["occ"] = nodes.groupby(["rank", "step", "name_code"], sort=False).cumcount().to_numpy()
    cls = _classify(nodes, names)
    WAIT_SPAN = np.fromiter((WAIT_NAMES.search(x) is not None for x in names), dtype=bool, count=len(names))  # noqa: N806
    if not (nodes["device"].to_numpy() >= 0).any():
        # CPU-only run (e.g. gloo): user ranges that wrap no waiting are units of compute; their
        # whole duration is the comparable quantity (the extra work may be extra ops inside).
        gparent = _global_parents(nodes, offsets)
        waits = _has_waiting_descendant(gparent, np.isin(cls, [CLS_WAIT, CLS_COLL]) & (nodes["kind"].astype(object).to_numpy() != "annotation"))
        span = (nodes["kind"].astype(object).to_numpy() == "annotation") & ~waits & ~WAIT_SPAN[nodes["name_code"].to_numpy()] \
            if len(names) else np.zeros(len(nodes), bool)
        cls[span] = CLS_CPU
        nodes.loc[span, "value"] = nodes.loc[span, "dur_ns"].astype(float)
    nodes["cls"] = pd.Categorical(cls)
    return NodeTable(nodes, names, total, bundle.ranks, offsets)


def _global_parents(nodes: pd.DataFrame, offsets: dict[int, int]) -> np.ndarray:
    base = nodes["rank"].map(offsets).to_numpy()
    parent = nodes["parent"].to_numpy()
    return np.where(parent >= 0, base + parent, -1)


def _has_waiting_descendant(gparent: np.ndarray, waiting: np.ndarray) -> np.ndarray:
    """Marks every ancestor of a waiting node (a span that contains a wait is itself waiting)."""
    marked = np.zeros(len(gparent), dtype=bool)
    frontier = np.flatnonzero(waiting)
    for _ in range(64):
        up = gparent[frontier]
        up = up[(up >= 0)]
        up = up[~marked[up]]
        if len(up) == 0:
            break
        marked[up] = True
        frontier = np.unique(up)
    return marked


def _classify(nodes: pd.DataFrame, names: np.ndarray) -> np.ndarray:
    kind = nodes["kind"].astype(object).to_numpy()
    wait_name = np.fromiter((WAIT_NAMES.search(n) is not None for n in names), dtype=bool, count=len(names))
    is_wait = wait_name[nodes["name_code"].to_numpy()]
    cls = np.full(len(nodes), CLS_CPU, dtype=object)
    cls[kind == "kernel"] = CLS_GPU
    cls[np.isin(kind, ["memcpy", "memset"])] = CLS_COPY
    cls[kind == "collective"] = CLS_COLL
    cls[kind == "step"] = CLS_STEP
    host = np.isin(kind, ["python", "cpu_op", "cuda_runtime", "annotation"])
    cls[host & is_wait] = CLS_WAIT
    cls[kind == "annotation"] = CLS_WAIT  # user ranges wrap other work: their own time is not a signal
    return cls
