"""Run a function in a fresh process and measure wall time and peak memory of its process tree.

Memory is PSS (proportional set size), summed over the process and its children, so pages that
forked workers share with their parent are not counted twice. A fresh process per measurement
keeps one tool's imports and caches from colouring the other's figures; the sampler sums PSS over
the child and its own children (HTA parses ranks in a process pool).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass
class Measurement:
    seconds: float
    peak_mb: float
    result: Any = None
    error: str | None = None
    cpu_seconds: float | None = None  # user+system CPU of the work, its worker processes included


def _cpu() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _tree_pss(proc: psutil.Process) -> int:
    """Proportional set size of a process and its children: shared pages counted once overall."""
    total = 0
    try:
        total += proc.memory_full_info().pss
        for c in proc.children(recursive=True):
            try:
                total += c.memory_full_info().pss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def _child(fn: Callable[..., Any], args: tuple, conn: Any, setup: Callable[[], Any] | None) -> None:  # noqa: ANN401
    try:
        if setup is not None:
            setup()  # library imports are not what we time
        t0, c0 = time.perf_counter(), _cpu()
        res = fn(*args)
        conn.send((time.perf_counter() - t0, res, None, _cpu() - c0))
    except Exception as exc:  # report, don't crash the bench
        conn.send((0.0, None, f"{type(exc).__name__}: {exc}", None))


def measure(fn: Callable[..., Any], *args: Any, setup: Callable[[], Any] | None = None, interval: float = 0.02) -> Measurement:
    """Wall time of fn(*args) in a fresh process (after `setup`) and peak PSS of its process tree."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(fn, args, child, setup))
    p.start()
    proc = psutil.Process(p.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_pss(proc))
            time.sleep(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    secs, res, err, cpu = parent.recv()
    p.join()
    stop.set()
    th.join()
    return Measurement(secs, peak / 2**20, res, err, cpu)


def measure_cmd(argv: list[str], interval: float = 0.02) -> Measurement:
    """Run a command that prints one JSON line with its own "seconds" (work only, no imports) and,
    optionally, "cpu_seconds"; measure the peak PSS of its process tree."""
    import json
    import subprocess

    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = psutil.Process(p.pid)
    peak = 0
    while p.poll() is None:
        peak = max(peak, _tree_pss(proc))
        time.sleep(interval)
    out, err = p.communicate()
    try:
        doc = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Measurement(0.0, peak / 2**20, None, f"no result (exit {p.returncode}): {err.strip()[-300:]}")
    cpu = doc.get("cpu_seconds")
    return Measurement(float(doc.get("seconds", 0.0)), peak / 2**20, doc, doc.get("error"), float(cpu) if cpu is not None else None)


def median_runs(runs: list[Measurement]) -> Measurement:
    """Medians of time, peak memory and CPU over the runs that succeeded."""
    ok = [r for r in runs if r.error is None] or runs
    cpus = [r.cpu_seconds for r in ok if r.cpu_seconds is not None]
    return Measurement(
        statistics.median(r.seconds for r in ok),
        statistics.median(r.peak_mb for r in ok),
        ok[0].result,
        ok[0].error,
        statistics.median(cpus) if cpus else None,
    )


def median_of(n: int, fn: Callable[..., Any], *args: Any, setup: Callable[[], Any] | None = None) -> Measurement:
    return median_runs([measure(fn, *args, setup=setup) for _ in range(n)])
