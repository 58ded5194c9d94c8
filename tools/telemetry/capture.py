"""`kat capture`: write a standard incident bundle from a running system.

Traces come from a directory (what `VLLM_TORCH_PROFILER_DIR` or `torch.profiler` wrote) or from a
vLLM server's `/start_profile` and `/stop_profile` around a duration; metrics for the window from
Prometheus; logs from files or `journalctl --output=json`; the manifest from the caller's fields
and the traces' `distributedInfo`. Everything is written to a hidden temp directory beside the
target and renamed at the end: a failed capture leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from kat.tools.telemetry.errors import BundleError
from kat.tools.telemetry.journald import journal_rows
from kat.tools.telemetry.prometheus import PrometheusSettings, PrometheusSource

Progress = Callable[[str, float], None]  # (stage description, fraction done 0..1)
TRACE_SUFFIXES = (".json", ".json.gz", ".parquet")
# The exporters' families KAT reads (ARCHITECTURE.md "Incident bundle"), fetched when none are named.
DEFAULT_METRICS = (
    r"DCGM_FI_.*",
    r"vllm:.*",
    r"sglang:.*",
    r"node_(netstat_Tcp_RetransSegs|load1|schedstat_.*|memory_numa_.*|disk_io_time_seconds_total|infiniband_.*|network_.*_total)",
)
_LEADING_TS = re.compile(r"^\s*\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\]?\s*(.*)$")
_LEVEL_WORD = re.compile(r"\b(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\b")


class CaptureError(RuntimeError):
    """The capture cannot be completed; nothing was written."""


class CaptureSpec(BaseModel):
    out: Path
    symptom: str = Field(min_length=1)
    incident_id: str | None = None
    title: str | None = None
    model: str | None = None
    framework: str | None = None
    trace_dir: Path | None = Field(None, description="directory the profiler writes to (or holds traces already)")
    vllm_url: str | None = Field(None, description="vLLM server: profile it for duration_s")
    duration_s: float = Field(10.0, gt=0, le=3600)
    start: datetime | None = None
    end: datetime | None = None
    host: str | None = Field(None, description="host of the traced workers (default: this machine)")
    prometheus: PrometheusSettings | None = None
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS), description="metric names or regexes")
    log_files: list[Path] = Field(default_factory=list)
    journal: bool = False
    journal_units: list[str] = Field(default_factory=list)
    journalctl: str = "journalctl"
    settle_s: float = Field(30.0, ge=0, description="how long to wait for the profiler to finish writing traces")


def _now_ns() -> int:
    return time.time_ns()


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def _trace_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.name.endswith(TRACE_SUFFIXES) and not p.name.startswith("."))


# -- traces ------------------------------------------------------------------------------------
def profile_vllm(url: str, duration_s: float, progress: Progress, timeout_s: float = 120.0) -> tuple[int, int]:
    """POST /start_profile, wait, POST /stop_profile; returns the profiled wall-clock window (ns)."""
    import httpx

    base = url.rstrip("/")

    def post(path: str) -> None:
        try:
            r = httpx.post(base + path, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise CaptureError(f"vLLM server at {base} is unreachable for {path} ({type(exc).__name__}: {exc})") from None
        if r.status_code >= 300:
            hint = " (start vLLM with VLLM_TORCH_PROFILER_DIR set to enable profiling)" if r.status_code in (404, 405) else ""
            raise CaptureError(f"vLLM server at {base} answered {r.status_code} for {path}{hint}: {r.text[:200].strip()}")

    post("/start_profile")
    t0 = _now_ns()
    try:
        end = time.monotonic() + duration_s
        while (left := end - time.monotonic()) > 0:
            progress(f"profiling vLLM for {duration_s:g} s", 1 - left / duration_s)
            time.sleep(min(0.25, left))
    finally:
        post("/stop_profile")  # never leave the server profiling, even on Ctrl-C
    return t0, _now_ns()


def _settled(files: list[Path]) -> bool:
    """Sizes unchanged over a short interval: the profiler finished writing."""
    before = [f.stat().st_size for f in files]
    time.sleep(0.3)
    return before == [f.stat().st_size for f in files if f.exists()]


def collect_traces(trace_dir: Path, dest: Path, since_ns: int | None, settle_s: float, progress: Progress) -> list[Path]:
    """Copy the trace files (written after since_ns, when given) into dest."""
    if not trace_dir.is_dir():
        raise CaptureError(f"trace directory {trace_dir} does not exist")
    deadline = time.monotonic() + settle_s
    while True:
        files = [f for f in _trace_files(trace_dir) if since_ns is None or f.stat().st_mtime_ns >= since_ns - 1_000_000_000]
        if files and _settled(files):
            break
        if time.monotonic() > deadline:
            what = "new trace files" if since_ns is not None else "trace files (*.json, *.json.gz, *.parquet)"
            raise CaptureError(f"no {what} in {trace_dir} after {settle_s:g} s" if not files else f"traces in {trace_dir} still growing")
        progress("waiting for the profiler to write traces", 0.0)
        time.sleep(0.3)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, f in enumerate(files):
        progress(f"copying traces ({i + 1}/{len(files)})", (i + 1) / len(files))
        target = dest / f.name
        shutil.copy2(f, target)
        out.append(target)
    return out


def describe_traces(trace_dir: Path, host: str) -> tuple[dict[str, Any], tuple[int, int] | None]:
    """Topology from the traces' distributedInfo, and their time span (ns) where absolute."""
    from kat.tools.telemetry.bundle import open_bundle

    try:
        b = open_bundle(trace_dir)
    except BundleError as exc:
        raise CaptureError(f"captured traces are not readable: {exc}") from exc
    workers: list[dict[str, Any]] = []
    spans: list[tuple[int, int]] = []
    for r in b.ranks:
        ev = b.rank_columns(r, ["kind", "device", "ts_ns", "dur_ns"])
        kernels = ev[ev["kind"].astype(str).isin(["kernel", "memcpy", "memset", "collective"]) & (ev["device"] >= 0)]
        gpu = int(kernels["device"].mode().iloc[0]) if len(kernels) else None
        workers.append({"rank": r, "host": host, **({"gpu": gpu} if gpu is not None else {})})
        meta = b.traces[r].meta
        if len(ev) and meta is not None and meta.base_time_ns > 0:
            spans.append((int(ev["ts_ns"].min()), int((ev["ts_ns"] + ev["dur_ns"]).max())))
    gpus = sorted({w["gpu"] for w in workers if "gpu" in w})
    topo = {
        "hosts": [{"name": host, "gpus": [{"index": g} for g in gpus]}],
        "workers": workers,
        "groups": {"tp": [b.ranks] if len(b.ranks) > 1 else [], "pp": [], "dp": []},
    }
    span = (min(s for s, _ in spans), max(e for _, e in spans)) if spans else None
    return topo, span


