"""Import PyTorch-profiler (Kineto) Chrome-trace JSON into canonical events.

One file is one rank. The file is streamed in chunks (kineto_stream); each chunk is turned into
compact columns (numbers as numpy arrays, strings as codes into a shared table) and dropped, so
memory follows the number of events kept, not the size of the JSON. Links that need the whole
trace (parents, launches, steps) are made at the end, vectorised where possible.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import orjson

from tools.telemetry.errors import TraceImportError
from tools.telemetry.kineto_stream import MAX_TRACE_BYTES, EventStream, _ByteSource
from tools.telemetry.schema import COLLECTIVE_ALIASES, COLUMNS, DTYPE_BYTES, INT_COLUMNS, KINDS, STR_COLUMNS

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

_CATEGORY_KIND: dict[str, str] = {
    "python_function": "python",
    "cpu_op": "cpu_op",
    "operator": "cpu_op",
    "user_annotation": "annotation",
    "cuda_runtime": "cuda_runtime",
    "cuda_driver": "cuda_runtime",
    "kernel": "kernel",
    "gpu_memcpy": "memcpy",
    "gpu_memset": "memset",
    "Memcpy": "memcpy",
    "Memset": "memset",
}
# Other categories seen in real traces (gpu_user_annotation, overhead, Trace, cpu_instant_event)
# carry nothing the tools use; ac2g flows are read separately to link launches to kernels.
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
_CAT_CODE = {cat: _KIND_CODE[kind] for cat, kind in _CATEGORY_KIND.items()}
K_PYTHON, K_CPU_OP, K_RUNTIME, K_KERNEL, K_MEMCPY, K_MEMSET, K_COLL, K_ANN, K_STEP = (
    _KIND_CODE[k] for k in ("python", "cpu_op", "cuda_runtime", "kernel", "memcpy", "memset", "collective", "annotation", "step"))

_COLLECTIVE_KERNEL = re.compile(
    r"nccl(Dev)?Kernel|ncclKernel|multimem_all_reduce|cross_device_reduce|all_reduce_kernel|"
    r"rccl|one_shot_all_reduce|two_shot_all_reduce|AllReduce|AllGather|ReduceScatter|SendRecv",
)
_NCCL_KERNEL_COLL = re.compile(r"nccl(?:Dev)?Kernel_([A-Za-z]+)")
_COMM_OP = re.compile(r"^(nccl|gloo|mpi|ucc|c10d)[:_]+([A-Za-z_]+)")
_CPU_COLLECTIVE_OP = re.compile(r"^(vllm|sglang|symm_mem|c10d|_c10d_functional)::.*(all_reduce|all_gather|reduce_scatter|all_to_all|send|recv|broadcast)")
_PROFILER_STEP = re.compile(r"^ProfilerStep#(\d+)$")
# vLLM's per-engine-step annotation, e.g. execute_context_1(888_788544)_generation_0(0).
_VLLM_STEP = re.compile(r"^execute_context_\d+\(.*\)_generation_\d+\(.*\)$")
_RANK_IN_NAME = re.compile(r"(?:rank|worker)[-_]?(\d+)", re.IGNORECASE)


@dataclass
class KinetoMeta:
    """What a trace file says about itself, beside its events."""

    path: str
    rank: int
    world_size: int | None = None
    backend: str | None = None
    base_time_ns: int = 0
    process_groups: list[dict[str, Any]] = field(default_factory=list)
    device_names: list[str] = field(default_factory=list)
    rank_source: str = "distributedInfo"
    events_in_file: int = 0
    events_imported: int = -1


class _Args(msgspec.Struct, gc=False):
    """The few event args the tools use; everything else is skipped by the decoder."""

    correlation: Any = None
    external_id: Any = msgspec.field(default=None, name="External id")
    device: Any = None
    stream: Any = None
    coll: Any = msgspec.field(default=None, name="Collective name")
    in_nelems: Any = msgspec.field(default=None, name="In msg nelems")
    dtype: Any = None
    pg_ranks: Any = msgspec.field(default=None, name="Process Group Ranks")
    input_dims: Any = msgspec.field(default=None, name="Input Dims")
    input_type: Any = msgspec.field(default=None, name="Input type")


class _Event(msgspec.Struct, gc=False):
    ph: Any = None
    cat: Any = None
    name: Any = None
    pid: Any = None
    tid: Any = None
    ts: Any = None
    dur: Any = None
    id: Any = None
    args: _Args | None = None


class _Header(msgspec.Struct, gc=False):
    """The document around the events."""

    distributedInfo: Any = None
    baseTimeNanoseconds: Any = 0
    deviceProperties: Any = None


_EMPTY_ARGS = _Args()


def read_json_bytes(path: Path, max_bytes: int = MAX_TRACE_BYTES) -> bytes:
    """All inflated bytes of a (possibly gzip-compressed) file, with errors that name it."""
    src = _ByteSource(Path(path), max_bytes)
    try:
        parts = []
        while True:
            data = src.read()
            if not data:
                break
            parts.append(data)
    finally:
        src.close()
    raw = b"".join(parts)
    if not raw:
        raise TraceImportError("file is empty", path=path)
    return raw


def rank_from_filename(path: Path) -> int | None:
    m = _RANK_IN_NAME.search(path.name)
    return int(m.group(1)) if m else None


def _meta(path: Path, doc: _Header, default_rank: int | None) -> KinetoMeta:
    dist = doc.distributedInfo
    rank: int | None = None
    world = backend = None
    groups: list[dict[str, Any]] = []
    source = "distributedInfo"
    if isinstance(dist, dict):
        r = dist.get("rank")
        if r is not None:
            if not isinstance(r, int) or isinstance(r, bool) or r < 0:
                raise TraceImportError(f"rank must be a non-negative integer, got {r!r}", path=path, field="distributedInfo.rank")
            rank = r
        ws = dist.get("world_size")
        world = ws if isinstance(ws, int) and not isinstance(ws, bool) and ws > 0 else None
        backend = dist.get("backend") if isinstance(dist.get("backend"), str) else None
        pgc = dist.get("pg_config")
        groups = [g for g in pgc if isinstance(g, dict)] if isinstance(pgc, list) else []
    if rank is None:
        rank, source = rank_from_filename(path), "file name"
    if rank is None:
        rank, source = default_rank, "default"
    if rank is None:
        raise TraceImportError(
            "cannot tell which rank this trace is: no distributedInfo.rank and no rank-N/workerN in the file name",
            path=path, field="distributedInfo.rank",
        )
    base = doc.baseTimeNanoseconds if doc.baseTimeNanoseconds is not None else 0
    if not isinstance(base, int) or isinstance(base, bool) or base < 0:
        raise TraceImportError(f"must be a non-negative integer, got {base!r}", path=path, field="baseTimeNanoseconds")
    devs = doc.deviceProperties
    names = [str(d.get("name", "")) for d in devs if isinstance(d, dict)] if isinstance(devs, list) else []
    return KinetoMeta(str(path), rank, world, backend, base, groups, names, source)


def _containment_parents(pid: np.ndarray, tid: np.ndarray, ts: np.ndarray, end: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Parent row of each given row: the innermost span on the same thread that contains it.

    Sorted by (thread, start, longest first), a span's innermost container is the nearest
    earlier span on its thread that ends no sooner. That "nearest earlier greater-or-equal" is
    found for all spans at once by binary lifting over a range-max table of end times: no
    per-event Python loop, O(n log n) numpy work.
    """
    parent = np.full(len(pid), -1, dtype=np.int64)
    n = len(rows)
    if n == 0:
        return parent
    order = rows[np.lexsort((-end[rows], ts[rows], tid[rows], pid[rows]))]
    e = end[order]
    new_thread = np.ones(n, dtype=bool)
    new_thread[1:] = (pid[order][1:] != pid[order][:-1]) | (tid[order][1:] != tid[order][:-1])
    seg_start = np.maximum.accumulate(np.where(new_thread, np.arange(n), 0))
    # table[k][j] = max(e[j : j + 2**k])
    table = [e]
    while (1 << len(table)) <= n:
        half = 1 << (len(table) - 1)
        prev = table[-1]
        table.append(np.maximum(prev[:-half], prev[half:]))
    pos = np.arange(n)  # the search region for span i is [seg_start[i], pos[i])
    for k in range(len(table) - 1, -1, -1):
        cand = pos - (1 << k)
        ok = cand >= seg_start
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            continue
        lvl = table[k]
        skip = lvl[cand[idx]] < e[idx]  # the whole block ends too early: none of it contains span i
        pos[idx[skip]] = cand[idx[skip]]
    j = pos - 1
    has = (j >= seg_start)
    has[has] = e[j[has]] >= e[has]
    parent[order[has]] = order[j[has]]
    return parent


