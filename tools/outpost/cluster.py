"""The driver's side of `--cluster`: a Dask client, and `detect` as one task on the cluster.

Light on purpose: the `kat` process that holds the client imports neither pandas nor the
detector. The whole of `detect` (import, per-unit tests, the merge) runs on the workers
(distributed.py), and only the answer, as JSON, comes back. So the driver's memory is its
interpreter, the CLI and the client, whatever the number of ranks.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tempfile
import time
import uuid  # task keys unique per call: a key resubmitted while the scheduler still forgets the last run's is cancelled
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kat.tools.outpost.models import DetectionResult, DetectorConfig
from kat.tools.telemetry.errors import BundleError

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT_S = 5.0  # an address that does not answer within this is reported, not waited on
# The detect task starts over at most once (a lost worker); its own tasks retry themselves.
DETECT_RETRIES = 1


class ClusterError(Exception):
    """The cluster cannot be used (bad option, nothing listening, no Dask installed)."""


# The LocalCluster's own process (`--cluster dask`): its scheduler and nannies live there, its
# workers below it, so the driver holds only its client. It prints the
# scheduler's address, then serves until its stdin closes: the driver closing the pipe on exit,
# or the driver dying in any way (the pipe closes with it), so no cluster outlives its driver.
_LOCAL_CLUSTER = """
import logging, sys
from distributed import LocalCluster
n = int(sys.argv[1])
try:
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR) as c:
        print(c.scheduler_address, flush=True)
        sys.stdin.read()
except KeyboardInterrupt:
    pass
"""
LOCAL_START_TIMEOUT_S = 120.0  # starting the worker processes on a loaded machine
LOCAL_STOP_TIMEOUT_S = 30.0  # then it is killed


@contextmanager
def _local_cluster(n: int) -> Iterator[str]:
    """A LocalCluster of `n` worker processes in a child process; yields its scheduler address."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOCAL_CLUSTER, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        try:
            yield _read_address(proc, log)
        finally:
            _stop(proc)


def _read_address(proc: subprocess.Popen[str], log: IO[bytes]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], LOCAL_START_TIMEOUT_S)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("tcp://"):
        log.seek(0)
        why = [x for x in log.read().decode(errors="replace").splitlines() if x.strip()]
        state = f"exited with {proc.poll()}" if proc.poll() is not None else f"gave no address within {LOCAL_START_TIMEOUT_S:.0f} s"
        raise ClusterError(f"the local Dask cluster did not start ({state}){': ' + why[-1] if why else ''}")
    return line


def _stop(proc: subprocess.Popen[str]) -> None:
    """Close the cluster's stdin (it shuts down its workers and exits); kill it if it hangs."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(LOCAL_STOP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()


@contextmanager
def cluster_client(spec: str, workers: int | None = None) -> Iterator[Client]:
    """A Dask client: `dask` starts a LocalCluster (worker processes, one thread each, `workers`
    of them, default one per CPU) in a child process; `tcp://HOST:PORT` connects to a running
    scheduler. Either way the driver process holds only the client."""
    try:
        from distributed import Client
    except ImportError as exc:  # the `cluster` extra
        raise ClusterError("Dask is not installed: pip install 'kat[cluster]'") from exc
    if spec == "dask":
        with _local_cluster(workers or os.cpu_count() or 1) as address, Client(address, timeout=f"{CONNECT_TIMEOUT_S}s") as client:
            yield client
        return
    if workers is not None:
        raise ClusterError("--cluster-workers sets the size of a LocalCluster (--cluster dask), not of an existing scheduler")
    host, port = _address(spec)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {spec}: {exc.strerror or exc}") from exc
    try:
        client = Client(spec, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot connect to the Dask scheduler at {spec}: {exc}") from exc
    with client:
        yield client


def _address(spec: str) -> tuple[str, int]:
    if not spec.startswith("tcp://"):
        raise ClusterError(f"--cluster {spec!r}: expected 'dask' (a local cluster) or a scheduler address tcp://HOST:PORT")
    host, _, port = spec[len("tcp://") :].rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--cluster {spec!r}: expected tcp://HOST:PORT")
    return host.strip("[]"), int(port)


def _detect_task(path: str, cache_root: str, run: str, config_json: str) -> tuple[str, float]:
    """The cluster task that runs `detect` (on a worker; it submits the per-rank and per-unit
    tasks itself and waits for them outside the worker's thread pool). `run` names the
    directory of the run's unit tables: a retried task finds and removes the same one.
    Returns the answer's JSON and this task's own CPU seconds (its thread only): the serial
    part of a cluster run (opening the bundle, planning, scheduling, the merge)."""
    from distributed import worker_client

    from kat.tools.outpost.distributed import detect_with_client

    t0 = time.thread_time()
    cfg = DetectorConfig.model_validate_json(config_json)
    with worker_client() as client:
        answer = detect_with_client(client, Path(path), Path(cache_root), run, cfg).model_dump_json()
    return answer, time.thread_time() - t0


def detect_on_cluster(
    client: Client, source: str | Path, config: DetectorConfig | None = None, on_serial_cpu: Callable[[float], None] | None = None
) -> DetectionResult:
    """`detect` with all of its work on the cluster's workers; the same answer. `on_serial_cpu`
    receives the CPU seconds of the detect task's own thread (the part no worker count speeds up)."""
    from kat.knowledge.settings import trace_import_settings  # light: pandas stays off the driver

    cfg = config or DetectorConfig()
    path = Path(source).resolve()
    if not path.exists():
        raise BundleError("no such file or directory", path=Path(source))
    cache_root = trace_import_settings().trace_cache
    run = uuid.uuid4().hex
    future = client.submit(
        _detect_task, str(path), str(cache_root), run, cfg.model_dump_json(), key=f"kat-detect-{run[:8]}", retries=DETECT_RETRIES
    )
    answer, serial_cpu = future.result()
    if on_serial_cpu is not None:
        on_serial_cpu(serial_cpu)
    return DetectionResult.model_validate_json(answer)


def summary_on_cluster(path: Path, spec: str, workers: int | None = None) -> dict[str, Any]:
    """`kat import --cluster`: the traces imported and summarised on the workers, the bundle's
    summary assembled here from the per-rank summaries."""
    from kat.knowledge.settings import trace_import_settings
    from kat.tools.outpost.distributed import RankFacts, import_on_cluster
    from kat.tools.telemetry.summary import bundle_summary

    with cluster_client(spec, workers) as client:
        done = import_on_cluster(client, Path(path).resolve(), trace_import_settings().trace_cache, with_summary=True)
    ranks = {x.trace.rank: x.summary for x in done if isinstance(x, RankFacts) and x.summary is not None}
    return bundle_summary(path, ranks)
