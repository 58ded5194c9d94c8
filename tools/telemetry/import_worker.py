"""Import traces into the Parquet cache.

Decoding and the Parquet write run in the calling process, or in forked pool workers for big
trace sets (KAT_IMPORT_WORKERS).
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import orjson

from kat.tools.telemetry.errors import TraceImportError
from kat.tools.telemetry.kineto import EventColumns, KinetoMeta, import_kineto_columns
from kat.tools.telemetry.parquet_writer import write_columns
from kat.tools.telemetry.schema import COLUMNS, INT_COLUMNS, SCHEMA_VERSION, STR_COLUMNS

# A worker pays ~0.5 s to start: only worth it when there is a lot to decode.
PARALLEL_IMPORT_MIN_BYTES = 24 * 2**20


def cache_path(cache_root: Path, path: Path) -> Path:
    """Cache entry of a trace file: keyed by its absolute path, size, mtime and the schema version."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{SCHEMA_VERSION}"
    return cache_root / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.parquet"


def store(cols: EventColumns, meta: KinetoMeta, cache_root: Path, path: Path) -> bool:
    """Write one rank's columns and metadata to the cache; False if the cache is not writable."""
    target = cache_path(cache_root, path)
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        write_columns(
            tmp,
            {c: cols.ints[c] for c in INT_COLUMNS},
            {c: (cols.codes[c], cols.tables[c]) for c in STR_COLUMNS},
            list(COLUMNS),
            narrow=True,
        )
        os.replace(tmp, target)  # readers never see a half-written file
        target.with_suffix(".meta.json").write_bytes(orjson.dumps(meta.__dict__))
    except OSError:
        return False
    return True


_LIBC: ctypes.CDLL | None = None
# glibc tuning in import workers. Big buffers come from the heap, not from fresh mmaps, and free
# memory stays in the heap between files unless there is a lot of it: re-faulting a file's
# working set (tens of MB) for every file cost ~10% of the import, a fifth of it in the kernel.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_HEAP_MMAP_MAX_BYTES = 64 * 2**20  # allocations below this come from the heap
_KEEP_FREE_BYTES = 128 * 2**20  # free heap a worker may keep between files


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


_KNOWS_FREE = False  # glibc can tell how much free heap there is (mallinfo2, glibc >= 2.33)


def _worker_init() -> None:
    """Workers keep freed memory for the next file, up to a bound (see _give_back_memory)."""
    global _LIBC, _KNOWS_FREE
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        _LIBC = None
        return
    try:
        libc.mallinfo2.restype = _MallInfo2
    except AttributeError:
        _KNOWS_FREE = False  # an older glibc: trim after every file, as glibc's defaults want
    else:
        _KNOWS_FREE = True
        libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_MMAP_MAX_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE_BYTES)
    _LIBC = libc


def _give_back_memory() -> None:
    """Hand glibc's free heap back when it is more than a worker should keep between files:
    after a big file, or each worker would hold its largest file's worth of memory to the end."""
    if _LIBC is None:
        return
    if not _KNOWS_FREE or _LIBC.mallinfo2().fordblks > _KEEP_FREE_BYTES:
        _LIBC.malloc_trim(0)


def _import_in_worker(path: Path, cache_root: Path, default_rank: int | None) -> tuple[KinetoMeta | TraceImportError, EventColumns | None]:
    try:
        return _import_one(path, cache_root, default_rank)
    finally:
        _give_back_memory()


def import_workers(n_files: int) -> int:
    from kat.knowledge.settings import trace_import_settings  # without pydantic: importing traces stays light

    want = trace_import_settings().import_workers or os.cpu_count() or 1
    return max(1, min(want, n_files))


def _import_one(path: Path, cache_root: Path, default_rank: int | None) -> tuple[KinetoMeta | TraceImportError, EventColumns | None]:
    """Decode one trace and store it; the columns come back only if the cache is not writable.

    A file that cannot be imported comes back as its TraceImportError, so one damaged rank
    does not stop the others.
    """
    try:
        cols, meta = import_kineto_columns(path, default_rank=default_rank)
    except TraceImportError as exc:
        return exc, None
    except UnicodeDecodeError as exc:  # JSON is UTF-8: name the offending byte
        return TraceImportError(f"text is not UTF-8 (byte 0x{exc.object[exc.start]:02x}: {exc.reason})", path=path), None
    except RecursionError:
        return TraceImportError("JSON nested too deeply to be a Kineto trace", path=path), None
    except MemoryError:
        return TraceImportError("not enough memory to import this file (see KAT_MAX_TRACE_BYTES)", path=path), None
    return meta, (None if store(cols, meta, cache_root, path) else cols)


def import_many(
    paths: list[Path], cache_root: Path, default_rank: int | None
) -> Iterator[tuple[Path, KinetoMeta | TraceImportError, EventColumns | None]]:
    """Import traces into the cache, one at a time or one per worker process for big inputs (errors per file)."""
    workers = import_workers(len(paths))
    if workers <= 1 or sum(p.stat().st_size for p in paths) < PARALLEL_IMPORT_MIN_BYTES:
        for p in paths:
            yield (p, *_import_one(p, cache_root, default_rank))
        return
    # fork, not spawn/forkserver: those re-import the caller's __main__ in every worker, which
    # runs an unguarded script's top level again. Forked workers share the parent's loaded
    # libraries, decode and write Parquet themselves, and send back only metadata.
    import zstandard  # noqa: F401 - the Parquet writer's; loaded once here, not in each worker

    done: set[Path] = set()
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"), initializer=_worker_init) as pool:
            # Workers fork on the first submit. Frozen objects are skipped by the workers' garbage
            # collector, so it does not write to (and copy) every page the parent's objects sit on.
            gc.freeze()
            try:
                futures = {p: pool.submit(_import_in_worker, p, cache_root, default_rank) for p in paths}
            finally:
                gc.unfreeze()
            for p, fut in futures.items():
                meta, cols = fut.result()
                done.add(p)
                yield p, meta, cols
    except BrokenProcessPool:
        # A worker died (e.g. killed for memory): finish the rest here, one at a time.
        for p in paths:
            if p not in done:
                yield (p, *_import_one(p, cache_root, default_rank))
