"""Trace trees: the node table every Outpost test works on.

Each event becomes a node with the value the tests compare (exclusive CPU time for host-side
frames, duration for device work), an alignment key (step, name, occurrence) so peers' trees
line up node by node, a shape bucket (the batch shape of the framework op that launched it)
so repetitions are compared like with like, and a class that says which hardware it exercises.

The table is built rank by rank from only the columns it needs, into arrays allocated once for
all ranks, with the narrowest dtypes that hold the values: at ten million events it is the
largest thing Outpost keeps in memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kat.tools.telemetry.bundle import Bundle
from kat.tools.telemetry.schema import KINDS

# Host-side frames that wait for something else (a peer, the GPU, a queue): their time says
# nothing about the worker's own speed, so they never enter a duration test.
WAIT_NAMES = re.compile(
    r"synchroni[sz]e|cudaMemcpy|hipMemcpy|cudaStreamWaitEvent|cudaEventQuery|wait|dequeue|recv|poll|sleep|"
    r"barrier|broadcast|acquire|select|_get\b|queue\.py|threading\.py|selectors\.py|zmq|ProfilerStep|"
    r"execute_context|record_param_comms|c10d::|nccl:|gloo:|all_reduce|all_gather|reduce_scatter|alltoall|all_to_all",
    re.IGNORECASE,
)
STORAGE_NAMES = re.compile(
    r"load_file|safetensors|_load_adapter|load_lora|load_weights|read_from_disk|pread|np\.load|"
    r"torch/serialization|Pageable -> Device",
    re.IGNORECASE,
)
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
CLASSES = sorted([CLS_GPU, CLS_COPY, CLS_CPU, CLS_COLL, CLS_WAIT, CLS_STEP])
_CLS_CODE = {c: i for i, c in enumerate(CLASSES)}

# Canonical columns the node table is built from (the rest of a rank's events is never read).
_READ = ["kind", "name", "ts_ns", "dur_ns", "step", "parent", "device", "msg_bytes", "group_ranks", "shape"]
_HOST_KINDS = ("python", "cpu_op", "cuda_runtime", "annotation", "step", "collective")
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}


@dataclass
class NodeTable:
    """All nodes of all ranks, plus lookups for reporting.

    `nodes` columns: rank, kind (categorical), name_code (into `names`), ts_ns, dur_ns, step
    (-1 outside any step), parent and local (rows within the rank), device, shape_key
    (categorical), value (the compared time, ns), occ (occurrence of the name within its
    rank-step), cls (categorical node class). Integer columns are as narrow as their values
    allow. Collectives' message size and member list, which no other node has, are in `colls`.
    """

    nodes: pd.DataFrame
    names: np.ndarray  # code -> name
    events: int
    ranks: list[int]
    offsets: dict[int, int]  # rank -> row of its first node (ranks are stored contiguously)
    colls: pd.DataFrame = field(default_factory=pd.DataFrame)  # collective nodes: msg_bytes, group_ranks by row

    def path_of(self, rank: int, local: int, depth: int = 8) -> list[str]:
        """Names from the root down to a node (for the report), at most `depth` levels."""
        base = self.offsets.get(rank)
        if base is None:
            return []
        name_code = self.nodes["name_code"].to_numpy()
        parent = self.nodes["parent"].to_numpy()
        out: list[str] = []
        idx = base + local
        while len(out) < depth:
            out.append(str(self.names[name_code[idx]]))
            p = int(parent[idx])
            if p < 0:
                break
            idx = base + p
        return list(reversed(out))

    def rank_spans(self) -> dict[int, tuple[int, int]]:
        """rank -> (first row, end row) of its nodes, in storage order (ranks are contiguous)."""
        ranks = sorted(self.offsets, key=self.offsets.__getitem__)
        starts = [self.offsets[r] for r in ranks]
        return dict(zip(ranks, zip(starts, starts[1:] + [len(self.nodes)])))

    def global_parents(self) -> np.ndarray:
        """Row of each node's parent in the whole table (-1 for roots)."""
        return _parents_from(self.nodes["parent"].to_numpy(), self.offsets)