def canonical_collective(raw: str) -> str:
    """'allreduce_', '_allgather_base', 'AllReduce' -> 'all_reduce', 'all_gather', ..."""
    key = raw.strip("_").lower()
    return COLLECTIVE_ALIASES.get(key, COLLECTIVE_ALIASES.get(key.removesuffix("_base").strip("_"), ""))


def _coll_from_args(args: _Args) -> tuple[str, int, str] | None:
    name = args.coll
    if not isinstance(name, str) or not name:
        return None
    coll = canonical_collective(name) or name.lower()
    nelems = args.in_nelems
    dtype = str(args.dtype or "").lower()
    msg = nelems * DTYPE_BYTES.get(dtype, 0) if isinstance(nelems, int) and dtype in DTYPE_BYTES else -1
    ranks = args.pg_ranks
    group = ""
    if isinstance(ranks, str):
        group = ",".join(x.strip() for x in ranks.strip("[] ").split(",") if x.strip())
    elif isinstance(ranks, list):
        group = ",".join(str(x) for x in ranks)
    return coll, msg, group


def _bytes_from_dims(args: _Args) -> int:
    dims = args.input_dims
    types = args.input_type
    if not isinstance(dims, list) or not dims or not isinstance(dims[0], list):
        return -1
    n = 1
    for d in dims[0]:
        if not isinstance(d, int):
            return -1
        n *= d
    t = str(types[0]).lower() if isinstance(types, list) and types else ""
    return n * DTYPE_BYTES[t] if t in DTYPE_BYTES else -1


