"""Run a function in a fresh process and measure wall time and peak memory of its process tree.

A fresh process per measurement keeps one tool's imports and caches from colouring the other's
figures; the sampler sums RSS over the child and its own children (HTA parses ranks in a
process pool).
"""
from __future__ import annotations

import multiprocessing as mp
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import psutil


@dataclass
class Measurement:
    seconds: float
    peak_rss_mb: float
    result: Any = None
    error: str | None = None


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        total += proc.memory_info().rss
        for c in proc.children(recursive=True):
            try:
                total += c.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def _child(fn: Callable[..., Any], args: tuple, conn: Any) -> None:  # noqa: ANN401
    try:
        t0 = time.perf_counter()
        res = fn(*args)
        conn.send((time.perf_counter() - t0, res, None))
    except Exception as exc:  # report, don't crash the bench
        conn.send((0.0, None, f"{type(exc).__name__}: {exc}"))


def measure(fn: Callable[..., Any], *args: Any, interval: float = 0.02) -> Measurement:
    """Wall time of fn(*args) inside a fresh process (excluding interpreter start) and peak tree RSS."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(fn, args, child))
    p.start()
    proc = psutil.Process(p.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc))
            time.sleep(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    secs, res, err = parent.recv()
    p.join()
    stop.set()
    th.join()
    return Measurement(secs, peak / 2**20, res, err)


def median_of(n: int, fn: Callable[..., Any], *args: Any) -> Measurement:
    runs = [measure(fn, *args) for _ in range(n)]
    ok = [r for r in runs if r.error is None] or runs
    return Measurement(statistics.median(r.seconds for r in ok), statistics.median(r.peak_rss_mb for r in ok),
                       ok[0].result, ok[0].error)
