"""Fault injection on one rank and step window, as `StepHooks` for the decode workload."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from kat.evals.realtrace.models import FaultKind, RealTraceConfig

# A CPU-bound competitor: pins itself to the given cores, waits for "go", then burns CPU in
# bursts (2 ms busy, 1 ms asleep). Bursts matter: the scheduler lets a rank that sleeps in
# collectives preempt a pure spinner on wake-up, so a spinner barely stretches the rank's ops;
# a bursty competitor (another service's worker threads) wakes up and preempts the rank
# mid-op, as real contention does. Plain Python without torch, so it starts in milliseconds.
_HOG = (
    "import os,sys,time\n"
    "os.sched_setaffinity(0,{int(c) for c in sys.argv[1].split(',') if c})\n"
    "ppid=os.getppid()\n"
    "sys.stdin.readline()\n"
    "pc=time.perf_counter\n"
    "while os.getppid()==ppid:\n"  # never outlive the rank that started it, even if it is killed
    "    t=pc()\n"
    "    while pc()-t<0.002: pass\n"
    "    time.sleep(0.001)\n"
)


class FaultHooks:
    """Healthy everywhere except on `cfg.rank` during `cfg.steps`, where the fault applies."""

    def __init__(self, cfg: RealTraceConfig, rank: int, cores: list[int]) -> None:
        self.cfg = cfg
        self.active = cfg.fault is not FaultKind.NONE and rank == cfg.rank
        self.window = set(cfg.fault_steps) if self.active else set()
        self.cores = cores
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self._hogs: list[subprocess.Popen[bytes]] = []
        if self.active and cfg.fault is FaultKind.CPU_CONTENTION:
            self._spawn_hogs(max(1, round(cfg.strength)))

    def _spawn_hogs(self, n: int) -> None:
        # Started before profiling and parked on stdin, so the window starts on time.
        spec = ",".join(str(c) for c in self.cores)
        for _ in range(n):
            self._hogs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _HOG, spec], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )

    @property
    def hog_pids(self) -> list[int]:
        return [p.pid for p in self._hogs]

    def _hit(self, step: int) -> bool:
        return step in self.window

    def before_step(self, step: int) -> None:
        if not self._hit(step):
            return
        if self.start_ns is None:
            self.start_ns = time.time_ns()
            if self.cfg.fault is FaultKind.CPU_CONTENTION:
                for p in self._hogs:
                    assert p.stdin is not None
                    p.stdin.write(b"go\n")
                    p.stdin.flush()
        if self.cfg.fault is FaultKind.CPU_STALL:
            # An uninstrumented pause (GC, GIL, blocked detokenizer): a gap before the step's ops.
            time.sleep(self.cfg.strength / 1000.0)

    def gemm_repeats(self, step: int, layer: int) -> int:
        if self.cfg.fault is FaultKind.GEMM and self._hit(step) and layer == self.cfg.gemm_layer:
            return max(1, round(self.cfg.strength))
        return 1

    def in_all_reduce(self, step: int, layer: int) -> None:
        if self.cfg.fault is FaultKind.SLOW_COLLECTIVE and self._hit(step):
            # A slow transport on this rank: latency inside its communication path, after the
            # compute and before its data reaches the peers, on every all-reduce it takes part in.
            time.sleep(self.cfg.strength / 1000.0)

    def after_step(self, step: int) -> None:
        if self._hit(step) and step == max(self.window):
            self.end_ns = time.time_ns()
            self.stop()

    def stop(self) -> None:
        for p in self._hogs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            if p.stdin is not None:
                p.stdin.close()


def pin_cores(rank: int, world: int, available: list[int]) -> list[int]:
    """Cores for a rank: its own core when there are enough, else round-robin sharing.

    With 2 cores and 4 ranks, ranks 0 and 2 share the first core and ranks 1 and 3 the second:
    neighbours in the TP ring then sit on different cores.
    """
    if not available:
        return []
    if len(available) >= world:
        return [available[rank]]
    return [available[rank % len(available)]]


def available_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: no pinning
        return []
