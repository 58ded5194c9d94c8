"""Import PyTorch-profiler (Kineto) Chrome-trace JSON into canonical events.

One file is one rank. The file is streamed in chunks (kineto_stream); each chunk is turned into
compact columns (numbers as numpy arrays, strings as codes into a shared table) and dropped, so
memory follows the number of events kept, not the size of the JSON. Links that need the whole
trace (parents, launches, steps) are made at the end, vectorised where possible.

Two decoders feed the same column builder: a native scanner (_kineto_fast.c, built at install
time when a C compiler is there) that reads a chunk's JSON once into typed buffers, and the
reference path (msgspec structs). The scanner hands any chunk it cannot read exactly (odd value
types, bad JSON, ...) to the reference path, so results and error messages are the same either
way (tests/test_kineto_native.py); KAT_KINETO_NATIVE=0 forces the reference path (kat.knowledge.settings).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import numpy.ma  # noqa: F401 - np.unique loads it on first use; load it before import workers fork
import orjson

from kat.tools.telemetry.errors import TraceImportError, short
from kat.tools.telemetry.kineto_stream import EventStream, NativeChunk, _ByteSource
from kat.tools.telemetry.schema import COLLECTIVE_ALIASES, COLUMNS, DTYPE_BYTES, INT_COLUMNS, KINDS, STR_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

# Integer ns must hold ts + dur + the trace's base time; these limits leave room for all three
# (epoch-based Kineto timestamps are ~1.8e15 us today).
MAX_TIME_US = 2.5e15
MAX_BASE_NS = 4 * 10**18
MAX_RANK = 2**31 - 1  # ranks are stored as int32 (canonical schema)


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
    _KIND_CODE[k] for k in ("python", "cpu_op", "cuda_runtime", "kernel", "memcpy", "memset", "collective", "annotation", "step")
)

_COLLECTIVE_KERNEL = re.compile(
    r"nccl(Dev)?Kernel|ncclKernel|multimem_all_reduce|cross_device_reduce|all_reduce_kernel|"
    r"rccl|one_shot_all_reduce|two_shot_all_reduce|AllReduce|AllGather|ReduceScatter|SendRecv",
)
_NCCL_KERNEL_COLL = re.compile(r"nccl(?:Dev)?Kernel_([A-Za-z]+)")
_COMM_OP = re.compile(r"^(nccl|gloo|mpi|ucc|c10d)[:_]+([A-Za-z_]+)")
_CPU_COLLECTIVE_OP = re.compile(
    r"^(vllm|sglang|symm_mem|c10d|_c10d_functional)::.*(all_reduce|all_gather|reduce_scatter|all_to_all|send|recv|broadcast)"
)
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
    start_ns: int = -1  # first event start and last event end (absolute ns): the rank's clock span
    end_ns: int = -1


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

_NATIVE_VERSION = 2  # SCANNER_VERSION in _kineto_fast.c
_native: Any  # the C extension ships no type stubs
try:
    from kat.tools.telemetry import _kineto_fast

    _native = _kineto_fast
except ImportError:  # not built (no C compiler at install time): the reference path does it all
    _native = None
else:
    if getattr(_native, "VERSION", None) != _NATIVE_VERSION:  # a stale build: reinstall to rebuild
        _native = None
    else:
        _native.configure(dict(_CAT_CODE), (K_KERNEL, K_MEMCPY, K_MEMSET), K_CPU_OP)


def native_scanner() -> Any:
    """The native chunk scanner, or None when it is not built or KAT_KINETO_NATIVE=0."""
    from kat.knowledge.settings import trace_import_settings  # without pydantic: importing traces stays light

    return _native if trace_import_settings().kineto_native else None


def read_json_bytes(path: Path, max_bytes: int | None = None) -> bytes:
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
            if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= MAX_RANK:
                raise TraceImportError(
                    f"rank must be an integer from 0 to {MAX_RANK}, got {short(r)}", path=path, field="distributedInfo.rank"
                )
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
            path=path,
            field="distributedInfo.rank",
        )
    base = doc.baseTimeNanoseconds if doc.baseTimeNanoseconds is not None else 0
    if not isinstance(base, int) or isinstance(base, bool) or not 0 <= base <= MAX_BASE_NS:
        raise TraceImportError(
            f"must be an integer from 0 to {MAX_BASE_NS:.0e} ns, got {short(base)}", path=path, field="baseTimeNanoseconds"
        )
    devs = doc.deviceProperties
    names = [str(d.get("name", "")) for d in devs if isinstance(d, dict)] if isinstance(devs, list) else []
    return KinetoMeta(str(path), rank, world, backend, base, groups, names, source)


def _thread_time_order(pid: np.ndarray, tid: np.ndarray, ts: np.ndarray, end: np.ndarray) -> np.ndarray:
    """np.lexsort((-end, ts, tid, pid)): by thread, start, longest first, then position.

    Spans come nearly sorted by start, so two cheap stable sorts do it: by start (ties, rarer,
    reordered longest first), then by thread. A four-key lexsort was a third of `finish`.
    """
    if not len(ts):
        return np.zeros(0, dtype=np.int64)
    p0, t0 = int(pid.min()), int(tid.min())
    pspan, tspan = int(pid.max()) - p0 + 1, int(tid.max()) - t0 + 1
    if pspan * tspan >= 2**62:  # a thread key would not fit in int64
        return np.lexsort((-end, ts, tid, pid))
    order = np.argsort(ts, kind="stable")
    sorted_ts = ts[order]
    tie = np.flatnonzero(sorted_ts[1:] == sorted_ts[:-1])
    if len(tie):
        # The positions holding equal starts, reordered by (start, longest first): each keeps
        # its start, so the whole stays sorted by start.
        pos = np.union1d(tie, tie + 1)
        sub = order[pos]
        order[pos] = sub[np.lexsort((-end[sub], ts[sub]))]
    thread = (pid - p0) * tspan + (tid - t0)  # ordered as (pid, tid)
    if pspan * tspan <= np.iinfo(np.int16).max:
        thread = thread.astype(np.int16)  # few threads: a stable sort of int16 is a radix sort
    return order[np.argsort(thread[order], kind="stable")]


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
    order = rows[_thread_time_order(pid[rows], tid[rows], ts[rows], end[rows])]
    e = end[order]
    new_thread = np.ones(n, dtype=bool)
    pid_o, tid_o = pid[order], tid[order]
    new_thread[1:] = (pid_o[1:] != pid_o[:-1]) | (tid_o[1:] != tid_o[:-1])
    if _native is not None:
        # Same search as below, as one monotonic-stack pass in C.
        j = np.frombuffer(_native.prev_ge(np.ascontiguousarray(e, dtype=np.int64), new_thread.view(np.uint8)), dtype=np.int64)
        has = j >= 0
        parent[order[has]] = order[j[has]]
        return parent
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
    has = j >= seg_start
    has[has] = e[j[has]] >= e[has]
    parent[order[has]] = order[j[has]]
    return parent


def _inherit_collective_info(
    rows: np.ndarray, parent: np.ndarray, coll: np.ndarray, msg: np.ndarray, group: np.ndarray, max_hops: int = 8
) -> None:
    """Collective kernels (`rows`) take message size and group from the op that launched them:
    the nearest of up to `max_hops` ancestors that is a collective with a size or a group.

    All rows walk up together, one ancestor level per step. The ancestors are CPU rows, never
    one of `rows`, so no row's update changes another's walk.
    """
    at = parent[rows]
    for _ in range(max_hops):
        live = at >= 0
        if not live.any():
            return
        p = np.where(live, at, 0)
        hit = live & (coll[p] != 0) & ((msg[p] >= 0) | (group[p] != 0))
        if hit.any():
            r, src = rows[hit], p[hit]
            msg[r] = np.where(msg[r] < 0, msg[src], msg[r])
            group[r] = np.where(group[r] == 0, group[src], group[r])
        at = np.where(live & ~hit, parent[p], -1)


def canonical_collective(raw: str) -> str:
    """'allreduce_', '_allgather_base', 'AllReduce' -> 'all_reduce', 'all_gather', ..."""
    key = raw.strip("_").lower()
    return COLLECTIVE_ALIASES.get(key, COLLECTIVE_ALIASES.get(key.removesuffix("_base").strip("_"), ""))


@functools.lru_cache(maxsize=1024)
def _coll_name(raw: str) -> str:
    return canonical_collective(raw) or raw.lower()


@functools.lru_cache(maxsize=4096)
def _group_text(ranks: str) -> str:
    """'[0, 1, 2]' -> '0,1,2'. A trace repeats a few groups thousands of times: parsed once each
    (the parse was 40% of a rank's import time on a 1M-event capture)."""
    return ",".join(x.strip() for x in ranks.strip("[] ").split(",") if x.strip())


def _coll_from_args(args: _Args) -> tuple[str, int, str] | None:
    name = args.coll
    if not isinstance(name, str) or not name:
        return None
    coll = _coll_name(name)
    nelems = args.in_nelems
    dtype = args.dtype.lower() if isinstance(args.dtype, str) else str(args.dtype or "").lower()
    msg = nelems * DTYPE_BYTES.get(dtype, 0) if isinstance(nelems, int) and dtype in DTYPE_BYTES else -1
    ranks = args.pg_ranks
    group = ""
    if isinstance(ranks, str):
        group = _group_text(ranks)
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


def _shape_text(dims: Any) -> str:
    """Compact JSON text of an "Input Dims" value: the shape key of a cpu_op."""
    try:
        return orjson.dumps(dims).decode()
    except TypeError:  # e.g. an integer beyond 64 bits
        return str(dims)


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
    frac = us - whole
    frac *= 1000  # in place: these run over every event of a rank
    np.rint(frac, out=frac)
    ns = whole.astype(np.int64)
    ns *= 1000
    ns += frac.astype(np.int64)
    return ns


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

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        data: dict[str, Any] = {}
        for col in COLUMNS:
            if col in INT_COLUMNS:
                data[col] = self.ints[col]
            else:
                data[col] = pd.Categorical.from_codes(self.codes[col], categories=self.tables[col], validate=False)
        return pd.DataFrame(data)


class _Builder:
    """Accumulates compact columns chunk by chunk.

    A chunk arrives either as decoded structs (the reference path, `_add_structs`) or as column
    buffers from the native scanner (`_add_native`). Both reduce the chunk to the same per-row
    arrays and hand them to `_add_rows`, which does everything else once; string tables are
    filled in row order either way, so both paths give identical columns and tables.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.strings = {c: _Strings() for c in ("name", "coll_name", "group_ranks", "shape")}
        self.parts: dict[str, list[np.ndarray]] = {
            c: []
            for c in (
                "kind",
                "name",
                "ts_us",
                "dur_us",
                "pid",
                "tid",
                "correlation",
                "external_id",
                "device",
                "stream",
                "coll_name",
                "msg_bytes",
                "group_ranks",
                "shape",
                "step",
            )
        }
        # ac2g flow ends in file order: lists of (is_f, (pid, tid, ts), id) from structs, or the
        # native scanner's arrays. Only read when some launch or kernel lacks a correlation id.
        self.flow_parts: list[Any] = []
        self.unlinked: list[tuple[int, tuple[Any, Any, Any], bool]] = []  # (row, key, is_gpu)
        self.rows = 0
        self.vllm_steps = 0
        self.name_info: dict[str, tuple[int, str, bool, int]] = {}
        self.kernel_coll: dict[int, bool] = {}  # name code -> a collective kernel?
        self._args_decoder = msgspec.json.Decoder(_Args)

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

    def add(self, chunk: list[_Event] | NativeChunk) -> None:
        if isinstance(chunk, NativeChunk):
            self._add_native(chunk)
        else:
            self._add_structs(chunk)

    # -- the reference path: msgspec structs -------------------------------------------------
    def _add_structs(self, events: list[_Event]) -> None:
        cat_code = _CAT_CODE
        flows = [(e.ph == "f", (e.pid, e.tid, e.ts), e.id) for e in events if e.cat == "ac2g" and (e.ph == "s" or e.ph == "f")]
        if flows:
            self.flow_parts.append(flows)
        xs = [e for e in events if e.ph == "X" and e.cat in cat_code]
        n = len(xs)
        if n == 0:
            return
        path = self.path
        kind = np.array([cat_code[e.cat] for e in xs], dtype=np.int8)
        names = [e.name for e in xs]
        if not all(nm.__class__ is str for nm in names):
            i = next(i for i, nm in enumerate(names) if nm.__class__ is not str)
            raise TraceImportError(f"event {self.rows + i} has a non-string name {names[i]!r}", path=path, field="traceEvents[].name")
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
        coll_rows = [i for i, a in enumerate(args) if a.coll is not None]
        kind, shape_rows = self._add_rows(
            kind,
            name_codes,
            ts_us,
            dur_us,
            pid,
            tid,
            correlation,
            external_id,
            device,
            stream,
            coll_rows,
            args.__getitem__,
            lambda i: (xs[i].pid, xs[i].tid, xs[i].ts),
            lambda rows: np.array([_bytes_from_dims(args[i]) for i in rows.tolist()], dtype=np.int64),
        )
        shape, scode = self.parts["shape"][-1], self.strings["shape"].code
        for i in shape_rows:
            dims = args[i].input_dims
            if dims:
                shape[i] = scode(_shape_text(dims))

    # -- the native path: column buffers from _kineto_fast.scan --------------------------------
    def _add_native(self, chunk: NativeChunk) -> None:
        c = chunk.cols
        if c["flow_is_f"]:
            self.flow_parts.append(
                tuple(
                    np.frombuffer(c[k], dtype=t)
                    for k, t in (
                        ("flow_is_f", np.uint8),
                        ("flow_pid", np.int64),
                        ("flow_tid", np.int64),
                        ("flow_ts", np.float64),
                        ("flow_id", np.int64),
                        ("flow_id_ok", np.uint8),
                    )
                )
            )
        kind = np.frombuffer(c["kind"], dtype=np.int8).copy()
        if len(kind) == 0:
            return
        ncode = self.strings["name"].code
        # The scanner numbers distinct names per chunk in order of first use: coding them in that
        # order fills the table exactly as coding row by row does.
        local = np.fromiter((ncode(s) for s in c["names"]), dtype=np.int32, count=len(c["names"]))
        name_codes = local[np.frombuffer(c["name"], dtype=np.int32)]
        ts_us = np.frombuffer(c["ts"], dtype=np.float64)
        dur_us = np.frombuffer(c["dur"], dtype=np.float64)
        pid = np.frombuffer(c["pid"], dtype=np.int64)
        tid = np.frombuffer(c["tid"], dtype=np.int64)
        args_off = np.frombuffer(c["args_off"], dtype=np.int64)
        args_len = np.frombuffer(c["args_len"], dtype=np.int64)
        decode = self._args_decoder.decode

        def args_at(i: int) -> _Args:
            off = int(args_off[i])
            return _EMPTY_ARGS if off < 0 else decode(chunk.raw(off, int(args_len[i])))

        def dims_bytes(rows: np.ndarray) -> np.ndarray:
            # Rows the scanner saw no "Input Dims" on (absent, null or []) have no size to count:
            # only the others need their args decoded (collective ops without dims are common).
            out = np.full(len(rows), -1, dtype=np.int64)
            has = np.flatnonzero(np.frombuffer(c["shape"], dtype=np.int32)[rows] != -1)
            for j, i in zip(has.tolist(), rows[has].tolist()):
                out[j] = _bytes_from_dims(args_at(i))
            return out

        coll_rows = np.flatnonzero(np.frombuffer(c["coll"], dtype=np.uint8)).tolist()
        kind, shape_rows = self._add_rows(
            kind,
            name_codes,
            ts_us,
            dur_us,
            pid,
            tid,
            np.frombuffer(c["correlation"], dtype=np.int64),
            np.frombuffer(c["external_id"], dtype=np.int64),
            np.frombuffer(c["device"], dtype=np.int64).astype(np.int32),
            np.frombuffer(c["stream"], dtype=np.int64),
            coll_rows,
            args_at,
            lambda i: (int(pid[i]), int(tid[i]), float(ts_us[i])),
            dims_bytes,
        )
        if not len(shape_rows):
            return
        # shape id per row: >= 0 an index into c["shapes"], -1 none, -2 decode the args here.
        sid = np.frombuffer(c["shape"], dtype=np.int32)[shape_rows]
        shape, scode = self.parts["shape"][-1], self.strings["shape"].code
        if (sid == -2).any():  # rare: keep strict row order while mixing both sources
            for i, s in zip(shape_rows.tolist(), sid.tolist()):
                if s >= 0:
                    shape[i] = scode(c["shapes"][s])
                elif s == -2:
                    dims = args_at(i).input_dims
                    if dims:
                        shape[i] = scode(_shape_text(dims))
            return
        has = sid >= 0
        rows, sid = shape_rows[has], sid[has]
        if len(rows):
            uniq, first = np.unique(sid, return_index=True)
            codes = np.zeros(len(c["shapes"]), dtype=np.int32)
            for s in uniq[np.argsort(first)].tolist():
                codes[s] = scode(c["shapes"][s])
            shape[rows] = codes[sid]

    # -- both paths -----------------------------------------------------------------------------
    def _add_rows(
        self,
        kind: np.ndarray,
        name_codes: np.ndarray,
        ts_us: np.ndarray,
        dur_us: np.ndarray,
        pid: np.ndarray,
        tid: np.ndarray,
        correlation: np.ndarray,
        external_id: np.ndarray,
        device: np.ndarray,
        stream: np.ndarray,
        coll_rows: list[int],
        args_at: Callable[[int], _Args],
        key_at: Callable[[int], tuple[Any, Any, Any]],
        dims_bytes: Callable[[np.ndarray], np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Classify one chunk's rows and append its columns; returns (kind, rows whose shape to set)."""
        n = len(kind)
        linkable = (kind == K_RUNTIME) | (kind == K_KERNEL) | (kind == K_MEMCPY) | (kind == K_MEMSET)
        for i in np.flatnonzero((correlation < 0) & linkable).tolist():
            self.unlinked.append((self.rows + i, key_at(i), kind[i] != K_RUNTIME))

        coll = np.zeros(n, dtype=np.int32)
        group = np.zeros(n, dtype=np.int32)
        msg = np.full(n, -1, dtype=np.int64)
        shape = np.zeros(n, dtype=np.int32)
        step = np.full(n, -1, dtype=np.int64)
        ccode, gcode = self.strings["coll_name"].code, self.strings["group_ranks"].code
        for i in coll_rows:
            c = _coll_from_args(args_at(i))
            if c:
                coll[i], msg[i], group[i] = ccode(c[0]), c[1], gcode(c[2])
        values = self.strings["name"].values
        krows = np.flatnonzero(kind == K_KERNEL)
        if len(krows):
            kcodes = name_codes[krows]
            hits = []
            for code in np.unique(kcodes).tolist():
                hit = self.kernel_coll.get(code)
                if hit is None:
                    hit = self.kernel_coll[code] = _COLLECTIVE_KERNEL.search(values[code]) is not None
                if hit:
                    hits.append(code)
            if hits:
                hrows = krows[np.isin(kcodes, hits)]
                kind[hrows] = K_COLL
                need = hrows[coll[hrows] == 0]
                if len(need):
                    # Code collective names in order of first use, as a row-by-row pass would.
                    ncodes = name_codes[need]
                    uniq, first = np.unique(ncodes, return_index=True)
                    cc = np.zeros(len(uniq), dtype=np.int32)
                    for j in np.argsort(first).tolist():
                        nm = values[int(uniq[j])]
                        m = _NCCL_KERNEL_COLL.search(nm)
                        cc[j] = ccode(canonical_collective(m.group(1)) if m else ("all_reduce" if "reduce" in nm.lower() else ""))
                    coll[need] = cc[np.searchsorted(uniq, ncodes)]
        ops = np.flatnonzero((kind == K_ANN) | (kind == K_CPU_OP))
        if len(ops):
            self._mark_ops(ops, name_codes[ops], kind, coll, msg, step, dims_bytes)
        for col, arr in (
            ("kind", kind),
            ("name", name_codes),
            ("ts_us", ts_us),
            ("dur_us", dur_us),
            ("pid", pid),
            ("tid", tid),
            ("correlation", correlation),
            ("external_id", external_id),
            ("device", device),
            ("stream", stream),
            ("coll_name", coll),
            ("msg_bytes", msg),
            ("group_ranks", group),
            ("shape", shape),
            ("step", step),
        ):
            self.parts[col].append(arr)
        self.rows += n
        return kind, np.flatnonzero(kind == K_CPU_OP)

    def _mark_ops(
        self,
        ops: np.ndarray,
        op_codes: np.ndarray,
        kind: np.ndarray,
        coll: np.ndarray,
        msg: np.ndarray,
        step: np.ndarray,
        dims_bytes: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        """Steps and communication ops among one chunk's framework ops and annotations.

        Each distinct name is classified once. Every row is changed on its own (no row reads
        another's result), so whole-array updates give what a row-by-row pass gives; collective
        names are coded in order of first use, as such a pass would.
        """
        values = self.strings["name"].values
        uniq, inv = np.unique(op_codes, return_inverse=True)
        info = [self._classify_name(values[c]) for c in uniq.tolist()]
        is_step = np.fromiter((x[0] == K_STEP for x in info), dtype=bool, count=len(info))[inv]
        if is_step.any():
            rows = ops[is_step]
            stepno = np.array([x[3] for x in info], dtype=np.int64)[inv][is_step]
            vllm = stepno == -2  # vLLM steps are numbered in order of appearance
            stepno[vllm] = self.vllm_steps + np.arange(int(vllm.sum()))
            self.vllm_steps += int(vllm.sum())
            kind[rows] = K_STEP
            step[rows] = stepno
        named = np.fromiter((bool(x[1]) for x in info), dtype=bool, count=len(info))[inv]
        on_cpu = np.fromiter((x[2] for x in info), dtype=bool, count=len(info))[inv]
        # an op keeps a collective set from its args unless it runs on the CPU
        take = named & ~is_step & ((coll[ops] == 0) | on_cpu)
        if not take.any():
            return
        rows, codes = ops[take], op_codes[take]
        u, first, where = np.unique(codes, return_index=True, return_inverse=True)
        cc = np.zeros(len(u), dtype=np.int32)
        ccode = self.strings["coll_name"].code
        for j in np.argsort(first, kind="stable").tolist():
            cc[j] = ccode(info[int(np.searchsorted(uniq, u[j]))][1])
        coll[rows] = cc[where]
        need = rows[msg[rows] < 0]
        if len(need):
            msg[need] = dims_bytes(need)
        # gloo runs collectives on the CPU: the span is where the worker waits for peers.
        kind[rows[on_cpu[take]]] = K_COLL

    def _flows(self) -> tuple[dict[tuple[Any, Any, Any], Any], dict[tuple[Any, Any, Any], Any]]:
        """(start ends, finish ends): flow id by (pid, tid, ts), later ends overriding earlier ones."""
        flows_s: dict[tuple[Any, Any, Any], Any] = {}
        flows_f: dict[tuple[Any, Any, Any], Any] = {}
        for part in self.flow_parts:
            items: Iterable[tuple[Any, Any, Any]]
            if isinstance(part, list):
                items = part
            else:
                is_f, fpid, ftid, fts, fid, ok = (a.tolist() for a in part)
                items = zip(is_f, zip(fpid, ftid, fts), [f if o else None for f, o in zip(fid, ok)])
            for is_f, key, fid in items:
                try:
                    (flows_f if is_f else flows_s)[key] = fid
                except TypeError:  # an unhashable pid/tid/ts: such a flow cannot be matched anyway
                    pass
        return flows_s, flows_f

    def _check_time_range(self, us: np.ndarray, what: str) -> None:
        """Times must fit integer nanoseconds with room for the base time and durations."""
        bad = np.flatnonzero(np.abs(us) > MAX_TIME_US)
        if len(bad):
            raise TraceImportError(
                f"{what} value {short(us[bad[0]])} us is out of range (beyond +-{MAX_TIME_US:.0e} us, ~{MAX_TIME_US / 3.156e13:.0f} years)",
                path=self.path,
                field=f"traceEvents[].{what}",
            )

    def finish(self, rank: int, base_time_ns: int) -> EventColumns:
        cat: dict[str, np.ndarray] = {}
        for c in list(self.parts):  # chunk arrays are dropped as each column is joined
            v = self.parts.pop(c)
            cat[c] = np.concatenate(v) if v else np.array([], dtype=np.int64)
            del v
        n = self.rows
        kind = cat["kind"].astype(np.int8) if n else np.array([], dtype=np.int8)
        correlation = cat["correlation"] if n else np.array([], dtype=np.int64)
        if self.unlinked:
            flows_s, flows_f = self._flows()
            for row, key, is_gpu in self.unlinked:
                fid = (flows_f if is_gpu else flows_s).get(key)
                if isinstance(fid, int):
                    correlation[row] = fid
        if n:
            self._check_time_range(cat["ts_us"], "ts")
            self._check_time_range(cat["dur_us"], "dur")
        ts = _us_to_ns(cat["ts_us"]) + base_time_ns if n else np.array([], dtype=np.int64)
        dur = _us_to_ns(cat["dur_us"]) if n else np.array([], dtype=np.int64)
        end = ts + dur
        pid, tid, device = cat["pid"], cat["tid"], cat["device"].astype(np.int32)
        coll, msg, group = cat["coll_name"].astype(np.int32), cat["msg_bytes"], cat["group_ranks"].astype(np.int32)
        is_gpu = (kind == K_KERNEL) | (kind == K_MEMCPY) | (kind == K_MEMSET) | ((kind == K_COLL) & (device >= 0))
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
            _inherit_collective_info(
                gpu_rows[(kind[gpu_rows] == K_COLL) & ((msg[gpu_rows] < 0) | (group[gpu_rows] == 0))], parent, coll, msg, group
            )
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
        ints: dict[str, np.ndarray] = {
            "id": np.arange(n, dtype=np.int64),
            "rank": np.full(n, rank, dtype=np.int32),
            "pid": pid,
            "tid": tid,
            "ts_ns": ts,
            "dur_ns": dur,
            "step": step,
            "device": device,
            "stream": cat["stream"],
            "correlation": correlation,
            "external_id": cat["external_id"],
            "parent": parent,
            "msg_bytes": msg,
        }
        ints = {k: np.ascontiguousarray(v, dtype=INT_COLUMNS[k]) for k, v in ints.items()}
        codes: dict[str, np.ndarray] = {
            "kind": kind.astype(np.int32),
            "name": cat["name"].astype(np.int32),
            "coll_name": coll,
            "group_ranks": group,
            "shape": cat["shape"].astype(np.int32),
        }
        tables = {"kind": list(KINDS), **{c: s.values for c, s in self.strings.items()}}
        return EventColumns(ints, codes, tables)


def import_kineto_columns(path: Path | str, *, default_rank: int | None = None) -> tuple[EventColumns, KinetoMeta]:
    """Stream one Kineto trace file into canonical columns (no pandas needed)."""
    path = Path(path)
    stream = EventStream(path, _Event, _Header, native=native_scanner())
    builder = _Builder(path)
    for chunk in stream:
        builder.add(chunk)
    meta = _meta(path, stream.header, default_rank)
    meta.events_in_file = stream.events_seen
    cols = builder.finish(meta.rank, meta.base_time_ns)
    meta.events_imported = len(cols)
    if len(cols):
        ts, dur = cols.ints["ts_ns"], cols.ints["dur_ns"]
        meta.start_ns, meta.end_ns = int(ts.min()), int((ts + np.maximum(dur, 0)).max())
    return cols, meta


def import_kineto(path: Path | str, *, default_rank: int | None = None) -> tuple[pd.DataFrame, KinetoMeta]:
    """Read one Kineto trace file into a canonical event table and its metadata."""
    cols, meta = import_kineto_columns(path, default_rank=default_rank)
    return cols.to_frame(), meta


def normalize_column(col: str, values: pd.Series) -> np.ndarray | pd.Categorical:
    """One canonical column in its canonical dtype (strings as categoricals to keep memory low)."""
    import pandas as pd

    if col in INT_COLUMNS:
        return values.to_numpy(dtype=INT_COLUMNS[col], copy=False)
    if isinstance(values.dtype, pd.CategoricalDtype):
        return _normalize_categorical(col, values.array)
    if col == "kind":
        return pd.Categorical(values.astype(object).where(values.notna(), ""), categories=list(KINDS))
    return pd.Categorical(values.astype(object).where(values.notna(), ""))


def _normalize_categorical(col: str, cat: pd.Categorical) -> pd.Categorical:
    """The same categorical as from the column's objects, by recoding its few categories: a
    Parquet dictionary column read back needs no pass over its strings (measured: 0.4 s of 1M events)."""
    import pandas as pd

    if col == "kind":
        return cat.set_categories(list(KINDS))
    if cat.isna().any():
        if "" not in cat.categories:
            cat = cat.add_categories([""])
        cat = cat.fillna("")
    codes = cat.codes
    used = np.zeros(len(cat.categories), dtype=bool)
    used[codes[codes >= 0]] = True
    # Observed values only, in sorted order: what pd.Categorical builds from objects.
    return cat.set_categories(sorted(cat.categories[used])) if len(codes) else pd.Categorical([], categories=pd.Index([], dtype=object))


def normalize_events(df: pd.DataFrame, columns: tuple[str, ...] | list[str] = COLUMNS) -> pd.DataFrame:
    """Canonical column order and dtypes for `columns` (all of them by default)."""
    import pandas as pd

    assert set(STR_COLUMNS) | set(INT_COLUMNS) == set(COLUMNS)
    return pd.DataFrame({col: normalize_column(col, df[col]) for col in columns})
