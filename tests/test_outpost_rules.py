"""Outpost on hand-built traces where the answer follows from physics, not from a simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kat.tools.outpost import DetectorConfig, detect
from kat.tools.telemetry import BundleError
from tests.conftest import REAL_TRACES
from tests.kineto_factory import write_rank_traces, write_trace

BASE = 1_700_000_000_000_000_000


KV_FRAME = "vllm/v1/kv_offload/worker/cpu_gpu.py(127): transfer_async"


def _group_trace(
    ranks: int,
    steps: int,
    slow_rank: int | None,
    slow_steps: range,
    slow_factor: float,
    slow_kind: str = "gpu",
    link_steps: range = range(0),
    link_factor: float = 1.0,
    nelems: dict[int, int] | None = None,
    swap_steps: set[int] | frozenset = frozenset(),
    host_factor: float | None = None,
) -> dict[int, dict]:
    """Per rank: ProfilerStep -> (aten::mm -> launch -> GEMM kernel) x layers, then an all-reduce.

    Collective physics: each member's NCCL kernel starts when its stream gets there; all end at
    the last arrival + transfer. A slow GPU (or a slow CPU that launches late) makes its rank late.
    Transfer time = latency + size / bandwidth; a degraded link (`link_steps`) divides the
    bandwidth by `link_factor` for every member. `nelems` sets a step's message size (load).
    In `swap_steps` every rank swaps KV blocks out: a frame that launches a long device->host copy.
    `slow_kind` "numa" slows the rank's host->device copies by `slow_factor` and its host code by
    `host_factor` (default: `slow_factor`; 1.0: only the copies, as a degraded PCIe link would).
    """
    docs = {r: [] for r in range(ranks)}
    t = 1000.0
    corr = 10
    for s in range(steps):
        cpu_t = {r: t for r in range(ranks)}
        gpu_t = {r: t + 5 for r in range(ranks)}
        n_el = (nelems or {}).get(s, 32768)
        transfer = 5.0 + 10.0 * n_el / 32768 * (link_factor if s in link_steps else 1.0)
        for r in range(ranks):  # inputs go host -> device first: token ids, positions
            corr += 1
            pid = 100 + r
            far = r == slow_rank and s in slow_steps and slow_kind == "numa"
            c0 = cpu_t[r]
            docs[r] += [
                {"ph": "X", "cat": "cpu_op", "name": "aten::copy_", "pid": pid, "tid": pid, "ts": c0, "dur": 6.0},
                {
                    "ph": "X",
                    "cat": "cuda_runtime",
                    "name": "cudaMemcpyAsync",
                    "pid": pid,
                    "tid": pid,
                    "ts": c0 + 1,
                    "dur": 4.0,
                    "args": {"correlation": corr},
                },
                {
                    "ph": "X",
                    "cat": "gpu_memcpy",
                    "name": "Memcpy HtoD (Pinned -> Device)",
                    "pid": r,
                    "tid": 7,
                    "ts": gpu_t[r],
                    "dur": 3.0 * (slow_factor if far else 1.0),
                    "args": {"correlation": corr, "device": r, "stream": 7, "bytes": 4096},
                },
            ]
            gpu_t[r] += 3.0 * (slow_factor if far else 1.0)
            cpu_t[r] = c0 + 7
        if s in swap_steps:
            for r in range(ranks):
                corr += 1
                pid = 100 + r
                c0 = cpu_t[r]
                docs[r] += [
                    {"ph": "X", "cat": "python_function", "name": KV_FRAME, "pid": pid, "tid": pid, "ts": c0, "dur": 14.0},
                    {"ph": "X", "cat": "cpu_op", "name": "aten::copy_", "pid": pid, "tid": pid, "ts": c0 + 1, "dur": 12.0},
                    {
                        "ph": "X",
                        "cat": "cuda_runtime",
                        "name": "cudaMemcpyAsync",
                        "pid": pid,
                        "tid": pid,
                        "ts": c0 + 2,
                        "dur": 8.0,
                        "args": {"correlation": corr},
                    },
                    {
                        "ph": "X",
                        "cat": "gpu_memcpy",
                        "name": "Memcpy DtoH (Device -> Pinned)",
                        "pid": r,
                        "tid": 7,
                        "ts": gpu_t[r],
                        "dur": 600.0,
                        "args": {"correlation": corr, "device": r, "stream": 7, "bytes": 1 << 26},
                    },
                ]
                cpu_t[r] = c0 + 15
                gpu_t[r] += 600.0
        for layer in range(4):
            for r in range(ranks):
                slow = r == slow_rank and s in slow_steps
                k = 80.0 + 3.0 * ((s * 7 + layer * 3 + r) % 5) / 5  # small deterministic jitter
                host = slow_factor if slow_kind == "cpu" or host_factor is None else host_factor
                cpu_cost = 12.0 * (host if slow and slow_kind in ("cpu", "numa") else 1.0)
                kdur = k * (slow_factor if slow and slow_kind == "gpu" else 1.0)
                corr += 1
                pid = 100 + r
                ev = docs[r]
                op_s = cpu_t[r]
                ev.append(
                    {
                        "ph": "X",
                        "cat": "cpu_op",
                        "name": "aten::mm",
                        "pid": pid,
                        "tid": pid,
                        "ts": op_s,
                        "dur": cpu_cost,
                        "args": {"External id": corr, "Input Dims": [[8, 4096], [4096, 4096]]},
                    }
                )
                ev.append(
                    {
                        "ph": "X",
                        "cat": "cuda_runtime",
                        "name": "cudaLaunchKernel",
                        "pid": pid,
                        "tid": pid,
                        "ts": op_s + cpu_cost * 0.4,
                        "dur": cpu_cost * 0.5,
                        "args": {"correlation": corr},
                    }
                )
                ks = max(gpu_t[r], op_s + cpu_cost)
                ev.append(
                    {
                        "ph": "X",
                        "cat": "kernel",
                        "name": "sm90_xmma_gemm_bf16bf16",
                        "pid": r,
                        "tid": 7,
                        "ts": ks,
                        "dur": kdur,
                        "args": {"correlation": corr, "device": r, "stream": 7},
                    }
                )
                gpu_t[r] = ks + kdur
                cpu_t[r] = op_s + cpu_cost + 1
            # all-reduce
            arrive = {}
            for r in range(ranks):
                corr += 1
                pid = 100 + r
                docs[r].append(
                    {
                        "ph": "X",
                        "cat": "cpu_op",
                        "name": "record_param_comms",
                        "pid": pid,
                        "tid": pid,
                        "ts": cpu_t[r],
                        "dur": 6.0,
                        "args": {
                            "Collective name": "allreduce",
                            "In msg nelems": n_el,
                            "dtype": "BFloat16",
                            "Process Group Ranks": str(list(range(ranks))),
                        },
                    }
                )
                docs[r].append(
                    {
                        "ph": "X",
                        "cat": "cuda_runtime",
                        "name": "cudaLaunchKernel",
                        "pid": pid,
                        "tid": pid,
                        "ts": cpu_t[r] + 1,
                        "dur": 4.0,
                        "args": {"correlation": corr},
                    }
                )
                arrive[r] = (max(gpu_t[r], cpu_t[r] + 5), corr)
                cpu_t[r] += 8
            end = max(a for a, _ in arrive.values()) + transfer
            for r in range(ranks):
                a, c = arrive[r]
                docs[r].append(
                    {
                        "ph": "X",
                        "cat": "kernel",
                        "name": "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)",
                        "pid": r,
                        "tid": 7,
                        "ts": a,
                        "dur": end - a,
                        "args": {"correlation": c, "device": r, "stream": 7},
                    }
                )
                gpu_t[r] = end
        step_end = max(gpu_t.values()) + 5
        for r in range(ranks):
            docs[r].append(
                {
                    "ph": "X",
                    "cat": "user_annotation",
                    "name": f"ProfilerStep#{s}",
                    "pid": 100 + r,
                    "tid": 100 + r,
                    "ts": t,
                    "dur": step_end - t,
                }
            )
        t = step_end + 10
    return {
        r: {"distributedInfo": {"backend": "nccl", "rank": r, "world_size": ranks}, "baseTimeNanoseconds": BASE, "traceEvents": ev}
        for r, ev in docs.items()
    }


def _write(tmp: Path, docs: dict[int, dict]) -> Path:
    return write_rank_traces(tmp, docs)


def test_slow_gpu_is_blamed_and_its_waiting_peers_are_not(tmp_path: Path) -> None:
    res = detect(_write(tmp_path, _group_trace(4, 12, slow_rank=2, slow_steps=range(4, 10), slow_factor=1.4)))
    assert res.suspect_ranks[0] == 2
    assert {a.rank for a in res.anomalies} == {2}, [(a.rank, a.method, a.name) for a in res.anomalies]
    methods = {a.method for a in res.anomalies}
    assert "inter" in methods and "arrival" in methods
    gpu = [a for a in res.anomalies if a.method == "inter"][0]
    assert gpu.component == "gpu" and gpu.kind == "kernel" and set(gpu.steps) <= set(range(4, 10))
    # The peers' NCCL kernels are long (they wait) but are never reported.
    assert not any(a.kind == "collective" and a.rank != 2 for a in res.anomalies)


def test_slow_cpu_launches_late_and_is_host_cpu(tmp_path: Path) -> None:
    res = detect(_write(tmp_path, _group_trace(4, 12, slow_rank=1, slow_steps=range(3, 11), slow_factor=6.0, slow_kind="cpu")))
    assert res.suspect_ranks and res.suspect_ranks[0] == 1
    assert {a.component for a in res.anomalies if a.rank == 1} == {"host_cpu"}
    assert all(a.rank == 1 for a in res.anomalies)


def test_healthy_group_reports_nothing(tmp_path: Path) -> None:
    res = detect(_write(tmp_path, _group_trace(4, 12, slow_rank=None, slow_steps=range(0), slow_factor=1.0)))
    assert res.anomalies == [] and res.suspect_ranks == []


def test_small_slowdown_below_effect_size_is_ignored(tmp_path: Path) -> None:
    res = detect(_write(tmp_path, _group_trace(4, 12, slow_rank=3, slow_steps=range(2, 10), slow_factor=1.03)))
    assert not any(a.method == "inter" for a in res.anomalies)


def test_thresholds_are_options(tmp_path: Path) -> None:
    d = _write(tmp_path, _group_trace(4, 12, slow_rank=2, slow_steps=range(4, 10), slow_factor=1.4))
    strict = detect(d, DetectorConfig(min_effect=0.8, arrival_min_ns=10**9, min_effect_share=0.9))
    assert not any(a.method in ("inter", "arrival") for a in strict.anomalies)


def test_single_rank_real_trace_runs_intra_only() -> None:
    res = detect(REAL_TRACES / "h100_qwen1.5_0.5b_chat.json.gz")
    assert res.stats.ranks == 1 and res.stats.events > 10_000
    assert all(a.method == "intra" for a in res.anomalies)
    assert any("no synchronous peer group" in n for n in res.notes)


def test_cuda_graph_real_trace() -> None:
    res = detect(REAL_TRACES / "vllm_qwen3_8b_prefilldecode_graph_execution.json.gz")
    assert res.stats.events > 18_000
    assert all(a.method == "intra" for a in res.anomalies)


def test_real_two_rank_pair_runs() -> None:
    res = detect(REAL_TRACES / "hta_sampled_pair")
    assert res.stats.ranks == 2 and res.stats.groups == [[0, 1]]


def test_malformed_input_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "rank-0.json"
    bad.write_text('{"traceEvents": [')
    with pytest.raises(BundleError, match="rank-0.json"):
        detect(tmp_path)
    from kat.agent.cli import app

    out = CliRunner().invoke(app, ["detect", str(tmp_path)])
    assert out.exit_code == 2 and "rank-0.json" in out.output and "Traceback" not in out.output


def test_cli_json_contract(tmp_path: Path) -> None:
    import json

    from kat.agent.cli import app

    d = _write(tmp_path, _group_trace(4, 12, slow_rank=2, slow_steps=range(4, 10), slow_factor=1.4))
    out = CliRunner().invoke(app, ["detect", str(d), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["suspect_ranks"][0] == 2
    a = doc["anomalies"][0]
    assert set(a) >= {
        "rank",
        "kind",
        "name",
        "tree_path",
        "component",
        "method",
        "start_ns",
        "end_ns",
        "steps",
        "observed",
        "baseline",
        "ratio",
        "score",
    }
    assert {"events", "ranks", "seconds"} <= set(doc["stats"])


def test_link_that_degrades_mid_capture_is_a_link_fault_on_every_member(tmp_path: Path) -> None:
    # Nobody arrives late; every member's transfer takes 2x from step 6 on, and stays so.
    res = detect(
        _write(
            tmp_path,
            _group_trace(
                4,
                16,
                slow_rank=None,
                slow_steps=range(0),
                slow_factor=1.0,
                link_steps=range(6, 16),
                link_factor=2.0,
                nelems={s: 65536 for s in range(16)},
            ),
        )
    )
    assert {a.rank for a in res.anomalies} == {0, 1, 2, 3}, [(a.rank, a.method, a.name) for a in res.anomalies]
    assert {a.component for a in res.anomalies} <= {"nvlink", "network"}
    assert all(a.kind == "collective" and set(a.steps) <= set(range(6, 16)) for a in res.anomalies)


def test_bigger_messages_are_load_not_a_slow_link(tmp_path: Path) -> None:
    # From step 6 the batch doubles: messages double and take longer on a healthy link.
    sizes = {s: (32768 if s < 6 else 131072) for s in range(16)}
    res = detect(_write(tmp_path, _group_trace(4, 16, slow_rank=None, slow_steps=range(0), slow_factor=1.0, nelems=sizes)))
    assert res.anomalies == [], [(a.rank, a.method, a.name, a.detail) for a in res.anomalies]


def test_kv_swap_that_holds_the_gpu_is_gpu_memory(tmp_path: Path) -> None:
    res = detect(_write(tmp_path, _group_trace(4, 12, slow_rank=None, slow_steps=range(0), slow_factor=1.0, swap_steps={4, 9})))
    kv = [a for a in res.anomalies if a.component == "gpu_memory"]
    assert {a.rank for a in kv} == {0, 1, 2, 3}
    assert all(KV_FRAME in a.name and set(a.steps) <= {4, 9} for a in kv)


def test_routine_kv_offload_every_step_is_not_a_fault(tmp_path: Path) -> None:
    res = detect(_write(tmp_path, _group_trace(4, 12, slow_rank=None, slow_steps=range(0), slow_factor=1.0, swap_steps=set(range(12)))))
    assert not any(a.component == "gpu_memory" for a in res.anomalies), [(a.rank, a.name) for a in res.anomalies]


def _two_host_bundle(tmp: Path, nic_hot_host: str | None, late_rank: int | None = None) -> Path:
    """Four ranks, two per host, one group across both hosts, slow the whole capture long (no
    healthy period in the trace); NIC counters rise on `nic_hot_host` only."""
    import json

    b = tmp / "bundle"
    traces = b / "traces"
    traces.mkdir(parents=True)
    # `late_rank`: that rank's host code is 20x slower in every step, so it reaches every collective
    # last (None: no rank is slowed).
    trace = _group_trace(
        4, 12, slow_rank=late_rank, slow_steps=range(12), slow_factor=20.0, slow_kind="cpu", link_steps=range(12), link_factor=3.0
    )
    for r, doc in trace.items():
        write_trace(doc, traces / f"rank-{r}.json")
    hosts = {0: "node-a", 1: "node-a", 2: "node-b", 3: "node-b"}
    (b / "incident.json").write_text(
        json.dumps(
            {
                "id": "inc-test",
                "symptom": "slow decode",
                "topology": {
                    "hosts": [{"name": h, "gpus": [{"index": 0}, {"index": 1}]} for h in ("node-a", "node-b")],
                    "workers": [{"rank": r, "host": h, "gpu": r % 2} for r, h in hosts.items()],
                    "groups": {"tp": [[0, 1, 2, 3]]},
                },
            }
        )
    )
    if nic_hot_host is not None:
        rows = ["ts,name,value,host,gpu,rank"]
        for i in range(12):
            ts = BASE + (i - 4) * 1_000_000_000
            for h in ("node-a", "node-b"):
                rows.append(f"{ts},node_infiniband_port_transmit_wait_total,{(90_000 if h == nic_hot_host else 40) * i},{h},,")
        (b / "metrics.csv").write_text("\n".join(rows) + "\n")
    return b


def test_link_slow_for_the_whole_capture_is_pinned_by_nic_counters(tmp_path: Path) -> None:
    res = detect(_two_host_bundle(tmp_path, "node-b"))
    assert {a.rank for a in res.anomalies} == {2, 3}, [(a.rank, a.method, a.detail) for a in res.anomalies]
    assert all(a.component == "network" and a.method == "inter" and "node-b" in a.detail for a in res.anomalies)


def test_nic_counters_still_pin_the_link_when_one_member_is_late_at_every_step(tmp_path: Path) -> None:
    """Rank 0 reaches every collective last in every step (the group's order, as a pipeline's
    sender): that says nothing about the link, so the NIC counters still pin node-b's members."""
    res = detect(_two_host_bundle(tmp_path, "node-b", late_rank=0))
    link = [a for a in res.anomalies if a.kind == "collective" and a.method != "arrival"]
    assert {a.rank for a in link} == {2, 3}, [(a.rank, a.method, a.detail) for a in res.anomalies]
    assert all(a.component == "network" and "node-b" in a.detail for a in link)
    assert res.suspect_ranks[0] == 0  # its lateness is still its own finding