def _classify_comm_op(name: str) -> tuple[str, bool]:
    """(canonical collective or "", runs on the CPU) for a framework op / annotation name."""
    m = _COMM_OP.match(name)
    if m and canonical_collective(m.group(2)):
        return canonical_collective(m.group(2)), m.group(1) == "gloo"
    m2 = _CPU_COLLECTIVE_OP.match(name)
    if m2:
        return canonical_collective(m2.group(2)), False
    return "", False


def _int_column(values: list[Any], default: int = -1) -> np.ndarray:
    """Integers from possibly missing / non-numeric JSON values."""
    try:
        # Fast path: ints and None (-> NaN). Ids here stay far below 2**53, so float64 is exact.
        f = np.array(values, dtype=np.float64)
        return np.where(np.isnan(f), default, f).astype(np.int64)
    except (TypeError, ValueError):
        pass
    out = np.full(len(values), default, dtype=np.int64)
    for i, v in enumerate(values):
        if v.__class__ is int:
            out[i] = v
        elif v.__class__ is float and v == v:
            out[i] = int(v)
        elif v.__class__ is str and v.isdigit():
            out[i] = int(v)
    return out


def _float_column(values: list[Any], path: Path, what: str) -> np.ndarray:
    try:
        out = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        bad = next((v for v in values if not isinstance(v, (int, float)) or isinstance(v, bool)), None)
        raise TraceImportError(f"non-numeric value {bad!r}", path=path, field=what) from exc
    if out.size and not np.isfinite(out).all():
        raise TraceImportError("contains NaN, infinite or missing values", path=path, field=what)
    return out


