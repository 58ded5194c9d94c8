"""Scale: `kat detect` over a 1,024-rank world (128 TP-8 groups), one process vs a Dask
LocalCluster with 1 and 2 worker processes; wall, CPU, driver and per-worker peak RSS, speedup,
per-rank cost, and a 10k-rank estimate from the measured costs (docs/scale.md).

Every run is the real command line (`kat detect PATH [--cluster dask --cluster-workers N] --json`)
in a fresh process with a cold Parquet cache; the process tree is sampled from /proc.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from kat.tools.outpost.cli import SERIAL_CPU_LINE

WORK = Path(os.environ.get("KAT_BENCH_DIR", Path(tempfile.gettempdir()) / "kat-bench"))
RANKS = int(os.environ.get("KAT_BENCH_SCALE_RANKS", "1024"))
SMALL_RANKS = int(os.environ.get("KAT_BENCH_SCALE_SMALL_RANKS", "128"))  # second point of the cost line
CATEGORY = "gpu_thermal_throttling"
SEED = 1
TIMING_KEYS = ("seconds", "wall", "elapsed", "timing", "cpu")  # fields that may differ between equal runs
HELPER_MARKERS = ("resource_tracker", "forkserver")  # multiprocessing helpers, not workers
DASK2 = "dask LocalCluster, 2 workers"
SERIAL_CPU_RE = re.escape(SERIAL_CPU_LINE).replace(re.escape("{:.2f}"), r"([0-9.]+)")
# Assumptions of the 10k-rank estimate (docs/scale.md): worker processes per machine, and the
# aggregate read bandwidth of the shared filesystem the traces sit on.
ESTIMATE_WORKERS_PER_MACHINE = int(os.environ.get("KAT_BENCH_SCALE_WORKERS_PER_MACHINE", "32"))
ESTIMATE_FS_GB_S = float(os.environ.get("KAT_BENCH_SCALE_FS_GB_S", "5"))


@dataclass
class Run:
    """One measured command: its JSON output and what its process tree used."""

    label: str
    wall_s: float
    cpu_s: float
    driver_peak_mb: float
    driver_cpu_s: float = 0.0
    worker_peaks_mb: list[float] = field(default_factory=list)
    tree_peak_mb: float = 0.0
    doc: dict[str, Any] | None = None
    error: str | None = None
    serial_cpu_s: float = 0.0  # --cluster: the detect task's own CPU on its worker (kat detect's stderr)

    @property
    def serial_s(self) -> float:
        """CPU no worker count speeds up: the driver's and the detect task's own."""
        return self.driver_cpu_s + self.serial_cpu_s


def _kat() -> list[str]:
    exe = shutil.which("kat")
    return [exe] if exe else [sys.executable, "-c", "from kat.agent.cli import main; main()"]


def make_world(ranks: int) -> tuple[Path, dict[str, Any]]:
    """The bench world (cached): path and {injected ranks, events, generation seconds, bytes}."""
    out = WORK / f"scale-{CATEGORY}-world{ranks}-s{SEED}"
    info_path = WORK / f"scale-{CATEGORY}-world{ranks}-s{SEED}.gen.json"
    if (out / "ground_truth.json").exists() and info_path.exists():
        return out, json.loads(info_path.read_text())
    from kat.evals.simulate.world import generate_world

    t0, c0 = time.perf_counter(), _cpu_children_self()
    gt = generate_world(CATEGORY, ranks, SEED, out, size="tiny", severity="moderate")
    info = {
        "ranks": ranks,
        "injected": gt.affected_ranks,
        "events": gt.events_total,
        "gen_wall_s": round(time.perf_counter() - t0, 1),
        "gen_cpu_s": round(_cpu_children_self() - c0, 1),
        "trace_bytes": sum(p.stat().st_size for p in (out / "traces").iterdir()),
        "workers": min(os.cpu_count() or 1, 4),
    }
    info_path.write_text(json.dumps(info))
    return out, info


def _cpu_children_self() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _is_helper(p: psutil.Process) -> bool:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return True
    return any(m in cmd for m in HELPER_MARKERS)


def run_measured(label: str, argv: list[str], env: dict[str, str], interval: float = 0.1) -> Run:
    """Run argv; sample RSS of the root (driver) and of every descendant (workers) until it exits."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        root = psutil.Process(p.pid)
        driver_peak, tree_peak = 0, 0
        peaks: dict[int, int] = {}
        helpers: set[int] = set()
        cpu_seen: dict[int, float] = {}
        driver_cpu = 0.0
        stop = threading.Event()

        def sample() -> None:
            nonlocal driver_peak, tree_peak, driver_cpu
            while not stop.is_set():
                total = 0
                try:
                    rss = root.memory_info().rss
                    ct = root.cpu_times()
                    driver_cpu = ct.user + ct.system
                    driver_peak = max(driver_peak, rss)
                    total += rss
                    kids = root.children(recursive=True)
                except psutil.Error:
                    kids = []
                for c in kids:
                    try:
                        if c.pid not in peaks and _is_helper(c):
                            helpers.add(c.pid)
                        rss = c.memory_info().rss
                        ct = c.cpu_times()
                    except psutil.Error:
                        continue
                    total += rss
                    cpu_seen[c.pid] = ct.user + ct.system
                    if c.pid not in helpers:
                        peaks[c.pid] = max(peaks.get(c.pid, 0), rss)
                tree_peak = max(tree_peak, total)
                stop.wait(interval)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        rc = p.wait()
        wall = time.perf_counter() - t0
        stop.set()
        th.join()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    # Waited-for descendants are in RUSAGE_CHILDREN; a worker its parent never reaped is not, so
    # the CPU figure is the larger of that and the per-process CPU last seen by the sampler.
    cpu = max(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, sum(cpu_seen.values()))
    mb = 2**20
    doc, error = None, None
    if rc != 0:
        said = [x.strip(" │╭╮╰╯─") for x in stderr.splitlines() if any(ch.isalnum() for ch in x)]  # no box borders
        error = f"exit {rc}: {said[-1] if said else 'no message'}"
    else:
        try:
            doc = json.loads(stdout)
        except ValueError:
            error = f"no JSON on stdout: {stdout[:200]!r}"
    serial = re.search(SERIAL_CPU_RE, stderr)
    return Run(
        label,
        round(wall, 1),
        round(cpu, 1),
        round(driver_peak / mb),
        round(driver_cpu, 1),
        sorted((round(v / mb) for v in peaks.values()), reverse=True),
        round(tree_peak / mb),
        doc,
        error,
        float(serial.group(1)) if serial else 0.0,
    )