def _self_time(dur: np.ndarray, parent: np.ndarray, host: np.ndarray) -> np.ndarray:
    """Duration minus the time of same-thread children (host frames); plain duration otherwise."""
    child = host & (parent >= 0)
    child_sum = np.bincount(parent[child], weights=dur[child], minlength=len(dur)) if child.any() else np.zeros(len(dur))
    return np.where(host, np.maximum(dur - child_sum, 0), dur)


def _shape_bucket(shape: pd.Categorical, parent: np.ndarray) -> np.ndarray:
    """Shape code of the nearest framework op at or above each node (kernels inherit their
    launcher's); -1 where none is known."""
    codes = shape.codes.astype(np.int32)
    if "" in shape.categories:
        codes[codes == shape.categories.get_loc("")] = -1
    cur = parent.copy()
    for _ in range(4):
        need = (codes < 0) & (cur >= 0)
        if not need.any():
            break
        codes[need] = codes[cur[need]]
        cur = np.where(need, parent[np.maximum(cur, 0)], -1)
    return codes


def _occurrences(step: np.ndarray, name_code: np.ndarray, ts: np.ndarray | None = None) -> np.ndarray:
    """Occurrence index of each node among the nodes of the same (step, name), in row order,
    or in time order when `ts` is given."""
    n = len(step)
    key = (step.astype(np.int64) + 1) * (int(name_code.max()) + 2 if n else 1) + name_code + 1
    order = np.argsort(key, kind="stable") if ts is None else np.lexsort((ts, key))
    sk = key[order]
    start = np.r_[True, sk[1:] != sk[:-1]] if n else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    occ = np.empty(n, dtype=np.int32)
    occ[order] = np.arange(n) - first
    return occ


class _Interner:
    """Strings -> global codes in first-seen order, with a per-rank lookup table."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def lut(self, cats: pd.Index) -> np.ndarray:
        return np.array([self.index.setdefault(c, len(self.index)) for c in cats], dtype=np.int32)

    def sorted_remap(self) -> tuple[np.ndarray, np.ndarray]:
        """(categories in sorted order, provisional code -> sorted code)."""
        names = np.array(list(self.index), dtype=object)
        order = np.argsort(names, kind="stable") if len(names) else np.zeros(0, np.int64)
        remap = np.empty(len(names), dtype=np.int32)
        remap[order] = np.arange(len(names), dtype=np.int32)
        return names[order], remap


def _map_codes(codes: np.ndarray, lut: np.ndarray, dtype: type = np.int32) -> np.ndarray:
    """Per-rank categorical codes -> global codes (missing stays -1)."""
    out: np.ndarray = np.full(len(codes), -1, dtype=dtype)
    ok = codes >= 0
    if len(lut):
        out[ok] = lut[codes[ok]]
    return out


def _small_int(max_value: int) -> type:
    return np.int8 if max_value < 2**7 else np.int16 if max_value < 2**15 else np.int32


class _Columns:
    """Column arrays for all ranks, allocated once when the row count is known up front, each
    in the narrowest integer type its values so far fit (widened when a rank needs more)."""

    DTYPES = {
        "rank": np.int8,
        "kind": np.int8,
        "name_code": np.int16,
        "ts_ns": np.int64,
        "dur_ns": np.int64,
        "step": np.int32,
        "parent": np.int32,
        "local": np.int32,
        "device": np.int8,
        "shape_key": np.int16,
        "value": np.float64,
        "occ": np.int16,
        "cls": np.int8,
    }

    def __init__(self, capacity: int) -> None:
        self.rows = 0
        self.cols = {c: np.empty(capacity, dtype=d) for c, d in self.DTYPES.items()}

    def reserve(self, n: int) -> None:
        cap = len(self.cols["ts_ns"])
        if self.rows + n > cap:  # a rank larger than its metadata said: grow (copies once)
            for c, a in self.cols.items():
                self.cols[c] = np.resize(a, max(self.rows + n, 2 * cap))

    def put(self, col: str, values: np.ndarray) -> None:
        """Write the current rank's values of one column (after `reserve`)."""
        a = self.cols[col]
        if a.dtype.kind == "i" and values.dtype != a.dtype and len(values):
            lo, hi = int(values.min()), int(values.max())
            if lo < np.iinfo(a.dtype).min or hi > np.iinfo(a.dtype).max:
                wide = np.promote_types(a.dtype, np.promote_types(np.min_scalar_type(lo), np.min_scalar_type(hi)))
                a = self.cols[col] = a.astype(wide)
        a[self.rows : self.rows + len(values)] = values

    def finish(self) -> dict[str, np.ndarray]:
        if self.rows < len(self.cols["ts_ns"]):
            self.cols = {c: a[: self.rows].copy() for c, a in self.cols.items()}
        return self.cols