def test_link_slow_for_the_whole_capture_without_counters_is_not_guessed(tmp_path: Path) -> None:
    assert detect(_two_host_bundle(tmp_path, None)).anomalies == []


@pytest.mark.parametrize(("host_factor", "component"), [(1.05, "host_memory"), (1.0, "pcie")])
def test_slow_copies_are_far_memory_only_when_host_code_is_slower_too(tmp_path: Path, host_factor: float, component: str) -> None:
    """Copies 1.6x slower on rank 1. With its host code 5% slower as well (significant over the
    capture, far below a material effect on its own) the copies read far memory; with the host
    code at full speed only the link can explain them."""
    trace = _group_trace(4, 12, slow_rank=1, slow_steps=range(3, 11), slow_factor=1.6, slow_kind="numa", host_factor=host_factor)
    res = detect(_write(tmp_path, trace))
    assert res.suspect_ranks and res.suspect_ranks[0] == 1
    mine = {a.component for a in res.anomalies if a.rank == 1}
    assert mine == {component}, [(a.rank, a.component, a.name, a.detail) for a in res.anomalies]


def test_far_numa_node_slows_host_code_and_copies_together(tmp_path: Path) -> None:
    res = detect(_write(tmp_path, _group_trace(4, 12, slow_rank=1, slow_steps=range(3, 11), slow_factor=1.6, slow_kind="numa")))
    assert res.suspect_ranks and res.suspect_ranks[0] == 1
    assert "host_memory" in {a.component for a in res.anomalies if a.rank == 1}, [(a.rank, a.component) for a in res.anomalies]
    # A busy CPU slows the host code only: that stays host_cpu.
    busy = detect(_write(tmp_path / "cpu", _group_trace(4, 12, slow_rank=1, slow_steps=range(3, 11), slow_factor=1.6, slow_kind="cpu")))
    assert "host_memory" not in {a.component for a in busy.anomalies}


def test_a_member_late_at_every_step_does_not_hide_a_link_that_slows_later(tmp_path: Path) -> None:
    """Rank 0 reaches the all-reduce last in every step (its host code is slower throughout, as a
    pipeline's sender always reaches its send after the receiver posted). From step 6 the link's
    bandwidth drops 2.5x: the lateness never changed, so it cannot explain the change against the
    group's own history, and the slower transfers are still a link finding."""

    def links(link_steps: range, out: Path) -> list:
        trace = _group_trace(
            4, 12, slow_rank=0, slow_steps=range(12), slow_factor=20.0, slow_kind="cpu", link_steps=link_steps, link_factor=2.5
        )
        return [a for a in detect(_write(out, trace)).anomalies if a.kind == "collective" and a.method == "intra"]

    slowed = links(range(6, 12), tmp_path / "slowed")
    assert slowed and all(set(a.steps) <= set(range(6, 12)) for a in slowed), [(a.rank, a.steps, a.detail) for a in slowed]
    assert {a.rank for a in slowed} == {0, 1, 2, 3}
    # The same lateness with an unchanged link: no link finding.
    assert links(range(0), tmp_path / "calm") == []
