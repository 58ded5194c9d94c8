"""`kat detect --annotate OUT.json[.gz]`: every rank's trace merged into one Chrome trace, plus KAT's findings.

One process per rank (pid = rank), every original event kept (threads renumbered only where two
of a rank's processes share a thread id), all ranks on one clock. A "KAT findings" process holds
one slice per finding over its window, with the finding's fields in `args`, and flow arrows go
from the late rank's collective to each peer that waited on it. Opens in Perfetto UI and
chrome://tracing (docs/report.md).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from io import BufferedIOBase
from pathlib import Path
from typing import Any

import orjson

from kat.tools.outpost.models import DetectionResult
from kat.tools.telemetry import Bundle, BundleError
from kat.tools.telemetry.collectives import collective_rows, match_instances

FINDINGS_PID = 2_000_000_000  # far above any rank, so the track never collides with one
FINDINGS_NAME = "KAT findings"
FINDING_CAT = "user_annotation"  # KAT's own importer keeps these as annotation events
WAIT_CAT = "kat_wait"
FLOW_ID_STRIDE = 10**12  # per-rank offset of the original flow ids (ac2g), so ranks never cross-link
WAIT_ID_BASE = 9 * 10**15
MAX_WAIT_FLOWS = 5000  # flow arrows drawn at most; more would bury the trace
_KIND_CAT = {"python": "python_function", "cpu_op": "cpu_op", "cuda_runtime": "cuda_runtime", "kernel": "kernel",
             "memcpy": "gpu_memcpy", "memset": "gpu_memset", "collective": "kernel", "annotation": "user_annotation",
             "step": "user_annotation"}  # fmt: skip


class _Writer:
    """Chrome-trace JSON written event by event (no whole-trace list in memory)."""

    def __init__(self, fh: BufferedIOBase) -> None:
        self.fh, self.n = fh, 0

    def event(self, ev: dict[str, Any]) -> None:
        self.fh.write((b"," if self.n else b"") + orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        self.n += 1


@contextmanager
def _open_out(path: Path) -> Iterator[BufferedIOBase]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fh: BufferedIOBase = gzip.open(path, "wb", compresslevel=6) if path.name.endswith(".gz") else open(path, "wb")
    try:
        yield fh
    finally:
        fh.close()


def _read_kineto(path: Path) -> dict[str, Any]:
    try:
        raw = gzip.open(path, "rb").read() if path.name.endswith(".gz") else path.read_bytes()
        doc = orjson.loads(raw)
    except (OSError, EOFError, orjson.JSONDecodeError) as exc:
        raise BundleError(f"cannot re-read the trace for annotation ({exc})", path=path) from exc
    if isinstance(doc, list):
        doc = {"traceEvents": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise BundleError("not a Chrome trace (no traceEvents list)", path=path, field="traceEvents")
    return doc


class _Threads:
    """(original pid, original tid) -> thread id inside the rank's one process."""

    def __init__(self) -> None:
        self.map: dict[tuple[Any, Any], int] = {}
        self.used: set[int] = set()

    def tid(self, pid: Any, tid: Any) -> int:
        key = (pid, tid)
        if key not in self.map:
            want = tid if isinstance(tid, int) and not isinstance(tid, bool) else None
            if want is None or want in self.used:
                want = max(self.used, default=0) + 1
            self.map[key] = want
            self.used.add(want)
        return self.map[key]


def _flow_id(rank: int, fid: Any) -> Any:
    return rank * FLOW_ID_STRIDE + fid if isinstance(fid, int) and not isinstance(fid, bool) else f"r{rank}:{fid}"


