"""Outpost on a real Dask LocalCluster (2 worker processes): the same JSON as one process, a
worker killed mid-run, an unreadable rank, a scheduler address where nothing listens."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kat.tools.outpost import DetectionResult, detect
from kat.tools.outpost.cluster import cluster_client, detect_on_cluster
from kat.tools.outpost.distributed import units_of
from kat.tools.outpost.phases import Plan

pytest.importorskip("distributed")

DATA = Path(__file__).parent / "data"
DEMO = Path(__file__).parents[1] / "evals" / "suites" / "demo"
GLOO = DATA / "real-gloo-dev"
# A representative subset (the whole demo suite and all 20 gloo runs: the slow test below).
# kv_cache_pressure: two TP-4 groups, two units; gpu_thermal_throttling (the multi-group test):
# four TP-2 groups under DP-4 replica tests, four units sharing capture-wide statistics.
DEMO_SUBSET = ["kv_cache_pressure"]
GLOO_SUBSET = ["busy_w4_r1", "bigmm_w4_r2_l1"]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with cluster_client("dask", 2) as c:
        yield c


def _json(res: DetectionResult) -> dict[str, Any]:
    d = json.loads(res.model_dump_json())
    d["stats"].pop("seconds")
    return d


def _same(client: Any, path: Path) -> dict[str, Any]:
    single = _json(detect(path))
    assert _json(detect_on_cluster(client, path)) == single, path.name
    return single


@pytest.mark.parametrize("case", DEMO_SUBSET)
def test_demo_cases_same_json_on_dask(client: Any, case: str) -> None:
    _same(client, DEMO / case)


@pytest.mark.parametrize("case", GLOO_SUBSET)
def test_real_gloo_runs_same_json_on_dask(client: Any, case: str) -> None:
    _same(client, GLOO / case)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KAT_RUN_SLOW") != "1", reason="slow: set KAT_RUN_SLOW=1")
def test_every_demo_case_and_gloo_run_same_json_on_dask(client: Any) -> None:
    for case in sorted(p for p in DEMO.iterdir() if p.is_dir()) + sorted(p for p in GLOO.iterdir() if p.is_dir()):
        _same(client, case)


def test_units_split_groups_and_join_what_a_test_spans() -> None:
    plan = Plan(groups=[[0, 1], [2, 3], [4, 5]], replicas=[])
    assert units_of([0, 1, 2, 3, 4, 5, 6], plan, []) == [[0, 1], [2, 3], [4, 5], [6]]
    # a collective recorded across two groups joins them
    assert units_of([0, 1, 2, 3, 4, 5], plan, ["1,2"]) == [[0, 1, 2, 3], [4, 5]]
    # replica groups do not join units: their tests get capture-wide statistics instead
    assert units_of([0, 1, 2, 3, 4, 5], Plan(plan.groups, [[0, 2, 4]]), []) == [[0, 1], [2, 3], [4, 5]]


def test_multi_group_case_has_several_units_and_same_json(client: Any) -> None:
    from kat.tools.outpost.detector import replica_groups, sync_groups
    from kat.tools.telemetry.bundle import open_bundle

    case = DEMO / "gpu_thermal_throttling"
    b = open_bundle(case)
    plan = Plan(sync_groups(b), replica_groups(b))
    assert len(units_of(b.ranks, plan, [])) == 4 and plan.replicas  # the merge and the replica statistics are exercised
    truth = json.loads((case / "ground_truth.json").read_text())
    assert _same(client, case)["suspect_ranks"][0] in truth["affected_ranks"]


def test_unreadable_rank_is_a_note_and_the_rest_is_analysed(client: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(GLOO / "busy_w4_r1", run)
    victim = sorted(p for p in run.iterdir() if p.name.endswith((".json", ".json.gz")) and "truth" not in p.name)[-1]
    victim.write_bytes(b'{"traceEvents": [{"ph": "X", "name": ')  # truncated mid-file
    res = detect_on_cluster(client, run)
    notes = [n for n in res.notes if victim.name in n]
    assert notes and "unreadable" in notes[0], res.notes
    assert res.stats.ranks == 3 and res.stats.events > 0
    assert _json(res) == _json(detect(run))


def _detect_killing(client: Any, case: Path, victim: Callable[[], str | None]) -> tuple[dict[str, Any], list[int]]:
    """detect_on_cluster of `case` while a thread SIGKILLs the worker `victim()` names as soon as
    it names one (within 60 s); the JSON and the pids killed. The nanny restarts the worker."""
    pids = client.run(os.getpid)  # worker address -> pid of its process
    killed: list[int] = []

    def kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            w = victim()
            if w is not None and w in pids:
                os.kill(pids[w], signal.SIGKILL)
                killed.append(pids[w])
                return
            time.sleep(0.02)

    t = threading.Thread(target=kill)
    t.start()
    got = _json(detect_on_cluster(client, case))
    t.join()
    client.wait_for_workers(2, timeout=240)  # for the next tests (a nanny restarting its worker is slow on a loaded machine)
    return got, killed


def _running(client: Any, prefix: str) -> list[str]:
    """Workers processing a task whose key starts with `prefix`."""
    return [w for w, tasks in client.processing().items() if any(str(t).startswith(prefix) for t in tasks)]


def test_worker_killed_mid_run_is_retried(client: Any) -> None:
    case = GLOO / "busy_w4_r3_subtle"
    want = _json(detect(case))
    got, killed = _detect_killing(client, case, lambda: next(iter(_running(client, "kat-unit")), None))
    assert killed, "no worker was ever busy with a unit: nothing was killed"
    assert got == want


def test_worker_of_the_detect_task_killed_mid_run_is_retried(client: Any) -> None:
    """The detect task (planning and the merge) runs on a worker too: losing that worker starts
    the task over elsewhere, on the traces already in the cache."""
    case = GLOO / "bigmm_w4_r3"
    want = _json(detect(case))

    def detect_worker(dask_scheduler: Any) -> list[str]:
        return [
            ts.processing_on.address for ts in dask_scheduler.tasks.values() if ts.processing_on and str(ts.key).startswith("kat-detect")
        ]

    def victim() -> str | None:
        where = client.run_on_scheduler(detect_worker)
        return where[0] if where and _running(client, "kat-unit") else None

    got, killed = _detect_killing(client, case, victim)
    assert killed, "the detect task was never seen running beside a unit task: nothing was killed"
    assert got == want


# What the `kat` process imports and holds under --cluster: the merge runs on a worker.
_DRIVER = """
import re, sys
sys.argv = ["kat", "detect", sys.argv[1], "--json", "--cluster", sys.argv[2]]
from kat.agent.cli import main
try:
    main()
