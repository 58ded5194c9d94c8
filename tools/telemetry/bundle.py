"""Open an incident bundle (or a bare directory of Kineto traces) and serve its data.

Traces are imported once into canonical per-rank Parquet files in a cache directory, so a
second open reads columnar files instead of re-parsing JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from kat.tools.telemetry.errors import BundleError, TraceImportError
from kat.tools.telemetry.import_worker import cache_path, import_many
from kat.tools.telemetry.kineto import KinetoMeta, normalize_events, rank_from_filename
from kat.tools.telemetry.schema import COLUMNS, STR_COLUMNS, arrow_schema

if TYPE_CHECKING:  # pandas and pydantic load on first use: importing traces needs neither
    import pandas as pd

    from kat.tools.telemetry.manifest import IncidentManifest
    from kat.tools.telemetry.quality import DataQuality

TRACE_SUFFIXES = (".json", ".json.gz", ".parquet")


# JSON files beside traces that are not traces: the manifest and evaluation answer keys
# (a generated bundle's ground_truth.json, a recorded run's truth.json; tools never read them).
NOT_TRACES = frozenset({"incident.json", "ground_truth.json", "truth.json"})


def is_trace_name(p: Path) -> bool:
    return p.name.endswith(TRACE_SUFFIXES) and not p.name.startswith(".") and p.name not in NOT_TRACES


def _is_trace_file(p: Path) -> bool:
    return p.is_file() and is_trace_name(p)


def inside(root: Path, p: Path) -> bool:
    """True when p's real path (symlinks followed) lies inside root's real path."""
    real, base = p.resolve(), root.resolve()
    return real == base or base in real.parents


def _check_inside(root: Path, p: Path, what: str) -> None:
    if not inside(root, p):
        raise BundleError(f"{what} is a symlink to {p.resolve()}, outside the bundle; refused", path=p)


def default_cache_root() -> Path:
    """The imported-trace cache: <cache root>/traces (KAT_CACHE_DIR, kat.knowledge.settings)."""
    from kat.knowledge.settings import trace_import_settings  # without pydantic: importing traces stays light

    return trace_import_settings().trace_cache


@dataclass
class TraceFile:
    """One per-rank trace file and, once imported, what it said about itself."""

    path: Path
    rank: int
    fmt: str  # "kineto" | "parquet"
    meta: KinetoMeta | None = None


@dataclass
class Bundle:
    """An opened incident: manifest, per-rank traces, metrics, logs. Loads lazily."""

    root: Path
    given_manifest: IncidentManifest | None  # None: a bare trace directory, described on first use
    traces: dict[int, TraceFile]
    metrics_path: Path | None
    logs_path: Path | None
    cache_root: Path
    is_bare_trace_dir: bool = False
    bare_id: str = ""  # incident id of a bare trace directory or file (its name)
    _events: dict[int, pd.DataFrame] = field(default_factory=dict, repr=False)
    # Trace files left out (damaged, truncated, outside the bundle, another run's clock): file -> reason.
    skipped: dict[str, str] = field(default_factory=dict)
    # Metrics/logs files refused before loading (e.g. a symlink out of the bundle): source -> reason.
    refused: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)  # JSON files that are not traces at all: file -> why
    _quality: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def manifest(self) -> IncidentManifest:
        return self.given_manifest if self.given_manifest is not None else _synth_manifest(self.bare_id or self.root.name, self.traces)

    @property
    def ranks(self) -> list[int]:
        return sorted(self.traces)

    @property
    def total_events(self) -> int:
        """Canonical events over all ranks, without loading them where the count is known."""
        total = 0
        for r, tf in self.traces.items():
            if tf.meta is not None and tf.meta.events_imported >= 0:
                total += tf.meta.events_imported
            else:
                total += len(self.events(r))
        return total

    def events(self, rank: int) -> pd.DataFrame:
        """Canonical events of one rank (imported or read from the Parquet cache)."""
        if rank not in self.traces:
            raise BundleError(f"no trace for rank {rank}; ranks present: {self.ranks}", path=self.root)
        if rank not in self._events:
            self._events[rank] = self._load_rank(self.traces[rank])
        return self._events[rank]

    def rank_columns(self, rank: int, columns: list[str]) -> pd.DataFrame:
        """Some canonical columns of one rank, read without keeping the rank in memory.

        For passes over all ranks that need a few columns each (Outpost's node table): only
        those columns are read from the cache, and nothing stays behind once the caller drops
        the frame. A rank already loaded by `events` is served from memory.
        """
        unknown = [c for c in columns if c not in COLUMNS]
        if unknown:
            raise BundleError(f"unknown canonical column(s) {unknown}; known: {list(COLUMNS)}", path=self.root)
        if rank not in self.traces:
            raise BundleError(f"no trace for rank {rank}; ranks present: {self.ranks}", path=self.root)
        if rank in self._events:
            return self._events[rank][columns]
        tf = self.traces[rank]
        source = tf.path if tf.fmt == "parquet" else cache_path(self.cache_root, tf.path)
        if source.exists():
            try:
                return read_canonical_parquet(source, expected_rank=tf.rank, columns=columns)
            except BundleError:
                pass  # damaged cache entry: the full load below rebuilds it
        return self._load_rank(tf)[columns]

    def all_events(self) -> pd.DataFrame:
        import pandas as pd

        frames = [self.events(r) for r in self.ranks]
        if not frames:
            return pd.DataFrame(columns=list(COLUMNS))
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def load_all(self) -> None:
        for r in self.ranks:
            self.events(r)

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """Metric samples: the good rows; what was left out is in quality().metrics."""
        from kat.tools.telemetry.quality import SourceQuality
        from kat.tools.telemetry.tables import empty_metrics, load_metrics_checked

        if "metrics" in self.refused:
            q = SourceQuality()
            q.missing(self.refused["metrics"])
            self._quality["metrics"] = q
            return empty_metrics()
        df, self._quality["metrics"] = load_metrics_checked(self.metrics_path)
        return df

    @cached_property
    def logs(self) -> pd.DataFrame:
        """Log lines: the good rows; what was left out is in quality().logs."""
        from kat.tools.telemetry.quality import SourceQuality
        from kat.tools.telemetry.tables import empty_logs, load_logs_checked

        if "logs" in self.refused:
            q = SourceQuality()
            q.missing(self.refused["logs"])
            self._quality["logs"] = q
            return empty_logs()
        df, self._quality["logs"] = load_logs_checked(self.logs_path)
        return df

    def quality(self) -> DataQuality:
        """Per-source data quality (loads metrics and logs if not loaded yet)."""
        from kat.tools.telemetry.quality import DataQuality, SourceQuality

        _ = self.metrics, self.logs
        t = SourceQuality(unit="ranks", files=sorted(tf.path.name for tf in self.traces.values()) + sorted(self.skipped))
        t.kept = len(self.traces)
        for name, reason in self.skipped.items():
            t.drop(name, reason)
        events = self.total_events
        if events == 0:
            t.missing("the trace(s) hold no events: insufficient data")
        notes = [f"ignored {name}: {why}" for name, why in self.ignored.items()]
        from kat.tools.telemetry.metric_source import live_quality

        metrics = live_quality(self) or self._quality["metrics"].model_copy()  # Prometheus, when it is the source
        return DataQuality(traces=t, metrics=metrics, logs=self._quality["logs"].model_copy(), notes=notes)

    def resolve_inside(self, relative: str) -> Path:
        """A path inside the bundle; anything that escapes it is refused."""
        candidate = (self.root / relative).resolve()
        if candidate != self.root.resolve() and self.root.resolve() not in candidate.parents:
            raise BundleError(f"path {relative!r} is outside the incident bundle", path=self.root)
        return candidate

    def _load_rank(self, tf: TraceFile) -> pd.DataFrame:
        if tf.fmt == "parquet":
            return read_canonical_parquet(tf.path, expected_rank=tf.rank)
        cache = cache_path(self.cache_root, tf.path)
        if cache.exists():
            try:
                return read_canonical_parquet(cache, expected_rank=tf.rank)
            except BundleError:
                pass  # a damaged cache entry is rebuilt from the source trace
        # Through the same path as a first import, so the rebuilt entry is stored again.
        unstored: dict[Path, pd.DataFrame] = {}
        tf.meta = import_into_cache([tf.path], self.cache_root, tf.rank, unstored)[tf.path]
        if tf.path in unstored:
            return unstored[tf.path]
        return read_canonical_parquet(cache, expected_rank=tf.rank)


def write_canonical_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write a canonical event frame (e.g. from the simulator) as a Parquet trace file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(normalize_events(df), schema=arrow_schema(), preserve_index=False)
    pq.write_table(table, path, compression="zstd")


def read_canonical_parquet(path: Path, expected_rank: int | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """A canonical Parquet trace (all columns, or `columns` plus the rank check) as a frame."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = list(COLUMNS) if columns is None else list(dict.fromkeys(["rank", *columns]))
    try:
        names = pq.read_schema(path).names
        missing = [c for c in wanted if c not in names]
        if missing:
            raise TraceImportError(f"missing canonical columns {missing}", path=path, field=missing[0])
        # Strings come back as dictionaries (categoricals), as they are stored, not as objects.
        table = pq.read_table(path, columns=wanted, read_dictionary=[c for c in wanted if c in STR_COLUMNS])
    except (pa.ArrowException, OSError) as exc:
        raise TraceImportError(f"not a readable Parquet file ({exc})", path=path) from exc
    df = normalize_events(table.to_pandas(), wanted)
    ranks = df["rank"].unique()
    if len(ranks) > 1:
        raise TraceImportError(f"one trace file must hold one rank, found ranks {sorted(ranks.tolist())}", path=path, field="rank")
    if expected_rank is not None and len(ranks) == 1 and int(ranks[0]) != expected_rank:
        raise TraceImportError(f"file holds rank {int(ranks[0])}, expected {expected_rank}", path=path, field="rank")
    return df if columns is None else df[columns]


def parquet_rank(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        col = pq.read_table(path, columns=["rank"]).column("rank")
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise TraceImportError(f"not a canonical Parquet trace ({exc})", path=path, field="rank") from exc
    if len(col) == 0:
        r = rank_from_filename(path)
        if r is None:
            raise TraceImportError("empty trace and no rank in the file name", path=path, field="rank")
        return r
    return int(col[0].as_py())


def cached_meta(path: Path, cache_root: Path) -> KinetoMeta | None:
    cache = cache_path(cache_root, path)
    meta_path = cache.with_suffix(".meta.json")
    if cache.exists() and meta_path.exists():
        try:
            return KinetoMeta(**orjson.loads(meta_path.read_bytes()))
        except (OSError, ValueError, TypeError):
            return None  # damaged cache entry: re-import
    return None


def import_into_cache(
    paths: list[Path], cache_root: Path, default_rank: int | None, loaded: dict[Path, pd.DataFrame], failed: dict[Path, str] | None = None
) -> dict[Path, KinetoMeta]:
    """Decode traces into the cache; frames that could not be cached stay in memory.

    A file that cannot be imported is recorded in `failed` (path -> reason) when given, else raised.
    """
    metas: dict[Path, KinetoMeta] = {}
    for p, meta, cols in import_many(paths, cache_root, default_rank):
        if isinstance(meta, TraceImportError):
            if failed is None:
                raise meta
            failed[p] = error_reason(meta, p)
            continue
        metas[p] = meta
        if cols is not None:
            loaded[p] = cols.to_frame()
    return metas


def error_reason(exc: BundleError, p: Path) -> str:
    """The error without the file name in front (the file is named beside it)."""
    text = str(exc)
    prefix = f"{exc.path}" + (f" [field {exc.field!r}]" if exc.field else "")
    return text[len(prefix) :].lstrip(": ").strip() if exc.path and text.startswith(prefix) else text


_NOT_A_TRACE = "no 'traceEvents' list"


def _discover_traces(
    trace_dir: Path,
    cache_root: Path,
    loaded: dict[int, pd.DataFrame],
    skipped: dict[str, str],
    root: Path | None = None,
    ignored: dict[str, str] | None = None,
) -> dict[int, TraceFile]:
    """Import the trace files of a directory; files that cannot be used go to `skipped` with the reason."""
    root = root or trace_dir
    ignored = {} if ignored is None else ignored
    try:
        listed = list(trace_dir.iterdir())
        names = sorted(p for p in listed if is_trace_name(p))
        for p in listed:
            if p.name in NOT_TRACES:  # said, so a user sees it was not taken for a damaged rank
                ignored[p.name] = "a manifest or ground-truth file, not a trace"
    except OSError as exc:
        raise BundleError(f"cannot list the directory ({exc.strerror})", path=trace_dir) from exc
    files = []
    for p in names:
        if not inside(root, p):
            skipped[p.name] = f"symlink to {p.resolve()}, outside the bundle: refused"
        elif p.is_file():
            files.append(p)
        elif p.exists():
            skipped[p.name] = "not a regular file (a FIFO, device or directory?)"
    if not files:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise BundleError(
            f"no {'usable ' if why else ''}trace files (*.json, *.json.gz, *.parquet) in {trace_dir}" + (f" ({why})" if why else ""),
            path=trace_dir,
        )
    default_rank = 0 if len(files) == 1 else None
    metas: dict[Path, KinetoMeta] = {}
    todo = []
    for p in files:
        if not p.name.endswith(".parquet"):
            m = cached_meta(p, cache_root)
            if m is None:
                todo.append(p)
            else:
                metas[p] = m
    frames: dict[Path, pd.DataFrame] = {}
    failed: dict[Path, str] = {}
    metas.update(import_into_cache(todo, cache_root, default_rank, frames, failed))
    traces: dict[int, TraceFile] = {}
    for p in files:
        if p in failed:
            if failed[p].startswith(_NOT_A_TRACE):  # e.g. a truth.json beside the traces: not a rank
                ignored[p.name] = failed[p]
            else:
                skipped[p.name] = failed[p]
            continue
        if p.name.endswith(".parquet"):
            try:
                tf = TraceFile(p, parquet_rank(p), "parquet")
            except BundleError as exc:
                skipped[p.name] = error_reason(exc, p)
                continue
        else:
            tf = TraceFile(p, metas[p].rank, "kineto", metas[p])
        if tf.rank in traces:
            raise TraceImportError(f"rank {tf.rank} also comes from {traces[tf.rank].path.name}: duplicate rank", path=p, field="rank")
        traces[tf.rank] = tf
        if p in frames:
            loaded[tf.rank] = frames[p]
    if not traces:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise TraceImportError(f"no trace file could be imported ({why})", path=trace_dir)
    return traces


def _find_one(root: Path, stem: str, refused: dict[str, str]) -> Path | None:
    for suffix in (".parquet", ".csv", ".jsonl", ".csv.gz", ".jsonl.gz"):
        p = root / f"{stem}{suffix}"
        if not p.exists() and not p.is_symlink():
            continue
        if not inside(root, p):
            refused[stem] = f"{p.name} is a symlink to {p.resolve()}, outside the bundle: refused"
            return None
        if not p.is_file():
            refused[stem] = f"{p.name} is not a regular file"
            return None
        return p
    return None


def open_bundle(path: Path | str, *, cache_dir: Path | str | None = None) -> Bundle:
    """Open an incident bundle directory, or a bare directory / single file of Kineto traces."""
    root = Path(path)
    if not root.exists():
        raise BundleError("no such file or directory", path=root)
    if not root.is_file() and not root.is_dir():
        raise BundleError("not a regular file or directory (a FIFO, device or socket?)", path=root)
    cache_root = Path(cache_dir) if cache_dir else default_cache_root()
    if root.is_file():
        if not _is_trace_file(root):
            raise BundleError("expected an incident directory or a trace file (*.json, *.json.gz, *.parquet)", path=root)
        loaded: dict[int, pd.DataFrame] = {}
        if root.name.endswith(".parquet"):
            rank = parquet_rank(root)
            traces = {rank: TraceFile(root, rank, "parquet")}
        else:
            meta = cached_meta(root, cache_root)
            if meta is None:
                frames: dict[Path, pd.DataFrame] = {}
                meta = import_into_cache([root], cache_root, 0, frames)[root]  # one file: its error is the error
                if root in frames:
                    loaded[meta.rank] = frames[root]
            traces = {meta.rank: TraceFile(root, meta.rank, "kineto", meta)}
        return Bundle(root.parent, None, traces, None, None, cache_root, is_bare_trace_dir=True, bare_id=root.name, _events=loaded)
    manifest_path = root / "incident.json"
    skipped: dict[str, str] = {}
    refused: dict[str, str] = {}
    ignored: dict[str, str] = {}
    manifest = None
    if manifest_path.exists() or manifest_path.is_symlink():
        from kat.tools.telemetry.manifest import load_manifest

        _check_inside(root, manifest_path, "incident.json")
        manifest = load_manifest(manifest_path)
        trace_dir = root / "traces"
        if not trace_dir.is_dir():
            raise BundleError("bundle has no traces/ directory", path=root, field="traces")
    else:
        trace_dir = root / "traces" if (root / "traces").is_dir() else root
    if trace_dir != root:
        _check_inside(root, trace_dir, "traces/")
    loaded = {}
    traces = _discover_traces(trace_dir, cache_root, loaded, skipped, root, ignored)
    bundle = Bundle(
        root,
        manifest,
        traces,
        _find_one(root, "metrics", refused),
        _find_one(root, "logs", refused),
        cache_root,
        is_bare_trace_dir=manifest is None,
        _events=loaded,
        skipped=skipped,
        refused=refused,
        ignored=ignored,
    )
    if manifest is not None:
        _check_topology(bundle, manifest_path)
    check_clocks(bundle)
    return bundle


def _span(bundle: Bundle, rank: int) -> tuple[int, int] | None:
    meta = bundle.traces[rank].meta
    if meta is not None and meta.events_imported >= 0 and meta.end_ns >= meta.start_ns >= 0 and meta.end_ns > 0:
        return (meta.start_ns, meta.end_ns)  # recorded at import: no need to read the events
    if meta is not None and meta.events_imported == 0:
        return None
    df = bundle.rank_columns(rank, ["ts_ns", "dur_ns"])
    if not len(df):
        return None
    return int(df["ts_ns"].min()), int((df["ts_ns"] + df["dur_ns"].clip(lower=0)).max())


def check_clocks(bundle: Bundle) -> None:
    """Ranks must share one clock: a rank whose time span is far from every other rank's is
    another run's (or an unaligned clock's) and would yield absurd cross-rank timings.

    Two spans "meet" when the gap between them is under the longer span: captures of one run
    start a little apart, another run is hours or days away. A rank that meets no other is left
    out (reason names both files); when no two ranks meet at all, the bundle is refused.
    """
    spans = {r: s for r in bundle.ranks if (s := _span(bundle, r)) is not None}
    if len(spans) < 2:
        return

    def meet(a: tuple[int, int], b: tuple[int, int]) -> bool:
        slack = max(a[1] - a[0], b[1] - b[0], 1)
        return a[0] <= b[1] + slack and b[0] <= a[1] + slack

    lonely = [r for r, s in spans.items() if not any(meet(s, o) for q, o in spans.items() if q != r)]
    if not lonely:
        return

    def desc(r: int) -> str:
        a, b = spans[r]
        return f"rank {r} ({bundle.traces[r].path.name}: {a / 1e9:.3f} s to {b / 1e9:.3f} s on its clock)"

    if len(lonely) == len(spans):
        r0, r1 = sorted(spans)[:2]
        raise BundleError(
            f"the ranks' clocks do not overlap: {desc(r0)} vs {desc(r1)}, {abs(spans[r1][0] - spans[r0][0]) / 1e9:,.0f} s apart; "
            "are these traces from the same run?",
            path=bundle.root,
        )
    ref = next(r for r in sorted(spans) if r not in lonely)
    for r in lonely:
        bundle.skipped[bundle.traces[r].path.name] = (
            f"clock does not overlap the other ranks': {desc(r)} vs {desc(ref)}, "
            f"{abs(spans[r][0] - spans[ref][0]) / 1e9:,.0f} s apart (another run?): left out"
        )
        del bundle.traces[r]
        bundle._events.pop(r, None)


def _synth_manifest(incident_id: str, traces: dict[int, TraceFile]) -> IncidentManifest:
    """Manifest for a bare trace directory: topology from the ranks present."""
    from kat.tools.telemetry.manifest import IncidentManifest, Topology, WorkerInfo

    ranks = sorted(traces)
    workers = [WorkerInfo(rank=r) for r in ranks]
    topo = Topology(workers=workers)
    topo.groups.tp = [ranks] if len(ranks) > 1 else []
    return IncidentManifest(id=incident_id or "traces", symptom="(bare trace directory: no symptom given)", topology=topo)


def _check_topology(bundle: Bundle, manifest_path: Path) -> None:
    known = {w.rank for w in bundle.manifest.topology.workers}
    for gname in ("tp", "pp", "dp"):
        for group in getattr(bundle.manifest.topology.groups, gname):
            for r in group:
                if known and r not in known:
                    raise BundleError(
                        f"group member rank {r} is not in topology.workers", path=manifest_path, field=f"topology.groups.{gname}"
                    )