def _expected_rows(bundle: Bundle) -> int:
    """Rows over all ranks from the import metadata, without reading events where it is known."""
    total = 0
    for r in bundle.ranks:
        meta = bundle.traces[r].meta
        if meta is not None and meta.events_imported >= 0:
            total += meta.events_imported
        else:
            total += len(bundle.rank_columns(r, ["step"]))
    return total


def build_nodes(bundle: Bundle, cpu_only: bool | None = None) -> NodeTable:
    """The node table of every rank, read rank by rank (only the columns it needs).

    `cpu_only`: the whole capture has no device event (a CPU-only run, e.g. gloo); None: judge
    by the ranks read here. A table of some of a capture's ranks (one group) is told."""
    cols = _Columns(_expected_rows(bundle))
    total = 0
    offsets: dict[int, int] = {}
    names, shapes, groups = _Interner(), _Interner(), _Interner()
    wait_name: list[bool] = []
    coll_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for r in bundle.ranks:
        df = bundle.rank_columns(r, _READ)
        total += len(df)
        if df.empty:
            continue
        offsets[r] = cols.rows
        cols.reserve(len(df))
        coll_parts.append(_put_rank(df, r, cols, names, shapes, groups, wait_name))
        cols.rows += len(df)
        del df
    _release_reader_memory()
    name_arr = np.array(list(names.index), dtype=object)
    if not offsets:
        empty = pd.DataFrame({c: np.zeros(0, d) for c, d in _Columns.DTYPES.items()})
        return NodeTable(empty, name_arr, total, bundle.ranks, offsets, _colls([], groups))
    arr = cols.finish()
    del cols
    if cpu_only if cpu_only is not None else not (arr["device"] >= 0).any():
        _cpu_only_spans(arr, offsets, np.array(wait_name, dtype=bool))
    # Categoricals: shapes sorted (their order must not depend on which rank was read first);
    # kinds and classes in their fixed order.
    shape_cats, shape_remap = shapes.sorted_remap()
    data = {
        "rank": arr["rank"],
        "kind": pd.Categorical.from_codes(arr["kind"], categories=list(KINDS)),
        "name_code": arr["name_code"],
        "ts_ns": arr["ts_ns"],
        "dur_ns": arr["dur_ns"],
        "step": arr["step"],
        "parent": arr["parent"],
        "local": arr["local"],
        "device": arr["device"],
        "shape_key": _categorical(arr["shape_key"], shape_remap, shape_cats),
        "value": arr["value"],
        "occ": arr["occ"],
        "cls": pd.Categorical.from_codes(arr["cls"], categories=CLASSES),
    }
    del arr
    # copy=False: one block per column, so building the frame does not copy the arrays.
    nodes = pd.DataFrame(data, copy=False)
    return NodeTable(nodes, name_arr, total, bundle.ranks, offsets, _colls(coll_parts, groups))


