"""Outpost on CPU-only (gloo) traces: late arrivals explained by untraced time, collectives
aligned in time order across threads, and compute vs starved-CPU attribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kat.tools.outpost import detect
from kat.tools.outpost.arrival import _blame
from kat.tools.outpost.tree import CLS_COLL, build_nodes
from kat.tools.telemetry import open_bundle
from tests.gloo_factory import GlooFaults, gloo_trace
from tests.kineto_factory import write_rank_traces

WINDOW = range(6, 12)


def _run(tmp: Path, faults: GlooFaults | None = None, seed: int = 0):  # noqa: ANN202
    return detect(write_rank_traces(tmp, gloo_trace(faults=faults, seed=seed)))


def _findings(res) -> list[tuple]:  # noqa: ANN001
    return [(a.rank, a.component, a.method, a.name, a.steps) for a in res.anomalies]


def test_blame_goes_to_the_last_member_by_its_lead_over_the_next() -> None:
    instance = np.array([0, 0, 0, 1, 1, 2])
    ts = np.array([10, 50, 20, 7, 5, 3])
    # Instance 0: the member at 50 entered 30 after the next-latest (20); instance 1: 7 vs 5;
    # instance 2 has one member: nobody waited on anybody.
    assert _blame(instance, ts).tolist() == [0, 30, 0, 2, 0, 0]


@pytest.mark.parametrize("seed", [0, 1])
def test_healthy_gloo_group_reports_nothing(tmp_path: Path, seed: int) -> None:
    res = _run(tmp_path, seed=seed)
    assert res.anomalies == [], _findings(res)


def test_collectives_align_in_time_order_whatever_thread_ran_them(tmp_path: Path) -> None:
    # The factory puts a rank's even collectives on one thread and odd ones on another, swapped
    # on odd ranks: row order (thread by thread) would pair different all-reduces across ranks.
    table = build_nodes(open_bundle(write_rank_traces(tmp_path, gloo_trace(steps=4))))
    n = table.nodes
    c = n[(n["cls"] == CLS_COLL).to_numpy()]
    for _, g in c.groupby(["rank", "step"]):
        assert (np.diff(g.sort_values("occ")["ts_ns"].to_numpy()) > 0).all()


def test_untraced_pause_before_the_step_is_a_software_stall_on_that_rank(tmp_path: Path) -> None:
    res = _run(tmp_path, GlooFaults(rank=2, steps=WINDOW, stall_us=30_000))
    assert res.suspect_ranks[0] == 2, _findings(res)
    stall = [a for a in res.anomalies if a.rank == 2 and a.method == "arrival"]
    assert stall and stall[0].component == "software" and stall[0].name.startswith("ProfilerStep#")
    assert set(stall[0].steps) & set(WINDOW)
    # The peers waited in their all-reduces: they are victims, never culprits.
    assert all(a.rank == 2 for a in res.anomalies), _findings(res)


def test_delay_inside_the_communication_wrapper_is_network_on_that_rank(tmp_path: Path) -> None:
    res = _run(tmp_path, GlooFaults(rank=1, steps=WINDOW, comm_delay_us=4_000))
    assert res.suspect_ranks[0] == 1, _findings(res)
    late = [a for a in res.anomalies if a.rank == 1 and a.method == "arrival"]
    assert late and late[0].component == "network" and late[0].name == "tp_all_reduce"
    assert all(a.rank == 1 for a in res.anomalies), _findings(res)


def test_small_untraced_delay_is_within_noise(tmp_path: Path) -> None:
    # 10 us of extra entry delay is inside the factory's 30 us arrival jitter.
    res = _run(tmp_path, GlooFaults(rank=1, steps=WINDOW, comm_delay_us=10))
    assert res.anomalies == [], _findings(res)


def test_cpu_only_slow_gemm_is_compute_and_starved_cpu_is_host_cpu(tmp_path: Path) -> None:
    gemm = _run(tmp_path / "gemm", GlooFaults(rank=3, steps=WINDOW, gemm_factor=4.0))
    assert gemm.suspect_ranks[0] == 3
    assert {a.component for a in gemm.anomalies if a.method == "inter"} == {"gpu"}, _findings(gemm)
    starved = _run(tmp_path / "cpu", GlooFaults(rank=3, steps=WINDOW, cpu_factor=1.8))
    assert starved.suspect_ranks[0] == 3
    assert {a.component for a in starved.anomalies if a.method == "inter"} == {"host_cpu"}, _findings(starved)
