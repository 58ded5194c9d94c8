"""One rank's process: pin, join the gloo group, run the profiled decode loop, export its trace."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile, schedule

from kat.evals.realtrace.faults import FaultHooks
from kat.evals.realtrace.models import RankReport, RealTraceConfig, StepSpan
from kat.evals.realtrace.workload import TPDecodeModel

TRACE_NAME = "rank-{rank}.json.gz"


def run_rank(rank: int, cfg: RealTraceConfig, port: int, cores: list[int], trace_dir: Path, report_path: Path) -> None:
    """Entry point of rank `rank` (runs in its own process)."""
    if cores:
        os.sched_setaffinity(0, set(cores))
    # One intra-op thread per rank: 4 ranks on 2 cores must not oversubscribe further.
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    # Keep gloo on loopback whatever the host name resolves to.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    hooks = FaultHooks(cfg, rank, cores)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=cfg.world, timeout=timedelta(seconds=max(30, cfg.timeout_s)))
        report = _profiled_loop(rank, cfg, hooks, trace_dir)
        report.cores = cores
        report.hog_pids = hooks.hog_pids
        report_path.write_text(report.model_dump_json())
    finally:
        hooks.stop()
        if dist.is_initialized():
            dist.destroy_process_group()


def _profiled_loop(rank: int, cfg: RealTraceConfig, hooks: FaultHooks, trace_dir: Path) -> RankReport:
    model = TPDecodeModel(cfg.shape, rank, cfg.world, cfg.seed)
    trace_path = trace_dir / TRACE_NAME.format(rank=rank)
    spans: list[StepSpan] = []

    def export(prof: profile) -> None:
        prof.export_chrome_trace(str(trace_path))

    # Step 0 is the profiler's warm-up (and gloo's first-use setup); steps 1..N are recorded as
    # ProfilerStep#1..#N, so fault step numbers are the trace's own step numbers.
    sched = schedule(wait=0, warmup=1, active=cfg.num_steps, repeat=1)
    dist.barrier()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, schedule=sched, on_trace_ready=export) as prof:
        for step in range(cfg.num_steps + 1):
            t0 = time.time_ns()
            model.step(step, hooks)
            spans.append(StepSpan(step=step, start_ns=t0, end_ns=time.time_ns()))
            prof.step()
    dist.barrier()
    return RankReport(
        rank=rank,
        pid=os.getpid(),
        host=socket.gethostname(),
        cores=[],
        trace_file=trace_path.name,
        steps=[s for s in spans if s.step >= 1],
        fault_start_ns=hooks.start_ns,
        fault_end_ns=hooks.end_ns,
        torch_version=torch.__version__,
    )
