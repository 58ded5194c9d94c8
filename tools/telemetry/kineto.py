"""Import PyTorch-profiler (Kineto) Chrome-trace JSON into canonical events.

One file is one rank. The importer is column-oriented: it pulls each field out of the event
dicts in one pass per field and does the rest in numpy, because per-event Python work is what
makes trace loading slow.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pandas as pd

from tools.telemetry.errors import TraceImportError
from tools.telemetry.schema import COLLECTIVE_ALIASES, COLUMNS, DTYPE_BYTES, INT_COLUMNS, STR_COLUMNS

# Refuse to inflate more than this from one trace file: a hostile .gz can expand 1000x.
MAX_TRACE_BYTES = 16 * 1024**3

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
# Categories that exist in real traces but carry nothing the tools use (GPU-side copies of
# CPU annotations, profiler overhead, the whole-trace span).
_IGNORED_CATEGORIES = {"gpu_user_annotation", "overhead", "Trace", "cpu_instant_event", "ac2g", "fwdbwd"}

_COLLECTIVE_KERNEL = re.compile(
    r"nccl(Dev)?Kernel|ncclKernel|multimem_all_reduce|cross_device_reduce|all_reduce_kernel|"
    r"rccl|one_shot_all_reduce|two_shot_all_reduce|AllReduce|AllGather|ReduceScatter|SendRecv",
)
_NCCL_KERNEL_COLL = re.compile(r"nccl(?:Dev)?Kernel_([A-Za-z]+)")
_COMM_OP = re.compile(r"^(nccl|gloo|mpi|ucc|c10d)[:_]+([A-Za-z_]+)")
_CPU_COLLECTIVE_OP = re.compile(r"^(vllm|symm_mem|c10d|_c10d_functional)::.*(all_reduce|all_gather|reduce_scatter|all_to_all|send|recv|broadcast)")
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


def read_json_bytes(path: Path, max_bytes: int = MAX_TRACE_BYTES) -> bytes:
    """Bytes of a (possibly gzip-compressed) JSON file, with errors that name it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceImportError(f"cannot read file ({exc.strerror})", path=path) from exc
    if not raw:
        raise TraceImportError("file is empty", path=path)
    if raw[:2] == b"\x1f\x8b":
        try:
            d = zlib.decompressobj(wbits=31)
            out = d.decompress(raw, max_bytes)
            if d.unconsumed_tail:
                raise TraceImportError(f"decompresses to more than {max_bytes} bytes; refusing", path=path)
            if not d.eof:
                raise TraceImportError("gzip stream is truncated (file cut short?)", path=path)
            raw = out
        except zlib.error as exc:
            raise TraceImportError(f"corrupt gzip data ({exc})", path=path) from exc
        if not raw:
            raise TraceImportError("gzip file decompresses to nothing", path=path)
    elif len(raw) > max_bytes:
        raise TraceImportError(f"larger than {max_bytes} bytes; refusing", path=path)
    return raw


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


class _Doc(msgspec.Struct, gc=False):
    traceEvents: list[_Event] | None = None
    distributedInfo: Any = None
    baseTimeNanoseconds: Any = 0
    deviceProperties: Any = None


_EMPTY_ARGS = _Args()
_DOC_DECODER = msgspec.json.Decoder(_Doc)
_EVENTS_DECODER = msgspec.json.Decoder(list[_Event])


def _json_path(message: str) -> str | None:
    m = re.search(r"at `\$\.?([^`]*)`", message)
    return m.group(1) or None if m else None


def _parse(path: Path) -> _Doc:
    """Decode a trace into typed structs; only the fields the importer reads are materialised."""
    raw = read_json_bytes(path)
    try:
        if raw[:256].lstrip()[:1] == b"[":  # Chrome's bare-array trace form
            doc = _Doc(traceEvents=_EVENTS_DECODER.decode(raw))
        else:
            doc = _DOC_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise TraceImportError(f"not a Kineto trace: {exc}", path=path, field=_json_path(str(exc))) from exc
    except msgspec.DecodeError as exc:
        hint = " (file looks truncated)" if "truncated" in str(exc).lower() else ""
        raise TraceImportError(f"not valid JSON: {exc}{hint}", path=path) from exc
    events = doc.traceEvents
    if events is None:
        raise TraceImportError("no 'traceEvents' list: not a Chrome/Kineto trace", path=path, field="traceEvents")
    if not isinstance(events, list):
        raise TraceImportError(f"'traceEvents' must be a list, got {type(events).__name__}", path=path, field="traceEvents")
    return doc