def _us_to_ns(us: np.ndarray) -> np.ndarray:
    """Microsecond floats -> integer ns, exact to the ns for Kineto's 3-decimal values."""
    whole = np.floor(us)
    return whole.astype(np.int64) * 1000 + np.rint((us - whole) * 1000).astype(np.int64)


class _Strings:
    """A string table: values become small integer codes (dictionary encoding)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {"": 0}
        self.values: list[str] = [""]

    def code(self, s: str) -> int:
        c = self.codes.get(s)
        if c is None:
            c = self.codes[s] = len(self.values)
            self.values.append(s)
        return c


@dataclass
class EventColumns:
    """Canonical events of one rank as columns: ints as arrays, strings as codes + tables."""

    ints: dict[str, np.ndarray]
    codes: dict[str, np.ndarray]
    tables: dict[str, list[str]]

    def __len__(self) -> int:
        return len(self.ints["id"])

    def to_frame(self) -> "pd.DataFrame":
        import pandas as pd

        data: dict[str, Any] = {}
        for col in COLUMNS:
            if col in INT_COLUMNS:
                data[col] = self.ints[col]
            else:
                data[col] = pd.Categorical.from_codes(self.codes[col], categories=self.tables[col], validate=False)
        return pd.DataFrame(data)

    def to_arrow(self) -> "pa.Table":
        import pyarrow as pa

        from tools.telemetry.schema import arrow_schema

        # Arrays are built from raw buffers: pa.array() on Python objects loads pandas (pyarrow's
        # pandas shim), which import workers and the cache writer otherwise never need.
        arrays = []
        for col in COLUMNS:
            if col in INT_COLUMNS:
                arrays.append(_numeric_array(self.ints[col]))
            else:
                codes = _numeric_array(np.ascontiguousarray(self.codes[col], dtype=np.int32))
                arrays.append(pa.DictionaryArray.from_arrays(codes, _string_array(self.tables[col])))
        return pa.Table.from_arrays(arrays, schema=arrow_schema())


def _numeric_array(values: np.ndarray) -> "pa.Array":
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def _string_array(values: list[str]) -> "pa.Array":
    import pyarrow as pa

    encoded = [v.encode("utf-8", "surrogatepass") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return pa.Array.from_buffers(pa.large_string(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]) \
        .cast(pa.string())


class _Builder:
    """Accumulates compact columns chunk by chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.strings = {c: _Strings() for c in ("name", "coll_name", "group_ranks", "shape")}
        self.parts: dict[str, list[np.ndarray]] = {c: [] for c in (
            "kind", "name", "ts_us", "dur_us", "pid", "tid", "correlation", "external_id", "device", "stream",
            "coll_name", "msg_bytes", "group_ranks", "shape", "step")}
        self.flows_s: dict[tuple[Any, Any, Any], Any] = {}
        self.flows_f: dict[tuple[Any, Any, Any], Any] = {}
        self.unlinked: list[tuple[int, tuple[Any, Any, Any], bool]] = []  # (row, key, is_gpu)
        self.rows = 0
        self.vllm_steps = 0
        self.name_info: dict[str, tuple[int, str, bool, int]] = {}

    def _classify_name(self, name: str) -> tuple[int, str, bool, int]:
        """(kind override or -1, collective, gloo-on-CPU, step number or -1) for an event name."""
        info = self.name_info.get(name)
        if info is None:
            m = _PROFILER_STEP.match(name)
            if m:
                info = (K_STEP, "", False, int(m.group(1)))
            elif _VLLM_STEP.match(name):
                info = (K_STEP, "", False, -2)  # numbered in order of appearance
            else:
                coll, on_cpu = _classify_comm_op(name)
                info = (-1, coll, on_cpu, -1)
            self.name_info[name] = info
        return info

    def add(self, events: list[_Event]) -> None:
        cat_code = _CAT_CODE
        for e in events:
            if e.cat == "ac2g":
                if e.ph == "s":
                    self.flows_s[(e.pid, e.tid, e.ts)] = e.id
                elif e.ph == "f":
                    self.flows_f[(e.pid, e.tid, e.ts)] = e.id
        xs = [e for e in events if e.ph == "X" and e.cat in cat_code]
        n = len(xs)
        if n == 0:
            return
        path = self.path
        kind = np.array([cat_code[e.cat] for e in xs], dtype=np.int8)
        names = [e.name for e in xs]
        if not all(nm.__class__ is str for nm in names):
            i = next(i for i, nm in enumerate(names) if nm.__class__ is not str)
            raise TraceImportError(f"event {self.rows + i} has a non-string name {names[i]!r}", path=path,
                                   field="traceEvents[].name")
        table, ncode = self.strings["name"].codes, self.strings["name"].code
        name_codes = np.array([table[nm] if nm in table else ncode(nm) for nm in names], dtype=np.int32)
        ts_us = _float_column([e.ts for e in xs], path, "traceEvents[].ts")
        dur_us = _float_column([0 if e.dur is None else e.dur for e in xs], path, "traceEvents[].dur")
        if (dur_us < 0).any():
            raise TraceImportError("negative duration", path=path, field="traceEvents[].dur")
        empty = _EMPTY_ARGS
        args = [e.args or empty for e in xs]
        pid = _int_column([e.pid for e in xs])
        tid = _int_column([e.tid for e in xs])
        correlation = _int_column([a.correlation for a in args])
        external_id = _int_column([a.external_id for a in args])
        device = np.full(n, -1, dtype=np.int32)
        stream = np.full(n, -1, dtype=np.int64)
        gpu = np.flatnonzero((kind == K_KERNEL) | (kind == K_MEMCPY) | (kind == K_MEMSET))
        if len(gpu):
            device[gpu] = _int_column([xs[i].pid if args[i].device is None else args[i].device for i in gpu]).astype(np.int32)
            stream[gpu] = _int_column([xs[i].tid if args[i].stream is None else args[i].stream for i in gpu])
        linkable = (kind == K_RUNTIME) | (kind == K_KERNEL) | (kind == K_MEMCPY) | (kind == K_MEMSET)
        for i in np.flatnonzero((correlation < 0) & linkable):
            e = xs[i]
            self.unlinked.append((self.rows + int(i), (e.pid, e.tid, e.ts), kind[i] != K_RUNTIME))

        coll = np.zeros(n, dtype=np.int32)
        group = np.zeros(n, dtype=np.int32)
        msg = np.full(n, -1, dtype=np.int64)
        shape = np.zeros(n, dtype=np.int32)
        step = np.full(n, -1, dtype=np.int64)
        ccode, gcode, scode = self.strings["coll_name"].code, self.strings["group_ranks"].code, self.strings["shape"].code
        for i in [i for i, a in enumerate(args) if a.coll is not None]:
            c = _coll_from_args(args[i])
            if c:
                coll[i], msg[i], group[i] = ccode(c[0]), c[1], gcode(c[2])
        kernel_hit: dict[str, bool] = {}
        for i in np.flatnonzero(kind == K_KERNEL):
            nm = names[i]
            hit = kernel_hit.get(nm)
            if hit is None:
                hit = kernel_hit[nm] = _COLLECTIVE_KERNEL.search(nm) is not None
            if hit:
                kind[i] = K_COLL
                if not coll[i]:
                    m = _NCCL_KERNEL_COLL.search(nm)
                    coll[i] = ccode(canonical_collective(m.group(1)) if m else ("all_reduce" if "reduce" in nm.lower() else ""))
        # Classify each distinct name once; only steps and communication ops need per-row work.
        ops = np.flatnonzero((kind == K_ANN) | (kind == K_CPU_OP))
        if len(ops):
            op_codes = name_codes[ops]
            uniq = np.unique(op_codes)
            values = self.strings["name"].values
            special = np.fromiter((self._classify_name(values[c]) != (-1, "", False, -1) for c in uniq), dtype=bool, count=len(uniq))
            ops = ops[np.isin(op_codes, uniq[special])]
        for i in ops:
            override, cname, on_cpu, stepno = self._classify_name(names[i])
            if override == K_STEP:
                kind[i] = K_STEP
                if stepno == -2:
                    stepno = self.vllm_steps
                    self.vllm_steps += 1
                step[i] = stepno
                continue
            if not cname or (coll[i] and not on_cpu):
                continue
            coll[i] = ccode(cname)
            if msg[i] < 0:
                msg[i] = _bytes_from_dims(args[i])
            if on_cpu:
                # gloo runs collectives on the CPU: the span is where the worker waits for peers.
                kind[i] = K_COLL
        dumps = orjson.dumps
        for i in np.flatnonzero(kind == K_CPU_OP):
            dims = args[i].input_dims
            if dims:
                shape[i] = scode(dumps(dims).decode())
        for col, arr in (("kind", kind), ("name", name_codes), ("ts_us", ts_us), ("dur_us", dur_us), ("pid", pid),
                         ("tid", tid), ("correlation", correlation), ("external_id", external_id), ("device", device),
                         ("stream", stream), ("coll_name", coll), ("msg_bytes", msg), ("group_ranks", group),
                         ("shape", shape), ("step", step)):
            self.parts[col].append(arr)
        self.rows += n

    def finish(self, rank: int, base_time_ns: int) -> EventColumns:
        cat = {c: (np.concatenate(v) if v else np.array([], dtype=np.int64)) for c, v in self.parts.items()}
        n = self.rows
        kind = cat["kind"].astype(np.int8) if n else np.array([], dtype=np.int8)
        correlation = cat["correlation"] if n else np.array([], dtype=np.int64)
        for row, key, is_gpu in self.unlinked:
            fid = (self.flows_f if is_gpu else self.flows_s).get(key)
            if isinstance(fid, int):
                correlation[row] = fid
        ts = _us_to_ns(cat["ts_us"]) + base_time_ns if n else np.array([], dtype=np.int64)
        dur = _us_to_ns(cat["dur_us"]) if n else np.array([], dtype=np.int64)
        end = ts + dur
        pid, tid, device = cat["pid"], cat["tid"], cat["device"].astype(np.int32)
        coll, msg, group = cat["coll_name"].astype(np.int32), cat["msg_bytes"], cat["group_ranks"].astype(np.int32)
        is_gpu = ((kind == K_KERNEL) | (kind == K_MEMCPY) | (kind == K_MEMSET) | ((kind == K_COLL) & (device >= 0)))
        parent = _containment_parents(pid, tid, ts, end, np.flatnonzero(~is_gpu))
        gpu_rows = np.flatnonzero(is_gpu)
        rt_rows = np.flatnonzero(kind == K_RUNTIME)
        if len(gpu_rows) and len(rt_rows):
            # GPU work hangs under the call that launched it (same correlation id).
            rt_corr = correlation[rt_rows]
            ok = rt_corr >= 0
            order = np.argsort(rt_corr[ok], kind="stable")
            sorted_corr, sorted_rows = rt_corr[ok][order], rt_rows[ok][order]
            gc = correlation[gpu_rows]
            pos = np.searchsorted(sorted_corr, gc)
            pos_c = np.clip(pos, 0, max(len(sorted_corr) - 1, 0))
            found = (gc >= 0) & (pos < len(sorted_corr)) & (sorted_corr[pos_c] == gc) if len(sorted_corr) else np.zeros(len(gc), bool)
            parent[gpu_rows[found]] = sorted_rows[pos_c[found]]
            # Collective kernels take message size and group from the op that launched them.
            for i in gpu_rows[(kind[gpu_rows] == K_COLL) & ((msg[gpu_rows] < 0) | (group[gpu_rows] == 0))]:
                p, hops = parent[i], 0
                while p >= 0 and hops < 8:
                    if coll[p] and (msg[p] >= 0 or group[p]):
                        if msg[i] < 0:
                            msg[i] = msg[p]
                        if not group[i]:
                            group[i] = group[p]
                        break
                    p, hops = parent[p], hops + 1
        step = cat["step"] if n else np.array([], dtype=np.int64)
        step_rows = np.flatnonzero(kind == K_STEP)
        if len(step_rows):
            # CPU events take the step span they start in; GPU events the step of their launch.
            srt = step_rows[np.argsort(ts[step_rows], kind="stable")]
            s_start, s_end, s_num = ts[srt], end[srt], step[srt]
            idx = np.searchsorted(s_start, ts, side="right") - 1
            idx_c = np.clip(idx, 0, None)
            inside = (idx >= 0) & (ts < s_end[idx_c]) & (step < 0) & ~is_gpu
            step[inside] = s_num[idx_c[inside]]
            g = gpu_rows[parent[gpu_rows] >= 0]
            step[g] = step[parent[g]]
        ints = {
            "id": np.arange(n, dtype=np.int64), "rank": np.full(n, rank, dtype=np.int32), "pid": pid, "tid": tid,
            "ts_ns": ts, "dur_ns": dur, "step": step, "device": device, "stream": cat["stream"],
            "correlation": correlation, "external_id": cat["external_id"], "parent": parent, "msg_bytes": msg,
        }
        ints = {k: np.ascontiguousarray(v, dtype=INT_COLUMNS[k]) for k, v in ints.items()}
        codes = {"kind": kind.astype(np.int32), "name": cat["name"].astype(np.int32), "coll_name": coll,
                 "group_ranks": group, "shape": cat["shape"].astype(np.int32)}
        tables = {"kind": list(KINDS), **{c: s.values for c, s in self.strings.items()}}
        return EventColumns(ints, codes, tables)