def _emit_kineto(w: _Writer, rank: int, doc: dict[str, Any], shift_us: float, threads: _Threads) -> int:
    gpu_pids = {e.get("pid") for e in doc["traceEvents"] if isinstance(e, dict) and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")}
    named: set[int] = set()
    n = 0
    for e in doc["traceEvents"]:
        if not isinstance(e, dict):
            continue
        ev = dict(e)
        opid = e.get("pid")
        if e.get("ph") == "M":
            if e.get("name") in ("process_name", "process_labels", "process_sort_index"):
                continue  # the rank's process is named below
            if e.get("name") == "thread_name":
                named.add(threads.tid(opid, e.get("tid")))
        tid = threads.tid(opid, e.get("tid"))
        ev["pid"], ev["tid"] = rank, tid
        if isinstance(e.get("ts"), (int, float)) and not isinstance(e.get("ts"), bool):
            ev["ts"] = e["ts"] + shift_us
        if "id" in e and e.get("ph") in ("s", "t", "f"):
            ev["id"] = _flow_id(rank, e["id"])
        w.event(ev)
        n += 1
    for (opid, otid), tid in threads.map.items():
        if tid not in named:
            label = f"GPU {opid} stream {otid}" if opid in gpu_pids else f"thread {otid} (pid {opid})"
            w.event({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid, "args": {"name": label}})
    return n


def _emit_canonical(w: _Writer, bundle: Bundle, rank: int, base_ns: int, threads: _Threads) -> int:
    df = bundle.events(rank)
    n = 0
    for row in df[["pid", "tid", "kind", "name", "ts_ns", "dur_ns", "step", "device", "stream", "correlation"]].itertuples(index=False):
        w.event(
            {
                "ph": "X",
                "cat": _KIND_CAT.get(str(row.kind), str(row.kind)),
                "name": str(row.name),
                "pid": rank,
                "tid": threads.tid(int(row.pid), int(row.tid)),
                "ts": (int(row.ts_ns) - base_ns) / 1000.0,
                "dur": int(row.dur_ns) / 1000.0,
                "args": {k: int(getattr(row, k)) for k in ("step", "device", "stream", "correlation") if int(getattr(row, k)) >= 0},
            }
        )
        n += 1
    return n


def _wait_flows(w: _Writer, bundle: Bundle, det: DetectionResult, base_ns: int, threads: dict[int, _Threads]) -> int:
    """Arrows from the late rank's collective to each peer's waiting copy, for arrival findings."""
    late = [a for a in det.anomalies if a.method == "arrival"]
    if not late:
        return 0
    import pandas as pd

    parts = []
    for r in bundle.ranks:
        df = bundle.rank_columns(r, ["kind", "step", "ts_ns", "dur_ns", "coll_name", "group_ranks", "pid", "tid"])
        parts.append(collective_rows(df, r))
    c = match_instances(pd.concat(parts, ignore_index=True)) if parts else pd.DataFrame()
    if c.empty:
        return 0
    drawn = 0
    by_inst = c.groupby("inst", sort=False)
    for a in late:
        hit = c[c["is_last"] & (c["rank"] == a.rank) & (c["ts_ns"] >= a.start_ns) & (c["ts_ns"] <= a.end_ns)]
        if a.steps:
            hit = hit[hit["step"].isin(a.steps)]
        for row in hit.itertuples(index=False):
            at_us = (int(row.last_ts) - base_ns) / 1000.0 + 0.001  # 1 ns inside the late kernel, so the arrow binds to it
            for peer in by_inst.get_group(row.inst).itertuples(index=False):
                if peer.rank == a.rank or peer.wait <= 0 or drawn >= MAX_WAIT_FLOWS:
                    continue
                fid = WAIT_ID_BASE + drawn
                name = f"rank {peer.rank} waited {peer.wait / 1e6:.3f} ms on rank {a.rank}"
                end_us = (int(peer.ts_ns) + int(peer.dur_ns) - base_ns) / 1000.0
                w.event({"ph": "s", "cat": WAIT_CAT, "name": name, "id": fid, "pid": a.rank, "ts": at_us,
                         "tid": threads[a.rank].tid(int(row.pid), int(row.tid))})  # fmt: skip
                w.event({"ph": "f", "bp": "e", "cat": WAIT_CAT, "name": name, "id": fid, "pid": int(peer.rank),
                         "tid": threads[int(peer.rank)].tid(int(peer.pid), int(peer.tid)), "ts": min(at_us, end_us - 0.001)})  # fmt: skip
                drawn += 1
    return drawn


def write_annotated(bundle: Bundle, det: DetectionResult, out: Path) -> dict[str, int]:
    """Write the merged, annotated trace; returns counts (events, findings, flows)."""
    docs: dict[int, dict[str, Any] | None] = {}
    bases: dict[int, int] = {}
    for r in bundle.ranks:
        tf = bundle.traces[r]
        if tf.fmt == "kineto":
            doc = _read_kineto(tf.path)
            docs[r] = doc
            base = doc.get("baseTimeNanoseconds") or 0
            bases[r] = int(base) if isinstance(base, (int, float)) else 0
        else:
            docs[r] = None
            # Whole seconds below the rank's first event keep microsecond floats exact.
            first = bundle.rank_columns(r, ["ts_ns"])["ts_ns"]
            bases[r] = int(first.min()) // 10**9 * 10**9 if len(first) else 0
    base_ns = min(bases.values(), default=0)
    threads = {r: _Threads() for r in bundle.ranks}
    counts = {"events": 0, "findings": 0, "flows": 0}
    with _open_out(out) as fh:
        head = {
            "displayTimeUnit": "ms",
            "baseTimeNanoseconds": base_ns,
            "otherData": {"producer": "kat detect --annotate", "ranks": bundle.ranks},
        }
        fh.write(orjson.dumps(head)[:-1] + b',"traceEvents":[\n')
        w = _Writer(fh)
        for r in bundle.ranks:
            w.event({"ph": "M", "name": "process_name", "pid": r, "args": {"name": f"rank {r}"}})
            w.event({"ph": "M", "name": "process_sort_index", "pid": r, "args": {"sort_index": r + 1}})
            kineto = docs.pop(r)  # None: the rank's trace is canonical Parquet
            if kineto is not None:
                counts["events"] += _emit_kineto(w, r, kineto, (bases[r] - base_ns) / 1000.0, threads[r])
            else:
                counts["events"] += _emit_canonical(w, bundle, r, base_ns, threads[r])
        w.event({"ph": "M", "name": "process_name", "pid": FINDINGS_PID, "args": {"name": FINDINGS_NAME}})
        w.event({"ph": "M", "name": "process_sort_index", "pid": FINDINGS_PID, "args": {"sort_index": 0}})
        for i, a in enumerate(det.anomalies, 1):
            # One thread per finding: windows of different findings overlap and slices on one thread must nest.
            w.event(
                {"ph": "M", "name": "thread_name", "pid": FINDINGS_PID, "tid": i, "args": {"name": f"#{i} rank {a.rank} {a.component}"}}
            )
            w.event(
                {
                    "ph": "X",
                    "cat": FINDING_CAT,
                    "name": f"KAT finding #{i}: rank {a.rank} {a.component} ({a.method}) {a.name[:80]}",
                    "pid": FINDINGS_PID,
                    "tid": i,
                    "ts": (a.start_ns - base_ns) / 1000.0,
                    "dur": max(a.end_ns - a.start_ns, 1) / 1000.0,
                    "args": {"finding": i, "suspect_ranks": det.suspect_ranks, **a.model_dump(mode="json")},
                }
            )
            counts["findings"] += 1
        counts["flows"] = _wait_flows(w, bundle, det, base_ns, threads)
        fh.write(b"]}\n")
    return counts


def annotate_path(path: Path, det: DetectionResult, out: Path) -> str:
    """The CLI's entry: open the bundle at `path`, write `out`, say what was written."""
    from kat.tools.telemetry import open_bundle

    c = write_annotated(open_bundle(path), det, out)
    return (
        f"wrote {out}: {c['events']:,} original events of {det.stats.ranks} rank(s), {c['findings']} finding(s), {c['flows']} wait arrow(s)"
    )