def rank_from_filename(path: Path) -> int | None:
    m = _RANK_IN_NAME.search(path.name)
    return int(m.group(1)) if m else None


def _meta(path: Path, doc: _Doc, default_rank: int | None) -> KinetoMeta:
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


def _int_column(values: list[Any], default: int = -1) -> np.ndarray:
    """Integers from possibly missing / non-numeric JSON values."""
    try:
        # Fast path: ints and None (-> NaN). Ids here stay far below 2**53, so float64 is exact.
        f = np.array(values, dtype=np.float64)
        out = np.where(np.isnan(f), default, f).astype(np.int64)
        return out
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


def _ns(values: list[Any], path: Path, what: str) -> np.ndarray:
    """Microsecond floats -> integer ns, exact to the ns for Kineto's 3-decimal values."""
    try:
        us = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        bad = next((v for v in values if not isinstance(v, (int, float)) or isinstance(v, bool)), None)
        raise TraceImportError(f"non-numeric value {bad!r}", path=path, field=what) from exc
    if us.size and not np.isfinite(us).all():
        raise TraceImportError("contains NaN or infinite values", path=path, field=what)
    whole = np.floor(us)
    return whole.astype(np.int64) * 1000 + np.rint((us - whole) * 1000).astype(np.int64)


def _containment_parents(pid: np.ndarray, tid: np.ndarray, ts: np.ndarray, end: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Parent row of each given row: the innermost span on the same thread that contains it."""
    parent = np.full(len(pid), -1, dtype=np.int64)
    if len(rows) == 0:
        return parent
    # Outer spans first at equal start, so a parent precedes its children.
    order = rows[np.lexsort((-end[rows], ts[rows], tid[rows], pid[rows]))]
    p_l, t_l, s_l, e_l = pid[order].tolist(), tid[order].tolist(), ts[order].tolist(), end[order].tolist()
    o_l = order.tolist()
    out = [-1] * len(o_l)
    stack_rows: list[int] = []
    stack_ends: list[int] = []
    cur = None
    for i in range(len(o_l)):
        key = (p_l[i], t_l[i])
        if key != cur:
            cur = key
            stack_rows.clear()
            stack_ends.clear()
        s = s_l[i]
        while stack_ends and stack_ends[-1] <= s and not (stack_ends[-1] == s and e_l[i] == s):
            stack_ends.pop()
            stack_rows.pop()
        e = e_l[i]
        while stack_ends and e > stack_ends[-1]:
            # Overlapping but not nested (async spans): not a parent.
            stack_ends.pop()
            stack_rows.pop()
        if stack_rows:
            out[i] = stack_rows[-1]
        stack_rows.append(o_l[i])
        stack_ends.append(e)
    parent[order] = np.asarray(out, dtype=np.int64)
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


def import_kineto(path: Path | str, *, default_rank: int | None = None) -> tuple[pd.DataFrame, KinetoMeta]:
    """Read one Kineto trace file into a canonical event table and its metadata."""
    path = Path(path)
    doc = _parse(path)
    meta = _meta(path, doc, default_rank)
    events: list[_Event] = doc.traceEvents  # type: ignore[assignment]
    meta.events_in_file = len(events)
    kind_of = _CATEGORY_KIND
    xs = [e for e in events if e.ph == "X" and e.cat in kind_of]
    flows_s: dict[tuple[Any, Any, Any], Any] = {}
    flows_f: dict[tuple[Any, Any, Any], Any] = {}
    for e in events:
        if e.cat == "ac2g":
            if e.ph == "s":
                flows_s[(e.pid, e.tid, e.ts)] = e.id
            elif e.ph == "f":
                flows_f[(e.pid, e.tid, e.ts)] = e.id
    del doc, events

    n = len(xs)
    kind = np.asarray([kind_of[e.cat] for e in xs] or [], dtype=object)
    names = [e.name for e in xs]
    for i, nm in enumerate(names):
        if nm.__class__ is not str:
            raise TraceImportError(f"event {i} has a non-string name {nm!r}", path=path, field="traceEvents[].name")
    ts_raw = [e.ts for e in xs]
    if None in ts_raw:
        raise TraceImportError("a complete ('X') event has no 'ts'", path=path, field="traceEvents[].ts")
    ts = _ns(ts_raw, path, "traceEvents[].ts") + meta.base_time_ns
    dur = _ns([0 if e.dur is None else e.dur for e in xs], path, "traceEvents[].dur")
    if (dur < 0).any():
        raise TraceImportError("negative duration", path=path, field="traceEvents[].dur")
    end = ts + dur
    empty = _EMPTY_ARGS
    args = [e.args or empty for e in xs]
    pid = _int_column([e.pid for e in xs])
    tid = _int_column([e.tid for e in xs])
    correlation = _int_column([a.correlation for a in args])
    external_id = _int_column([a.external_id for a in args])
    device = np.full(n, -1, dtype=np.int32)
    stream = np.full(n, -1, dtype=np.int64)
    gpu_rows = np.flatnonzero(np.isin(kind, ["kernel", "memcpy", "memset"]))
    if len(gpu_rows):
        dev = _int_column([xs[i].pid if args[i].device is None else args[i].device for i in gpu_rows])
        st = _int_column([xs[i].tid if args[i].stream is None else args[i].stream for i in gpu_rows])
        device[gpu_rows] = dev.astype(np.int32)
        stream[gpu_rows] = st
    # Flows link launch and kernel when args lack a correlation id.
    if flows_f and (correlation[gpu_rows] < 0).any():
        for i in gpu_rows[correlation[gpu_rows] < 0]:
            fid = flows_f.get((xs[i].pid, xs[i].tid, xs[i].ts))
            if isinstance(fid, int):
                correlation[i] = fid
    rt_rows = np.flatnonzero(kind == "cuda_runtime")
    if flows_s and len(rt_rows) and (correlation[rt_rows] < 0).any():
        for i in rt_rows[correlation[rt_rows] < 0]:
            sid = flows_s.get((xs[i].pid, xs[i].tid, xs[i].ts))
            if isinstance(sid, int):
                correlation[i] = sid
    del xs

    # Steps: ProfilerStep#N spans, or vLLM's per-step annotation in order.
    step_num = np.full(n, -1, dtype=np.int64)
    ann_rows = np.flatnonzero(kind == "annotation")
    vllm_ord = 0
    for i in ann_rows:
        nm = names[i]
        m = _PROFILER_STEP.match(nm)
        if m:
            kind[i] = "step"
            step_num[i] = int(m.group(1))
        elif _VLLM_STEP.match(nm):
            kind[i] = "step"
            step_num[i] = vllm_ord
            vllm_ord += 1

    # Collectives: NCCL kernels, gloo/nccl record_function spans, framework all-reduce ops.
    coll_name = np.full(n, "", dtype=object)
    msg_bytes = np.full(n, -1, dtype=np.int64)
    group_ranks = np.full(n, "", dtype=object)
    for i in [i for i, a in enumerate(args) if a.coll is not None]:
        c = _coll_from_args(args[i])
        if c:
            coll_name[i], msg_bytes[i], group_ranks[i] = c
    is_coll_kernel: dict[str, bool] = {}
    for i in np.flatnonzero(kind == "kernel"):
        nm = names[i]
        hit = is_coll_kernel.get(nm)
        if hit is None:
            hit = is_coll_kernel[nm] = _COLLECTIVE_KERNEL.search(nm) is not None
        if hit:
            kind[i] = "collective"
            if not coll_name[i]:
                m = _NCCL_KERNEL_COLL.search(nm)
                coll_name[i] = canonical_collective(m.group(1)) if m else ("all_reduce" if "reduce" in nm.lower() else "")
    comm_of: dict[str, tuple[str, bool]] = {}
    for i in np.flatnonzero((kind == "annotation") | (kind == "cpu_op")):
        nm = names[i]
        hit = comm_of.get(nm)
        if hit is None:
            hit = comm_of[nm] = _classify_comm_op(nm)
        if not hit[0] or (coll_name[i] and not hit[1]):
            continue
        coll_name[i] = hit[0]
        if msg_bytes[i] < 0:
            msg_bytes[i] = _bytes_from_dims(args[i])
        if hit[1]:
            # gloo runs collectives on the CPU: the span is where the worker waits for peers.
            kind[i] = "collective"

    # Shapes of framework ops, for comparing like with like across repetitions.
    shape = np.full(n, "", dtype=object)
    for i in np.flatnonzero(kind == "cpu_op"):
        dims = args[i].input_dims
        if dims:
            shape[i] = orjson.dumps(dims).decode()

    # Parents: time containment per CPU thread; GPU work hangs under its launch call.
    cpu_rows = np.flatnonzero(~np.isin(kind, ["kernel", "memcpy", "memset", "collective"]) | (device < 0) & (kind == "collective"))
    parent = _containment_parents(pid, tid, ts, end, cpu_rows)
    gpu_like = np.flatnonzero(np.isin(kind, ["kernel", "memcpy", "memset"]) | ((kind == "collective") & (device >= 0)))
    if len(gpu_like) and len(rt_rows):
        rt_corr = correlation[rt_rows]
        ok = rt_corr >= 0
        launch_of = dict(zip(rt_corr[ok].tolist(), rt_rows[ok].tolist()))
        gl = correlation[gpu_like].tolist()
        parent[gpu_like] = np.asarray([launch_of.get(c, -1) if c >= 0 else -1 for c in gl], dtype=np.int64)
        # Collective kernels inherit metadata from the op that launched them.
        for i in gpu_like:
            if kind[i] == "collective" and (msg_bytes[i] < 0 or not group_ranks[i]):
                p, hops = parent[i], 0
                while p >= 0 and hops < 8:
                    if coll_name[p] and (msg_bytes[p] >= 0 or group_ranks[p]):
                        if msg_bytes[i] < 0:
                            msg_bytes[i] = msg_bytes[p]
                        if not group_ranks[i]:
                            group_ranks[i] = group_ranks[p]
                        break
                    p, hops = parent[p], hops + 1

    # Step of every event: its enclosing step span (CPU), or its launch's step (GPU).
    step = np.full(n, -1, dtype=np.int64)
    step_rows = np.flatnonzero(kind == "step")
    if len(step_rows):
        step[step_rows] = step_num[step_rows]
        srt = step_rows[np.argsort(ts[step_rows])]
        s_start, s_end, s_num = ts[srt], end[srt], step_num[srt]
        idx = np.searchsorted(s_start, ts, side="right") - 1
        valid = (idx >= 0)
        idx_c = np.clip(idx, 0, None)
        inside = valid & (ts < s_end[idx_c]) & (step < 0)
        step[inside] = s_num[idx_c[inside]]
        g = gpu_like[parent[gpu_like] >= 0]
        step[g] = step[parent[g]]

    df = pd.DataFrame({
        "id": np.arange(n, dtype=np.int64),
        "rank": np.full(n, meta.rank, dtype=np.int32),
        "pid": pid, "tid": tid,
        "kind": kind, "name": np.asarray(names, dtype=object),
        "ts_ns": ts, "dur_ns": dur, "step": step, "device": device, "stream": stream,
        "correlation": correlation, "external_id": external_id, "parent": parent,
        "coll_name": coll_name, "msg_bytes": msg_bytes, "group_ranks": group_ranks, "shape": shape,
    })
    return normalize_events(df), meta


def normalize_events(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical column order and dtypes (strings as categoricals to keep memory low)."""
    out = {}
    for col in COLUMNS:
        if col in INT_COLUMNS:
            out[col] = df[col].to_numpy(dtype=INT_COLUMNS[col], copy=False)
        else:
            out[col] = pd.Categorical(df[col].astype(object).where(df[col].notna(), ""))
    assert set(STR_COLUMNS) | set(INT_COLUMNS) == set(COLUMNS)
    return pd.DataFrame(out)
