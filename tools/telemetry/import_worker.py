"""Import one trace into the Parquet cache. Runs in pool workers, so it avoids pandas."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson

from tools.telemetry.kineto import EventColumns, KinetoMeta, import_kineto_columns
from tools.telemetry.schema import SCHEMA_VERSION


def cache_path(cache_root: Path, path: Path) -> Path:
    """Cache entry of a trace file: keyed by its absolute path, size, mtime and the schema version."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{SCHEMA_VERSION}"
    return cache_root / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.parquet"


def write_columns(cols: EventColumns, target: Path) -> None:
    import pyarrow.parquet as pq

    tmp = target.with_suffix(f".tmp{os.getpid()}")
    pq.write_table(cols.to_arrow(), tmp, compression="zstd")
    os.replace(tmp, target)  # readers never see a half-written file


def import_to_cache(path: Path, cache_root: Path, default_rank: int | None) -> tuple[EventColumns | None, KinetoMeta]:
    """Import one trace and store it in the cache; the columns come back only if they could not be cached."""
    cols, meta = import_kineto_columns(path, default_rank=default_rank)
    target = cache_path(cache_root, path)
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        write_columns(cols, target)
        target.with_suffix(".meta.json").write_bytes(orjson.dumps(meta.__dict__))
    except OSError:
        return cols, meta  # a read-only cache only costs speed; keep the data in memory
    return None, meta
