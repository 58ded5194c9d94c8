"""Load the bundle's metrics and logs into normalised DataFrames."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kat.tools.telemetry.errors import BundleError

METRIC_COLUMNS = ("ts_ns", "name", "value", "host", "gpu", "rank")
LOG_COLUMNS = ("ts_ns", "host", "rank", "source", "level", "message")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LEVEL_ALIASES = {"warn": "warning", "err": "error", "fatal": "critical", "crit": "critical", "trace": "debug"}


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
    return np.rint(v * scale).astype(np.int64)


def _exact_ns(x: object) -> int:
    if isinstance(x, str) and x.strip().lstrip("-").isdigit():
        x = int(x.strip())
    if isinstance(x, (int, np.integer)) and abs(int(x)) > 10**17:
        return int(x)
    return 0


def parse_timestamps(values: pd.Series, path: Path, field: str = "ts") -> np.ndarray:
    """RFC 3339 strings or epoch numbers (or a mix) -> int64 ns."""
    if len(values) == 0:
        return np.array([], dtype=np.int64)
    if pd.api.types.is_integer_dtype(values):
        v = values.to_numpy(dtype=np.int64)
        return np.where(np.abs(v) > 10**17, v, _epoch_to_ns(v.astype(np.float64)))
    numeric = pd.to_numeric(values, errors="coerce")
    out = np.zeros(len(values), dtype=np.int64)
    is_num = numeric.notna().to_numpy()
    if is_num.any():
        nums = numeric[is_num]
        # Epoch ns do not fit a float exactly: keep the integers as written where we can.
        as_int = np.array([_exact_ns(x) for x in values[is_num].to_numpy(dtype=object)], dtype=np.int64)
        scaled = _epoch_to_ns(nums.to_numpy(dtype=np.float64))
        out[is_num] = np.where(as_int != 0, as_int, scaled)
    if (~is_num).any():
        text = values[~is_num].astype(str)
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        bad = parsed.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(~is_num)[np.flatnonzero(bad)[0]])
            raise BundleError(
                f"unparseable timestamp {str(values.iloc[row])!r} at row {row} (want RFC 3339 or epoch ns)", path=path, field=field
            )
        out[~is_num] = parsed.astype("datetime64[ns, UTC]").astype("int64").to_numpy()
    return out


def _int_labels(series: pd.Series | None, n: int, path: Path, field: str) -> np.ndarray:
    if series is None:
        return np.full(n, -1, dtype=np.int64)
    num = pd.to_numeric(series.replace("", np.nan), errors="coerce")
    bad = series.notna() & (series.astype(str) != "") & num.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise BundleError(f"not an integer: {series.iloc[row]!r} at row {row}", path=path, field=field)
    return num.fillna(-1).astype(np.int64).to_numpy()


def _read_table(path: Path) -> pd.DataFrame:
    name = path.name
    try:
        if name.endswith(".parquet"):
            return pq.read_table(path).to_pandas()
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if name.endswith((".jsonl", ".jsonl.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            rows = []
            with opener(path, "rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        raise BundleError(f"line {lineno} is not valid JSON ({exc.msg})", path=path) from exc
                    if not isinstance(obj, dict):
                        raise BundleError(f"line {lineno} is not a JSON object", path=path)
                    rows.append(obj)
            return pd.DataFrame(rows)
    except BundleError:
        raise
    except (pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise BundleError(f"cannot read table ({exc})", path=path) from exc
    raise BundleError("unsupported table format (want .csv, .jsonl or .parquet)", path=path)


def load_metrics(path: Path | None) -> pd.DataFrame:
    """Long-format metric samples: ts_ns, name, value, host, gpu, rank, plus any extra labels."""
    if path is None:
        return empty_metrics()
    raw = _read_table(path)
    if raw.empty:
        return empty_metrics()
    for col in ("ts", "name", "value"):
        if col not in raw.columns:
            raise BundleError(f"missing required column {col!r} (have {list(raw.columns)})", path=path, field=col)
    n = len(raw)
    values = pd.to_numeric(raw["value"].replace("", np.nan), errors="coerce")
    bad = values.isna() & raw["value"].notna() & (raw["value"].astype(str).str.lower() != "nan") & (raw["value"].astype(str) != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise BundleError(f"not a number: {raw['value'].iloc[row]!r} at row {row}", path=path, field="value")
    out = pd.DataFrame(
        {
            "ts_ns": parse_timestamps(raw["ts"], path),
            "name": pd.Categorical(raw["name"].astype(str)),
            "value": values.to_numpy(dtype=float),
            "host": pd.Categorical(raw["host"].fillna("").astype(str) if "host" in raw else np.full(n, "")),
            "gpu": _int_labels(raw.get("gpu"), n, path, "gpu"),
            "rank": _int_labels(raw.get("rank"), n, path, "rank"),
        }
    )
    for extra in raw.columns:
        if extra not in ("ts", "name", "value", "host", "gpu", "rank"):
            out[extra] = pd.Categorical(raw[extra].fillna("").astype(str))
    return out.sort_values("ts_ns", kind="stable").reset_index(drop=True)


def normalize_level(level: object) -> str:
    s = str(level or "").strip().lower()
    return _LEVEL_ALIASES.get(s, s)


def load_logs(path: Path | None) -> pd.DataFrame:
    """Log lines: ts_ns, host, rank, source, level, message (message text is untrusted data)."""
    if path is None:
        return empty_logs()
    raw = _read_table(path)
    if raw.empty:
        return empty_logs()
    for col in ("ts", "message"):
        if col not in raw.columns:
            raise BundleError(f"missing required column {col!r} (have {list(raw.columns)})", path=path, field=col)
    n = len(raw)
    out = pd.DataFrame(
        {
            "ts_ns": parse_timestamps(raw["ts"], path),
            "host": pd.Categorical(raw["host"].fillna("").astype(str) if "host" in raw else np.full(n, "")),
            "rank": _int_labels(raw.get("rank"), n, path, "rank"),
            "source": pd.Categorical(raw["source"].fillna("").astype(str) if "source" in raw else np.full(n, "")),
            "level": pd.Categorical([normalize_level(x) for x in raw["level"]] if "level" in raw else np.full(n, "")),
            "message": raw["message"].fillna("").astype(str).to_numpy(dtype=object),
        }
    )
    return out.sort_values("ts_ns", kind="stable").reset_index(drop=True)