finally:
    heavy = sorted(m for m in ("pandas", "pyarrow", "kat.tools.outpost.phases") if m in sys.modules)
    # VmHWM: this process's peak RSS since exec (ru_maxrss would carry the forking parent's)
    peak = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
    print(f"DRIVER {peak} {','.join(heavy) or '-'}", file=sys.stderr)
"""


def test_cli_driver_runs_no_analysis_and_stays_small(client: Any) -> None:
    case = GLOO / "busy_w4_r1"
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(case), client.scheduler.address], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    got["stats"].pop("seconds")
    assert got == _json(detect(case))
    peak_kb, heavy = proc.stderr.strip().splitlines()[-1].split()[1:]
    assert heavy == "-", f"the --cluster driver imported {heavy}: the analysis ran in the kat process"
    # Interpreter + CLI + Dask client measure about 80 MB here; the single-process detect of
    # this 4-rank case already peaks near 200 MB (pandas and pyarrow alone are ~100 MB).
    assert int(peak_kb) < 120 * 1024, f"driver peak {int(peak_kb) // 1024} MB"


def _cli(*args: str) -> Any:
    proc = subprocess.run([sys.executable, "-m", "kat.agent.cli", *args, "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _untimed(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in ("seconds", "import_seconds")}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _ran_on_cluster(client: Any, prefix: str) -> int:
    """How many tasks named `prefix` the scheduler has seen (the command did use the cluster)."""

    def count(dask_scheduler: Any) -> int:
        p = dask_scheduler.task_prefixes.get(prefix)
        return sum(p.state_counts.values()) if p is not None else 0

    return int(client.run_on_scheduler(count))


def test_import_command_on_dask_summarises_like_one_process(client: Any) -> None:
    case = GLOO / "bigmm_w3_r0"
    single = _cli("import", str(case))
    assert sorted(single["ranks"]) == ["0", "1", "2"]
    before = _ran_on_cluster(client, "kat-import")
    assert _untimed(_cli("import", str(case), "--cluster", client.scheduler.address)) == _untimed(single)
    assert _ran_on_cluster(client, "kat-import") >= before + 3  # one task per rank file


def test_eval_detection_on_dask_scores_like_one_process(client: Any, tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    for name in ("busy_w2_r0", "none_w2_a"):  # a fault and a healthy run: both outcomes scored
        shutil.copytree(GLOO / name, cases / name)
    single = _cli("eval", "detection", "--cases", str(cases), "--out", str(tmp_path / "a"))
    before = _ran_on_cluster(client, "kat-detect")
    dask = _cli("eval", "detection", "--cases", str(cases), "--out", str(tmp_path / "b"), "--cluster", client.scheduler.address)
    assert len(single["cases"]) == 2
    assert _untimed(dask) == _untimed(single)
    assert _ran_on_cluster(client, "kat-detect") >= before + 2  # one detect task per case


def test_closed_port_fails_fast_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kat.agent.cli", "detect", str(GLOO / "none_w2_a"), "--cluster", f"tcp://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - t < 15  # CLI start-up included; the connection attempt itself is refused at once
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "scheduler" in lines[0], proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KAT_RUN_SLOW") != "1", reason="slow: set KAT_RUN_SLOW=1")
def test_world_of_1024_ranks_names_the_injected_rank_first_on_dask(client: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Opt-in (-m slow, ~15 min on 2 cores): 128 TP-8 groups, one faulty rank, via the CLI."""
    from kat.evals.simulate.world import generate_world

    out = tmp_path_factory.mktemp("world") / "w1024"
    truth = generate_world("gpu_thermal_throttling", 1024, 3, out, size="tiny")
    assert truth.affected_ranks
    argv = [sys.executable, "-m", "kat.agent.cli", "detect", str(out), "--json"]
    single = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    dask = json.loads(
        subprocess.run([*argv, "--cluster", "dask", "--cluster-workers", "2"], capture_output=True, text=True, check=True).stdout
    )
    for d in (single, dask):
        d["stats"].pop("seconds")
    assert dask == single
    assert dask["suspect_ranks"] and dask["suspect_ranks"][0] in truth.affected_ranks