def _colls(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], groups: _Interner) -> pd.DataFrame:
    """Collective nodes' message size and member list, indexed by row in the node table."""
    cats, remap = groups.sorted_remap()
    if not parts:
        return pd.DataFrame({"msg_bytes": np.zeros(0, np.int64), "group_ranks": _categorical(np.zeros(0, np.int32), remap, cats)})
    rows, msg, grp = (np.concatenate(x) for x in zip(*parts))
    return pd.DataFrame({"msg_bytes": msg, "group_ranks": _categorical(grp, remap, cats)}, index=pd.Index(rows, name=None))


def _release_reader_memory() -> None:
    """Hand back what the Parquet reads left cached: Arrow's allocator keeps freed buffers for
    reuse (about a sixth of the table at ten million events), and nothing reads Arrow again."""
    import sys

    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()


def _categorical(codes: np.ndarray, remap: np.ndarray, cats: np.ndarray) -> pd.Categorical:
    small: np.ndarray = np.full(len(codes), -1, dtype=_small_int(len(cats)))
    ok = codes >= 0
    small[ok] = remap[codes[ok]]
    return pd.Categorical.from_codes(small, categories=pd.Index(cats, dtype=object))


def _put_rank(
    df: pd.DataFrame, rank: int, cols: _Columns, names: _Interner, shapes: _Interner, groups: _Interner, wait_name: list[bool]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write one rank's node columns (global codes for names and shapes) into `cols`, a column
    at a time; returns its collectives' (rows, message sizes, group codes)."""
    n = len(df)
    parent = df["parent"].to_numpy().astype(np.int32)
    dur = df["dur_ns"].to_numpy()
    device = df["device"].to_numpy()
    kind_col = df["kind"].array
    kind = _map_codes(kind_col.codes, np.array([_KIND_CODE.get(k, -1) for k in kind_col.categories], dtype=np.int8), np.int8)
    host_kind = np.zeros(len(KINDS) + 1, dtype=bool)  # last slot: unknown kind (code -1)
    host_kind[[_KIND_CODE[k] for k in _HOST_KINDS]] = True
    cols.put("value", _self_time(dur, parent, host_kind[kind] & (device < 0)))
    name_col = df["name"].array
    lut = names.lut(name_col.categories)
    wait_name.extend(WAIT_NAMES.search(x) is not None for x in list(names.index)[len(wait_name) :])
    name_code = _map_codes(name_col.codes, lut)
    cols.put("cls", _classify(kind, np.array(wait_name, dtype=bool)[name_code] if n else np.zeros(0, bool)))
    shape_col = df["shape"].array
    cols.put("shape_key", _shape_codes(_shape_bucket(shape_col, parent), shapes.lut(shape_col.categories), shapes))
    # Events outside any step form one pseudo-step, so single-step traces still compare repetitions.
    step = df["step"].to_numpy()
    step = np.where(step < 0, -1, step)
    occ = _occurrences(step, name_code)
    coll = np.flatnonzero(kind == _KIND_CODE["collective"])
    if len(coll):
        # Collectives count in time order: every member issues them in the same order, but a
        # backend may run them on several threads, and which thread gets which differs by rank.
        occ[coll] = _occurrences(step[coll], name_code[coll], df["ts_ns"].to_numpy()[coll])
    cols.put("occ", occ)
    del occ
    cols.put("step", step)
    del step
    cols.put("rank", np.full(n, rank, dtype=np.int64))
    cols.put("kind", kind)
    cols.put("name_code", name_code)
    cols.put("ts_ns", df["ts_ns"].to_numpy())
    cols.put("dur_ns", dur)
    cols.put("parent", parent)
    cols.put("local", np.arange(n, dtype=np.int32))
    cols.put("device", device)
    gr = df["group_ranks"].array
    return (coll + cols.rows, df["msg_bytes"].to_numpy()[coll], _map_codes(gr.codes[coll], groups.lut(gr.categories)))


def _shape_codes(sb: np.ndarray, lut: np.ndarray, shapes: _Interner) -> np.ndarray:
    """Global shape codes; nodes without a known shape share the "" shape (compared together)."""
    out = _map_codes(sb, lut)
    none = sb < 0
    if none.any():
        out[none] = shapes.index.setdefault("", len(shapes.index))
    return out


def _cpu_only_spans(arr: dict[str, np.ndarray], offsets: dict[int, int], wait_name: np.ndarray) -> None:
    """CPU-only run (e.g. gloo): user ranges that wrap no waiting are units of compute; their
    whole duration is the comparable quantity (the extra work may be extra ops inside)."""
    if not len(wait_name):
        return
    cls, kind = arr["cls"], arr["kind"]
    annotation = kind == _KIND_CODE["annotation"]
    gparent = _parents_from(arr["parent"], offsets)
    waiting = np.isin(cls, [_CLS_CODE[CLS_WAIT], _CLS_CODE[CLS_COLL]]) & ~annotation
    span = annotation & ~_has_waiting_descendant(gparent, waiting) & ~wait_name[arr["name_code"]]
    cls[span] = _CLS_CODE[CLS_CPU]
    arr["value"][span] = arr["dur_ns"][span].astype(float)


def _parents_from(parent: np.ndarray, offsets: dict[int, int]) -> np.ndarray:
    """Global parent rows from rank-local ones (ranks are stored contiguously)."""
    base = np.zeros(len(parent), dtype=np.int64)
    starts = sorted(offsets.values())
    for s, e in zip(starts, starts[1:] + [len(parent)]):
        base[s:e] = s
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


def _classify(kind: np.ndarray, is_wait: np.ndarray) -> np.ndarray:
    """Class code of each node from its kind code and whether its name is a waiting one."""
    k = _KIND_CODE
    cls = np.full(len(kind), _CLS_CODE[CLS_CPU], dtype=np.int8)
    cls[kind == k["kernel"]] = _CLS_CODE[CLS_GPU]
    cls[(kind == k["memcpy"]) | (kind == k["memset"])] = _CLS_CODE[CLS_COPY]
    cls[kind == k["collective"]] = _CLS_CODE[CLS_COLL]
    cls[kind == k["step"]] = _CLS_CODE[CLS_STEP]
    host = np.isin(kind, [k["python"], k["cpu_op"], k["cuda_runtime"], k["annotation"]])
    cls[host & is_wait] = _CLS_CODE[CLS_WAIT]
    cls[kind == k["annotation"]] = _CLS_CODE[CLS_WAIT]  # user ranges wrap other work: their own time is not a signal
    return cls


def group_ids(*keys: np.ndarray) -> np.ndarray:
    """Group number of each row for a combination of integer key columns (categorical codes
    included), numbered in order of first appearance like ``groupby(sort=False)``. One int64
    key and one factorization instead of one per column: much less memory on big tables."""
    n = len(keys[0])
    combined = np.zeros(n, dtype=np.int64)
    span = 1
    for k in keys:
        k = np.asarray(k)
        if n == 0:
            break
        lo, hi = int(k.min()), int(k.max())
        width = hi - lo + 1
        if span * width >= 2**62:  # would overflow: renumber what we have densely first
            combined = pd.factorize(combined, sort=False)[0].astype(np.int64)
            span = int(combined.max()) + 1
        combined *= width
        combined += k.astype(np.int64) - lo
        span *= width
    return pd.factorize(combined, sort=False)[0]


def first_rows(ids: np.ndarray) -> np.ndarray:
    """Row of the first member of each group, for ids numbered in order of first appearance."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    seen = np.maximum.accumulate(ids)
    new = np.empty(len(ids), dtype=bool)
    new[0] = True
    new[1:] = ids[1:] > seen[:-1]
    return np.flatnonzero(new)


def consecutive_runs(steps: np.ndarray) -> list[slice]:
    """Slices of a sorted step array over which the steps follow one another (5, 6, 7, ...)."""
    if not len(steps):
        return []
    breaks = np.flatnonzero(np.diff(steps) != 1) + 1
    edges = [0, *breaks.tolist(), len(steps)]
    return [slice(a, b) for a, b in zip(edges, edges[1:])]