def import_kineto_columns(path: Path | str, *, default_rank: int | None = None) -> tuple[EventColumns, KinetoMeta]:
    """Stream one Kineto trace file into canonical columns (no pandas needed)."""
    path = Path(path)
    stream = EventStream(path, _Event, _Header)
    builder = _Builder(path)
    for chunk in stream:
        builder.add(chunk)
    meta = _meta(path, stream.header, default_rank)
    meta.events_in_file = stream.events_seen
    cols = builder.finish(meta.rank, meta.base_time_ns)
    meta.events_imported = len(cols)
    return cols, meta


def import_kineto(path: Path | str, *, default_rank: int | None = None) -> tuple["pd.DataFrame", KinetoMeta]:
    """Read one Kineto trace file into a canonical event table and its metadata."""
    cols, meta = import_kineto_columns(path, default_rank=default_rank)
    return cols.to_frame(), meta


def normalize_events(df: "pd.DataFrame") -> "pd.DataFrame":
    """Canonical column order and dtypes (strings as categoricals to keep memory low)."""
    import pandas as pd

    out = {}
    for col in COLUMNS:
        if col in INT_COLUMNS:
            out[col] = df[col].to_numpy(dtype=INT_COLUMNS[col], copy=False)
        elif col == "kind":
            out[col] = pd.Categorical(df[col].astype(object).where(df[col].notna(), ""), categories=list(KINDS))
        else:
            out[col] = pd.Categorical(df[col].astype(object).where(df[col].notna(), ""))
    assert set(STR_COLUMNS) | set(INT_COLUMNS) == set(COLUMNS)
    return pd.DataFrame(out)
