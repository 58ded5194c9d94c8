"""Start the rank processes of one run and collect their reports.

`launch()` runs in the caller and starts a fresh Python (`python -m kat.evals.realtrace._rank_runner`)
that imports torch once and forks one process per rank: forking saves each rank the ~1.5-5 s
torch import on a 2-core machine, and the fresh parent keeps the fork clean (no OpenMP or
BLAS thread pools from whatever process called us, e.g. pytest).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kat.evals.realtrace.faults import available_cores, pin_cores
from kat.evals.realtrace.models import RankReport, RealTraceConfig, RunReport


class RealTraceError(RuntimeError):
    """The multi-process run failed; the message carries the ranks' stderr tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(cfg: RealTraceConfig, trace_dir: Path) -> RunReport:
    """Run all ranks of `cfg`, writing their traces into `trace_dir`; returns the run report."""
    trace_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kat-realtrace-") as tmp:
        cfg_path, report_path = Path(tmp) / "config.json", Path(tmp) / "run.json"
        cfg_path.write_text(cfg.model_dump_json())
        env = dict(os.environ)
        # Make `evals` importable from the child however the caller was started.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [sys.executable, "-m", "kat.evals.realtrace._rank_runner", str(cfg_path), str(trace_dir), str(report_path)]
        # Own session, so a hung run can be stopped with every rank it forked (gloo peers of a
        # dead rank would otherwise block until their own timeout).
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=cfg.timeout_s + 30)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RealTraceError(f"real-trace run exceeded {cfg.timeout_s + 30:.0f} s") from exc
        if proc.returncode != 0 or not report_path.exists():
            tail = "\n".join(ln for ln in (stderr or "").strip().splitlines() if not ln.startswith("USDT:"))
            tail = "\n".join(tail.splitlines()[-25:])
            raise RealTraceError(f"real-trace run failed (exit {proc.returncode}):\n{tail}")
        return RunReport.model_validate_json(report_path.read_text())


def _rank_entry(rank: int, cfg: RealTraceConfig, port: int, cores: list[int], trace_dir: Path, report: Path) -> None:
    from kat.evals.realtrace.worker import run_rank

    run_rank(rank, cfg, port, cores, trace_dir, report)


def run_all_ranks(cfg: RealTraceConfig, trace_dir: Path, report_path: Path) -> RunReport:
    """Fork one process per rank and wait for all; any failure stops the rest (gloo would hang)."""
    # The profiler's first start probes `torch._inductor`, a ~2 s pure-Python import; done here
    # once instead of in 4 ranks at once on 2 cores (which costs ~8 s).
    import torch._inductor  # noqa: F401

    import kat.evals.realtrace.worker  # noqa: F401  (torch imported once, before the fork)

    trace_dir.mkdir(parents=True, exist_ok=True)

    cores = available_cores()
    pinning = {r: pin_cores(r, cfg.world, cores) for r in range(cfg.world)}
    ctx = mp.get_context("fork")
    scratch = report_path.parent
    port = free_port()
    start_ns = time.time_ns()
    procs = []
    for r in range(cfg.world):
        p = ctx.Process(
            target=_rank_entry, args=(r, cfg, port, pinning[r], trace_dir, scratch / f"rank-{r}.report.json"), name=f"realtrace-rank{r}"
        )
        p.start()
        procs.append(p)
    deadline = time.monotonic() + cfg.timeout_s
    failed: list[int] = []
    while any(p.is_alive() for p in procs):
        if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in procs):
            break
        time.sleep(0.05)
    for r, p in enumerate(procs):
        if p.is_alive():
            p.terminate()
            p.join(5)
            failed.append(r)
        elif p.exitcode != 0:
            failed.append(r)
    if failed:
        raise RealTraceError(f"ranks {failed} failed or timed out (exit codes {[p.exitcode for p in procs]})")
    ranks = [RankReport.model_validate_json((scratch / f"rank-{r}.report.json").read_text()) for r in range(cfg.world)]
    return RunReport(config=cfg, start_ns=start_ns, end_ns=time.time_ns(), ranks=ranks, pinning=pinning, available_cores=cores)


def main(argv: list[str]) -> int:
    cfg = RealTraceConfig.model_validate_json(Path(argv[0]).read_text())
    report_path = Path(argv[2])
    try:
        run = run_all_ranks(cfg, Path(argv[1]), report_path)
    except RealTraceError as exc:
        print(f"realtrace: {exc}", file=sys.stderr)
        return 1
    report_path.write_text(run.model_dump_json())
    return 0
