"""Load the bundle's metrics and logs into normalised DataFrames, keeping the good rows.

A bad row (malformed line, non-numeric value, unparseable timestamp, wrong-typed label) is left
out and recorded in a SourceQuality (file, line, reason, first examples); bytes that are not
UTF-8 are replaced and the row kept. Only a file that cannot be read at all, or lacks a required
column, makes the source `missing`.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kat.tools.telemetry.errors import BundleError
from kat.tools.telemetry.journald import is_journal_export, journal_record
from kat.tools.telemetry.quality import SourceQuality

METRIC_COLUMNS = ("ts_ns", "name", "value", "host", "gpu", "rank")
LOG_COLUMNS = ("ts_ns", "host", "rank", "source", "level", "message")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LEVEL_ALIASES = {"warn": "warning", "err": "error", "fatal": "critical", "crit": "critical", "trace": "debug"}
MAX_TABLE_BYTES = 4 * 1024**3  # a metrics/logs file (inflated) beyond this is refused, not read into memory
MAX_LABEL = 2**31 - 1  # rank and gpu labels are int32-sized everywhere else (Kineto, the manifest)
MAX_ABS_NS = 4 * 10**18  # about year 2096: beyond it a timestamp is damage, not time


def empty_metrics() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts_ns": np.array([], dtype=np.int64),
            "name": pd.Categorical([]),
            "value": np.array([], dtype=float),
            "host": pd.Categorical([]),
            "gpu": np.array([], dtype=np.int64),
            "rank": np.array([], dtype=np.int64),
        }
    )


def empty_logs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts_ns": np.array([], dtype=np.int64),
            "host": pd.Categorical([]),
            "rank": np.array([], dtype=np.int64),
            "source": pd.Categorical([]),
            "level": pd.Categorical([]),
            "message": np.array([], dtype=object),
        }
    )


def _epoch_to_ns(v: np.ndarray) -> np.ndarray:
    """Epoch numbers -> ns; seconds / ms / us / ns told apart by magnitude, per value."""
    mag = np.abs(v)
    scale = np.where(mag > 1e17, 1.0, np.where(mag > 1e14, 1e3, np.where(mag > 1e11, 1e6, 1e9)))
    with np.errstate(over="ignore", invalid="ignore"):
        ns = v * scale
    ok = np.isfinite(ns) & (np.abs(ns) <= MAX_ABS_NS)
    return np.where(ok, np.rint(np.where(ok, ns, 0)), 0).astype(np.int64)


def _exact_ns(x: object) -> int:
    if isinstance(x, str) and x.strip().lstrip("-").isdigit():
        x = int(x.strip())
    if isinstance(x, (int, np.integer)) and 10**17 < abs(int(x)) <= MAX_ABS_NS:
        return int(x)
    return 0


def _as_str(series: pd.Series) -> pd.Series:
    """Text of a column, '' where empty (vectorised: no Python call per row)."""
    if series.dtype == object and len(series) and not series.isna().any():
        first = series.iloc[0]
        if isinstance(first, str) and pd.api.types.infer_dtype(series, skipna=False) == "string":
            return series
    return series.where(series.notna(), "").astype(str)


# Decimal integers that fit int64 exactly: up to 18 digits, or 19 starting 1-8.
_INT64_TEXT = r"-?(?:\d{1,18}|[1-8]\d{18})"


def parse_timestamps(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """RFC 3339 strings or epoch numbers (or a mix) -> (int64 ns, bad-row mask)."""
    n = len(values)
    out = np.zeros(n, dtype=np.int64)
    bad = np.zeros(n, dtype=bool)
    if n == 0:
        return out, bad
    if pd.api.types.is_integer_dtype(values):
        v = values.to_numpy(dtype=np.int64)
        big = np.abs(v) > 10**17
        return np.where(big, v, _epoch_to_ns(v.astype(np.float64))), np.abs(v) > MAX_ABS_NS
    if pd.api.types.is_float_dtype(values):
        f = values.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return _epoch_to_ns(np.nan_to_num(f)), ~np.isfinite(f) | (np.abs(f) > MAX_ABS_NS)
    s = _as_str(values).str.strip()
    digits = s.str.fullmatch(_INT64_TEXT).to_numpy(dtype=bool)
    if digits.any():  # epoch integers, kept exact (ns do not fit a float)
        iv = s[digits].astype(np.int64).to_numpy()
        out[digits] = np.where(np.abs(iv) > 10**17, iv, _epoch_to_ns(iv.astype(np.float64)))
        bad[digits] = np.abs(iv) > MAX_ABS_NS
    rest = ~digits
    if rest.any():
        num = pd.to_numeric(s[rest], errors="coerce").to_numpy(dtype=np.float64)
        is_num = ~np.isnan(num)
        idx = np.flatnonzero(rest)
        if is_num.any():
            f = num[is_num]
            out[idx[is_num]] = _epoch_to_ns(f)
            with np.errstate(invalid="ignore"):
                bad[idx[is_num]] = ~np.isfinite(f) | (np.abs(f) > MAX_ABS_NS)
        text_idx = idx[~is_num]
        if len(text_idx):
            parsed = pd.to_datetime(s.iloc[text_idx], utc=True, errors="coerce", format="ISO8601")
            nat = parsed.isna().to_numpy()
            bad[text_idx[nat]] = True
            out[text_idx[~nat]] = parsed[~nat].astype("datetime64[ns, UTC]").astype("int64").to_numpy()
    return out, bad


def _int_labels(series: pd.Series | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels (-1 where empty) and the mask of rows whose label is not a usable integer."""
    if series is None:
        return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        num = series.to_numpy(dtype=np.float64)
        empty = np.isnan(num)
    else:
        s = _as_str(series).str.strip()
        empty = (s == "").to_numpy()
        num = pd.to_numeric(s.where(~empty, "nan"), errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~empty & (np.isnan(num) | (num != np.floor(num)) | (num < -1) | (num > MAX_LABEL))
    vals = np.where(empty | bad, -1, np.nan_to_num(num, nan=-1.0)).astype(np.int64)
    return vals, bad


# -- reading ----------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read(MAX_TABLE_BYTES + 1)
    if len(data) > MAX_TABLE_BYTES:
        raise BundleError(f"larger than {MAX_TABLE_BYTES:,} bytes (inflated); refusing to load it", path=path)
    return data


def _decode_line(raw: bytes, where: str, q: SourceQuality) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        q.repair(where, f"non-UTF-8 byte 0x{raw[exc.start]:02x} replaced")
        return raw.decode("utf-8", errors="replace")


def _split_lines(data: bytes) -> list[bytes]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark (Excel, PowerShell) is not part of the header
    return data.split(b"\n")


def _read_csv_fast(path: Path) -> tuple[pd.DataFrame, np.ndarray] | None:
    """A clean CSV read by Arrow as text columns; None when any row is malformed or not UTF-8."""
    import pyarrow.csv as pc

    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            head = fh.readline(1 << 16)
        header = next(csv.reader([head.decode("utf-8-sig").rstrip("\r\n")]), [])
    except (OSError, EOFError, UnicodeDecodeError, csv.Error):
        return None
    if not header:
        return None
    invalid: list[int] = []

    def on_invalid(row: Any) -> str:
        invalid.append(1)
        return "skip"

    try:
        t = pc.read_csv(
            path,
            read_options=pc.ReadOptions(use_threads=False, block_size=1 << 24),
            parse_options=pc.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pc.ConvertOptions(column_types={h: pa.string() for h in header}, strings_can_be_null=False),
        )
    except (pa.ArrowException, OSError, EOFError, ValueError):
        return None
    if invalid or t.num_columns != len(header):
        return None
    df = t.to_pandas()
    df.columns = [str(c).strip() for c in header]
    return df, np.arange(2, len(df) + 2)


def _read_csv(path: Path, q: SourceQuality) -> tuple[pd.DataFrame, np.ndarray]:
    """(rows as strings, the line number of each row)."""
    fast = _read_csv_fast(path)
    if fast is not None:
        return fast
    name = path.name
    raw_lines = _split_lines(_read_bytes(path))
    header: list[str] | None = None
    rows: list[list[str]] = []
    linenos: list[int] = []
    for i, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        text = _decode_line(raw.rstrip(b"\r"), f"{name} line {i}", q)
        try:
            fields = next(csv.reader([text]))
        except (csv.Error, StopIteration) as exc:
            q.drop(f"{name} line {i}", "malformed CSV row", str(exc))
            continue
        if header is None:
            header = [h.strip() for h in fields]
            continue
        if len(fields) != len(header):
            q.drop(f"{name} line {i}", f"expected {len(header)} fields, got {len(fields)}", text)
            continue
        rows.append(fields)
        linenos.append(i)
    if header is None:
        return pd.DataFrame(), np.array([], dtype=np.int64)
    return pd.DataFrame(rows, columns=header, dtype=object), np.array(linenos, dtype=np.int64)


def _read_jsonl(path: Path, q: SourceQuality) -> tuple[pd.DataFrame, np.ndarray]:
    name = path.name
    rows: list[dict] = []
    linenos: list[int] = []
    for i, raw in enumerate(_split_lines(_read_bytes(path)), 1):
        if not raw.strip():
            continue
        where = f"{name} line {i}"
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:  # orjson refuses invalid UTF-8 outright: try again with the bytes replaced
                raw.decode("utf-8")
                q.drop(where, "not valid JSON", exc.msg)
                continue
            except UnicodeDecodeError:
                try:
                    obj = orjson.loads(_decode_line(raw, where, q))
                except orjson.JSONDecodeError as exc2:
                    q.drop(where, "not valid JSON", exc2.msg)
                    continue
        if not isinstance(obj, dict):
            kind = "array" if isinstance(obj, list) else type(obj).__name__
            q.drop(where, f"a JSON {kind}, not an object", raw[:40].decode(errors="replace"))
            continue
        rows.append(obj)
        linenos.append(i)
    return pd.DataFrame(rows), np.array(linenos, dtype=np.int64)


def _read_parquet(path: Path, q: SourceQuality) -> tuple[pd.DataFrame, np.ndarray]:
    """All row groups that can be read; damaged ones are left out and counted."""
    try:
        return _numbered(pq.read_table(path).to_pandas())
    except (pa.ArrowException, OSError, ValueError):
        pass
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BundleError(f"not a readable Parquet file ({exc})", path=path) from exc
    parts, start = [], 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        try:
            parts.append(pf.read_row_group(g).to_pandas())
        except (pa.ArrowException, OSError, ValueError) as exc:
            q.drop(f"{path.name} rows {start + 1}-{start + n} (row group {g})", "damaged Parquet row group", str(exc), count=n)
        start += n
    if not parts:
        return pd.DataFrame(), np.array([], dtype=np.int64)
    return _numbered(pd.concat(parts, ignore_index=True))


def _numbered(df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    return df, np.arange(1, len(df) + 1)


def read_rows(path: Path, q: SourceQuality) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of a table file and their line (or row) numbers; bad rows recorded in q."""
    name = path.name
    try:
        if name.endswith(".parquet"):
            return _read_parquet(path, q)
        if name.endswith((".csv", ".csv.gz")):
            return _read_csv(path, q)
        if name.endswith((".jsonl", ".jsonl.gz")):
            return _read_jsonl(path, q)
    except BundleError:
        raise
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise BundleError(f"cannot read table ({exc})", path=path) from exc
    raise BundleError("unsupported table format (want .csv, .jsonl or .parquet)", path=path)


def _drop_rows(
    raw: pd.DataFrame, lines: np.ndarray, bad: np.ndarray, path: Path, unit: str, reason: str, column: str, q: SourceQuality
) -> tuple[pd.DataFrame, np.ndarray]:
    """Record the rows in `bad` as left out (first examples quoted) and return the rest."""
    idx = np.flatnonzero(bad)
    if not len(idx):
        return raw, lines
    for k, i in enumerate(idx):
        if k < 5:
            q.drop(f"{path.name} {unit} {int(lines[i])}", f"{reason} in {column!r}", raw[column].iloc[i])
    if len(idx) > 5:
        q.drop(f"{path.name}", f"{reason} in {column!r}", count=len(idx) - 5)
    keep = ~bad
    return raw[keep].reset_index(drop=True), lines[keep]


def _text(raw: pd.DataFrame, col: str, n: int) -> np.ndarray:
    if col not in raw:
        return np.full(n, "", dtype=object)
    return _as_str(raw[col]).to_numpy(dtype=object)


def _numbers(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Float values (NaN where empty or 'nan') and the mask of rows that are not numbers."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64), np.zeros(len(series), dtype=bool)
    s = _as_str(series).str.strip()
    empty = s.str.lower().isin(["", "nan"]).to_numpy()
    num = pd.to_numeric(s.where(~empty, "nan"), errors="coerce").to_numpy(dtype=np.float64)
    return num, np.isnan(num) & ~empty


def _prepare(
    path: Path, q: SourceQuality, required: tuple[str, ...], convert: Callable[[pd.DataFrame], pd.DataFrame] | None = None
) -> tuple[pd.DataFrame, np.ndarray, str] | None:
    q.files = [path.name]
    try:
        raw, lines = read_rows(path, q)
    except BundleError as exc:
        q.missing(str(exc))
        return None
    unit = "row" if path.name.endswith(".parquet") else "line"
    if raw.empty:
        q.missing(f"{path.name} has no usable rows" if q.dropped else f"{path.name} has no rows")
        return None
    raw.columns = [str(c).lstrip("\ufeff").strip() for c in raw.columns]
    if convert is not None:
        raw = convert(raw)
    missing = [c for c in required if c not in raw.columns]
    if missing:
        q.missing(f"{path.name}: missing required column {missing[0]!r} (have {list(raw.columns)[:12]})")
        return None
    return raw, lines, unit


def load_metrics_checked(path: Path | None) -> tuple[pd.DataFrame, SourceQuality]:
    """Long-format metric samples (ts_ns, name, value, host, gpu, rank, extra labels) and their quality."""
    q = SourceQuality()
    if path is None:
        q.missing("no metrics file in the bundle")
        return empty_metrics(), q
    prep = _prepare(path, q, ("ts", "name", "value"))
    if prep is None:
        return empty_metrics(), q
    raw, lines, unit = prep
    values, bad = _numbers(raw["value"])
    raw, lines = _drop_rows(raw, lines, bad, path, unit, "not a number", "value", q)
    values = values[~bad]
    ts, bad = parse_timestamps(raw["ts"])
    raw, lines = _drop_rows(raw, lines, bad, path, unit, "unparseable timestamp (want RFC 3339 or epoch)", "ts", q)
    ts, values = ts[~bad], values[~bad]
    n = len(raw)
    names = _text(raw, "name", n)
    bad = names == ""
    raw, lines = _drop_rows(raw, lines, bad, path, unit, "empty metric name", "name", q)
    ts, names, values = ts[~bad], names[~bad], values[~bad]
    labels: dict[str, np.ndarray] = {}
    for col in ("gpu", "rank"):
        vals, bad = _int_labels(raw[col] if col in raw else None, len(raw))
        raw, lines = _drop_rows(raw, lines, bad, path, unit, f"not an integer from -1 to {MAX_LABEL}", col, q)
        ts, names, values = ts[~bad], names[~bad], values[~bad]
        for k in labels:
            labels[k] = labels[k][~bad]
        labels[col] = vals[~bad]
    n = len(raw)
    out = pd.DataFrame(
        {
            "ts_ns": ts,
            "name": pd.Categorical(names.astype(str)),
            "value": values,
            "host": pd.Categorical(_text(raw, "host", n).astype(str)),
            "gpu": labels["gpu"],
            "rank": labels["rank"],
        }
    )
    for extra in raw.columns:
        if extra not in ("ts", "name", "value", "host", "gpu", "rank"):
            out[extra] = pd.Categorical(_text(raw, extra, n).astype(str))
    q.kept = n
    if n == 0 and q.status != "missing":
        q.missing(f"{path.name}: no usable rows")
    return out.sort_values("ts_ns", kind="stable").reset_index(drop=True), q


def load_metrics(path: Path | None) -> pd.DataFrame:
    return load_metrics_checked(path)[0]


def normalize_level(level: object) -> str:
    s = str(level or "").strip().lower()
    return _LEVEL_ALIASES.get(s, s)


def _journal_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """A `journalctl --output=json` export in the log columns (same rows, same order, so bad
    lines are still named by their number); other files as they are."""
    if not is_journal_export(raw.columns):
        return raw
    return pd.DataFrame([journal_record(r) for r in raw.to_dict("records")], columns=["ts", "host", "source", "level", "message"])


def load_logs_checked(path: Path | None) -> tuple[pd.DataFrame, SourceQuality]:
    """Log lines (ts_ns, host, rank, source, level, message; message text is untrusted) and their quality."""
    q = SourceQuality()
    if path is None:
        q.missing("no logs file in the bundle")
        return empty_logs(), q
    prep = _prepare(path, q, ("ts", "message"), convert=_journal_frame)
    if prep is None:
        return empty_logs(), q
    raw, lines, unit = prep
    ts, bad = parse_timestamps(raw["ts"])
    raw, lines = _drop_rows(raw, lines, bad, path, unit, "unparseable timestamp (want RFC 3339 or epoch)", "ts", q)
    ts = ts[~bad]
    ranks, bad = _int_labels(raw["rank"] if "rank" in raw else None, len(raw))
    raw, lines = _drop_rows(raw, lines, bad, path, unit, f"not an integer from -1 to {MAX_LABEL}", "rank", q)
    ts, ranks = ts[~bad], ranks[~bad]
    n = len(raw)
    out = pd.DataFrame(
        {
            "ts_ns": ts,
            "host": pd.Categorical(_text(raw, "host", n).astype(str)),
            "rank": ranks,
            "source": pd.Categorical(_text(raw, "source", n).astype(str)),
            "level": pd.Categorical(pd.Series(_text(raw, "level", n)).str.strip().str.lower().replace(_LEVEL_ALIASES).to_numpy()),
            "message": _text(raw, "message", n),
        }
    )
    q.kept = n
    if n == 0 and q.status != "missing":
        q.missing(f"{path.name}: no usable rows")
    return out.sort_values("ts_ns", kind="stable").reset_index(drop=True), q


def load_logs(path: Path | None) -> pd.DataFrame:
    return load_logs_checked(path)[0]