def _strip_timing(obj: Any) -> Any:  # noqa: ANN401 - JSON of any shape
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if not any(t in k.lower() for t in TIMING_KEYS)}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def cluster_supported() -> str | None:
    """Why `kat detect --cluster` cannot be benchmarked here, or None when it can."""
    res = subprocess.run([*_kat(), "detect", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    return None if "--cluster-workers" in res.stdout else "pending: this build's `kat detect` has no --cluster/--cluster-workers option"


def detect_runs(path: Path, modes: list[int]) -> list[Run]:
    """Single-process (0) and LocalCluster runs with n workers, each with a cold cache."""
    runs = []
    for n in modes:
        cache = tempfile.mkdtemp(prefix="kat-bench-scale-cache-")
        env = {**os.environ, "KAT_CACHE_DIR": cache}
        argv = [*_kat(), "detect", str(path), "--json"]
        label = "single process"
        if n:
            argv += ["--cluster", "dask", "--cluster-workers", str(n)]  # after the command, whatever _kat() is
            label = f"dask LocalCluster, {n} worker{'s' if n > 1 else ''}"
        try:
            runs.append(run_measured(label, argv, env))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        r = runs[-1]
        print(
            f"[scale] {path.name}: {label}: {r.wall_s} s wall, {r.cpu_s} s CPU, driver {r.driver_peak_mb} MB, "
            f"workers {r.worker_peaks_mb} MB {r.error or ''}",
            flush=True,
        )
    return runs


def _merge_seconds(doc: dict[str, Any] | None) -> float | None:
    """The driver's merge time, if the detector reports it in its stats."""
    stats = (doc or {}).get("stats") or {}
    vals = [float(v) for k, v in stats.items() if "merge" in k.lower() and isinstance(v, (int, float))]
    return max(vals) if vals else None


def _fit(big: float, small: float, x_big: int, x_small: int) -> tuple[float, float]:
    """Slope and intercept of the line through two measured points."""
    slope = (big - small) / (x_big - x_small)
    return slope, big - slope * x_big


def estimate(rows: dict[int, list[Run]], ranks_big: int, ranks_small: int, trace_bytes_per_rank: float) -> dict[str, Any]:
    """10k ranks over N machines from the measured costs (the model is stated in docs/scale.md).

    wall(R, N, C) = startup + max(R * w / (N * C), R * b / FS) + (R / 8) * d: w the worker CPU per
    rank (decode, import, per-group tests), d the serial CPU per group (the driver's and the detect
    task's own thread: planning, scheduling, result transfer, merge), both slopes between two world sizes so start-up cost is not counted as
    per-rank cost; b trace bytes per rank read from a shared filesystem of FS bytes/s in all.
    """

    def pick(ranks: int, label: str) -> Run | None:
        return next((r for r in rows.get(ranks, []) if r.label == label and r.error is None), None)

    out: dict[str, Any] = {"assumed_workers_per_machine": ESTIMATE_WORKERS_PER_MACHINE, "assumed_fs_gb_s": ESTIMATE_FS_GB_S}
    single, single_s = pick(ranks_big, "single process"), pick(ranks_small, "single process")
    if single is not None:
        out["single_process_s_per_rank"] = round(single.wall_s / ranks_big, 4)
        if single_s is not None:
            out["single_process_s_per_rank"] = round(_fit(single.wall_s, single_s.wall_s, ranks_big, ranks_small)[0], 4)
        out["single_process_10k_s"] = round(out["single_process_s_per_rank"] * 10_000)
    big, small = pick(ranks_big, DASK2), pick(ranks_small, DASK2)
    if big is None:
        out["note"] = "dask rows pending: only the single-process cost is measured"
        return out
    if small is not None and ranks_small != ranks_big:
        w = _fit(big.cpu_s - big.serial_s, small.cpu_s - small.serial_s, ranks_big, ranks_small)[0]
        d = _fit(big.serial_s, small.serial_s, ranks_big // 8, ranks_small // 8)[0]
        startup = max(0.0, _fit(big.wall_s, small.wall_s, ranks_big, ranks_small)[1])
    else:  # one world only: start-up is counted in the per-rank and per-group costs (upper bounds)
        w, d, startup = (big.cpu_s - big.serial_s) / ranks_big, big.serial_s / (ranks_big // 8), 0.0
        out["note"] = "one world size measured: per-rank and per-group costs include start-up (upper bounds)"
    out.update(
        worker_cpu_s_per_rank=round(w, 4),
        driver_cpu_s_per_group=round(d, 4),
        startup_s=round(startup, 1),
        merge_s_reported=_merge_seconds(big.doc),
        trace_mb_per_rank=round(trace_bytes_per_rank / 2**20, 2),
    )
    table = []
    for machines in (1, 4, 16, 64):
        r = 10_000
        compute = r * max(w, 0.0) / (machines * ESTIMATE_WORKERS_PER_MACHINE)
        read = r * trace_bytes_per_rank / (ESTIMATE_FS_GB_S * 1e9)
        serial = (r / 8) * max(d, 0.0)
        table.append(
            {
                "machines": machines,
                "compute_s": round(compute, 1),
                "fs_read_s": round(read, 1),
                "serial_s": round(serial, 1),
                "total_s": round(startup + max(compute, read) + serial, 1),
            }
        )
    out["ten_k"] = table
    return out


def run(ranks: int = RANKS, small_ranks: int = SMALL_RANKS) -> dict[str, Any]:
    WORK.mkdir(parents=True, exist_ok=True)
    pending = cluster_supported()
    modes = [0] if pending else [0, 1, 2]
    worlds: dict[int, dict[str, Any]] = {}
    rows: dict[int, list[Run]] = {}
    for n_ranks in sorted({ranks, small_ranks}, reverse=True):
        path, info = make_world(n_ranks)
        worlds[n_ranks] = info
        print(
            f"[scale] world {n_ranks} ranks: {info['events']:,} events, injected {info['injected']}, "
            f"generated in {info['gen_wall_s']} s wall / {info['gen_cpu_s']} s CPU ({info['workers']} processes)",
            flush=True,
        )
        # The small world gives the second point of each cost line (1 worker is not needed there).
        rows[n_ranks] = detect_runs(path, modes if n_ranks == ranks else [m for m in modes if m != 1])
    table = []
    base = next((r for r in rows[ranks] if r.label == "single process" and r.error is None), None)
    ref = _strip_timing(base.doc) if base and base.doc else None
    for r in rows[ranks]:
        top = (r.doc or {}).get("suspect_ranks", [])[:1]
        table.append(
            {
                "mode": r.label,
                "wall_s": r.wall_s,
                "cpu_s": r.cpu_s,
                "driver_cpu_s": r.driver_cpu_s,
                "detect_task_cpu_s": r.serial_cpu_s,
                "driver_peak_mb": r.driver_peak_mb,
                "driver_vs_single_peak": round(r.driver_peak_mb / base.driver_peak_mb, 3) if base and base.driver_peak_mb else None,
                "worker_peak_mb": max(r.worker_peaks_mb) if r.worker_peaks_mb else None,
                "workers_peak_mb": r.worker_peaks_mb,
                "tree_peak_mb": r.tree_peak_mb,
                "speedup": round(base.wall_s / r.wall_s, 2) if base and r.error is None and r.wall_s else None,
                "ms_per_rank": round(r.wall_s / ranks * 1000, 1),
                "cpu_ms_per_rank": round(r.cpu_s / ranks * 1000, 1),
                "top_suspect": top,
                "names_injected_first": top == worlds[ranks]["injected"][:1],
                "same_json_as_single": (_strip_timing(r.doc) == ref) if r.doc is not None and ref is not None else None,
                "error": r.error,
            }
        )
    if pending:
        for n in (1, 2):
            table.append({"mode": f"dask LocalCluster, {n} worker{'s' if n > 1 else ''}", "error": pending})
    est = estimate(rows, ranks, small_ranks, worlds[ranks]["trace_bytes"] / ranks)
    _print(ranks, worlds[ranks], table, est)
    return {"scale": {"machine": _machine(), "world": worlds, "table": table, "estimate": est, "pending": pending}}


def _machine() -> str:
    return f"{os.cpu_count()} cores (shared), {round(psutil.virtual_memory().total / 2**30)} GB RAM, load {os.getloadavg()[0]:.1f}"


def _print(ranks: int, info: dict[str, Any], table: list[dict[str, Any]], est: dict[str, Any]) -> None:
    print(f"[scale] {ranks} ranks ({ranks // 8} TP-8 groups), {info['events']:,} events; machine: {_machine()}")
    head = f"{'mode':32s} {'wall s':>8s} {'CPU s':>8s} {'driver MB':>10s} {'worker MB':>10s} {'speedup':>8s} {'ms/rank':>8s}"
    head += f" {'drv/single':>10s}  first=injected  same JSON"
    print(head)
    for t in table:
        if t.get("wall_s") is None:
            print(f"{t['mode']:32s} {t['error']}")
            continue
        print(
            f"{t['mode']:32s} {t['wall_s']:8.1f} {t['cpu_s']:8.1f} {t['driver_peak_mb']:10d} {str(t['worker_peak_mb'] or '-'):>10s} "
            f"{str(t['speedup'] or '-'):>8s} {t['ms_per_rank']:8.1f} {str(t['driver_vs_single_peak']):>10s}  "
            f"{str(t['names_injected_first']):14s} {t['same_json_as_single']}" + (f"  ERROR {t['error']}" if t["error"] else "")
        )
    print(f"[scale] estimate: {json.dumps(est)}")


if __name__ == "__main__":
    run(*(int(a) for a in sys.argv[1:3]))