# -- metrics -----------------------------------------------------------------------------------
def capture_metrics(settings: PrometheusSettings, names: list[str], start_ns: int, end_ns: int, dest: Path, progress: Progress) -> int:
    """The window's samples of the named metrics from Prometheus, as metrics.parquet; rows written."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = PrometheusSource(settings)
    frames = []
    try:
        for i, name in enumerate(names):
            progress(f"metrics from Prometheus: {name}", i / max(len(names), 1))
            got = src.select(name, start_ns, end_ns)
            if got.status == "error":
                raise CaptureError(got.message)
            if got.frame is not None and not got.frame.empty:
                frames.append(got.frame)
    finally:
        src.close()
    progress("metrics from Prometheus", 1.0)
    if not frames:
        return 0
    df = pd.concat([f.astype({c: str for c in f.columns if c not in ("ts_ns", "value", "gpu", "rank")}) for f in frames], ignore_index=True)
    df = df.drop_duplicates(subset=[c for c in df.columns if c != "value"]).fillna("")
    df = df.rename(columns={"ts_ns": "ts"})
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), dest, compression="zstd")
    return len(df)


# -- logs --------------------------------------------------------------------------------------
def _parse_ts(text: str) -> int | None:
    try:
        dt = datetime.fromisoformat(text.replace(",", ".").replace(" ", "T").replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # a local-time stamp, as most log files write
    return int(dt.timestamp() * 1e9)


def read_log_file(path: Path, host: str) -> tuple[list[dict[str, Any]], int]:
    """JSON lines (ts, message, ...) or text lines with a leading ISO timestamp; (rows, lines skipped)."""
    rows, skipped = [], 0
    source = path.stem.split(".")[0]
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CaptureError(f"log file {path}: {exc.strerror or exc}") from None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and "message" in obj and "ts" in obj:
                ts = obj["ts"] if isinstance(obj["ts"], int) else _parse_ts(str(obj["ts"]))
                if ts is None:
                    skipped += 1
                    continue
                rows.append({"host": host, "source": source, "level": "", **obj, "ts": int(ts)})
                continue
        m = _LEADING_TS.match(line)
        ts = _parse_ts(m.group(1)) if m else None
        if ts is None:
            skipped += 1
            continue
        msg = m.group(2) if m else line
        lv = _LEVEL_WORD.search(msg[:80])
        rows.append({"ts": ts, "host": host, "source": source, "level": lv.group(1).lower() if lv else "", "message": msg})
    return rows, skipped


def read_journal(journalctl: str, start_ns: int, end_ns: int, units: list[str]) -> list[dict[str, Any]]:
    cmd = [
        journalctl,
        "--output=json",
        "--no-pager",
        "--since",
        f"@{start_ns // 1_000_000_000}",
        "--until",
        f"@{-(-end_ns // 1_000_000_000)}",
    ]
    for u in units:
        cmd += ["--unit", u]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise CaptureError(f"{journalctl} not found: install systemd or drop --journal") from None
    except subprocess.TimeoutExpired:
        raise CaptureError(f"{journalctl} did not finish within 120 s") from None
    if r.returncode != 0:
        raise CaptureError(f"{journalctl} exited with {r.returncode}: {r.stderr.strip()[:300]}")
    records = []
    for line in r.stdout.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return journal_rows(records)


# -- the bundle --------------------------------------------------------------------------------
def capture(spec: CaptureSpec, progress: Progress | None = None) -> Path:
    """Write the bundle at spec.out (which must not exist); returns its path."""
    report: Progress = progress or (lambda _s, _f: None)
    out = spec.out.resolve()
    if out.exists():
        raise CaptureError(f"{out} already exists: choose a new directory")
    if spec.vllm_url and not spec.trace_dir:
        raise CaptureError("--vllm needs --trace-dir: the directory the server's VLLM_TORCH_PROFILER_DIR points at")
    if not spec.trace_dir:
        raise CaptureError("no traces: give --trace-dir (and --vllm to profile a running server)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        window: tuple[int, int] | None = None
        since = None
        if spec.vllm_url:
            since = _now_ns()
            window = profile_vllm(spec.vllm_url, spec.duration_s, report)
        collect_traces(spec.trace_dir, tmp / "traces", since, spec.settle_s, report)
        report("reading the traces' distributedInfo", 0.0)
        host = spec.host or socket.gethostname()
        topo, span = describe_traces(tmp / "traces", host)
        if spec.start and spec.end:
            window = (int(spec.start.timestamp() * 1e9), int(spec.end.timestamp() * 1e9))
        elif window is None and span is not None:
            window = span
        elif window is None:
            end = _now_ns()
            window = (end - int(spec.duration_s * 1e9), end)
        start_ns, end_ns = window
        if end_ns <= start_ns:
            raise CaptureError(f"empty window {_iso(start_ns)}..{_iso(end_ns)}")
        manifest: dict[str, Any] = {
            "id": spec.incident_id or f"capture-{datetime.fromtimestamp(start_ns / 1e9, tz=UTC).strftime('%Y%m%dT%H%M%SZ')}",
            "symptom": spec.symptom,
            "window": {"start": _iso(start_ns), "end": _iso(end_ns)},
            "topology": topo,
            "capture": {"traces": "vllm profiler" if spec.vllm_url else str(spec.trace_dir), "host": host},
        }
        for k in ("title", "model", "framework"):
            if getattr(spec, k):
                manifest[k] = getattr(spec, k)
        if spec.vllm_url and not spec.framework:
            manifest["framework"] = "vllm"
        if spec.prometheus is not None:
            n = capture_metrics(spec.prometheus, spec.metrics, start_ns, end_ns, tmp / "metrics.parquet", report)
            manifest["capture"]["metrics"] = f"{n} samples from {spec.prometheus.url}"
        logs: list[dict[str, Any]] = []
        skipped = 0
        for i, f in enumerate(spec.log_files):
            report(f"logs from {f.name}", i / max(len(spec.log_files), 1))
            rows, sk = read_log_file(f, host)
            logs += rows
            skipped += sk
        if spec.journal:
            report("logs from journalctl", 0.5)
            logs += read_journal(spec.journalctl, start_ns, end_ns, spec.journal_units)
        logs = [r for r in logs if start_ns <= int(r["ts"]) < end_ns]
        if spec.log_files or spec.journal:
            with open(tmp / "logs.jsonl", "w", encoding="utf-8") as fh:
                for r in sorted(logs, key=lambda r: int(r["ts"])):
                    fh.write(json.dumps(r, default=str) + "\n")
            manifest["capture"]["logs"] = f"{len(logs)} lines in the window" + (
                f"; {skipped} lines without a timestamp skipped" if skipped else ""
            )
        (tmp / "incident.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        report("done", 1.0)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
