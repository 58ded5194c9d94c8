"""Every category yields a loadable bundle whose injected signature is present, and absent from `none`."""

from __future__ import annotations

import pytest

from kat.evals.simulate import Category, generate_incident, load_ground_truth
from kat.evals.simulate.checks import (
    collective_ratio,
    compute_slowdown,
    copy_slowdown,
    counter_increase,
    cpu_slowdown,
    group_collective_floor,
    in_window,
    log_hits,
    longest_python,
    max_kernel_ratio,
    metric,
    step_start_lag,
    tokens_by_step,
)
from kat.evals.simulate.ground_truth import GroundTruth
from kat.tools.telemetry import open_bundle
from kat.tools.telemetry.bundle import Bundle

TASK = "vllm-l70b-tp8-h100-decode-eager"  # 8 ranks, one host
NET_TASK = "sglang-l70b-tp8pp2-a100-prefill-eager"  # 16 ranks, PP across two hosts
SEED = 11
FAULT_LOGS = r"Xid|AER|NCCL WARN NET/IB|preempted|retracted|Clocks throttled|Power limit|NUMA node|GC pause|Loading LoRA|KV offload|nvme"


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[tuple[str, str], tuple[Bundle, GroundTruth]]:
    root = tmp_path_factory.mktemp("sim")
    cache = root / "cache"
    out: dict[tuple[str, str], tuple[Bundle, GroundTruth]] = {}
    for task in (TASK, NET_TASK):
        cats = list(Category) if task == TASK else [Category.NETWORK_CONGESTION, Category.NONE]
        for cat in cats:
            if task == TASK and cat == Category.NETWORK_CONGESTION:
                continue
            d = root / f"{task}-{cat.value}"
            generate_incident(cat, task, SEED, d, size="tiny", severity=None if cat == Category.NONE else "moderate")
            out[(task, cat.value)] = (open_bundle(d, cache_dir=cache), load_ground_truth(d))
    return out


def _pair(cases, cat: Category):
    task = NET_TASK if cat == Category.NETWORK_CONGESTION else TASK
    b, gt = cases[(task, cat.value)]
    return b, gt, cases[(task, "none")][0]


def _metric_max(b: Bundle, name: str, gt: GroundTruth, rank: int) -> float:
    return float(in_window(metric(b, name, gt, rank=rank), gt)["value"].max())


def sig_thermal(b: Bundle, gt: GroundTruth) -> bool:
    r = gt.affected_ranks[0]
    hot = _metric_max(b, "DCGM_FI_DEV_GPU_TEMP", gt, r) >= 84
    slow_clock = float(in_window(metric(b, "DCGM_FI_DEV_SM_CLOCK", gt, rank=r), gt)["value"].min()) < 0.9 * 1980
    return compute_slowdown(b, gt) > 1.08 and collective_ratio(b, gt) < 0.9 and hot and slow_clock


def sig_power(b: Bundle, gt: GroundTruth) -> bool:
    r = gt.affected_ranks[0]
    lim = in_window(metric(b, "DCGM_FI_DEV_POWER_MGMT_LIMIT", gt, rank=r), gt)["value"]
    pw = in_window(metric(b, "DCGM_FI_DEV_POWER_USAGE", gt, rank=r), gt)["value"]
    at_cap = lim.max() < 700 and (lim.to_numpy() - pw.to_numpy()).max() < 15
    cool = _metric_max(b, "DCGM_FI_DEV_GPU_TEMP", gt, r) < 80
    return compute_slowdown(b, gt) > 1.08 and at_cap and cool


def sig_nvlink(b: Bundle, gt: GroundTruth, none: Bundle) -> bool:
    group = list(range(8))
    slow = group_collective_floor(b, group, gt.affected_steps) > 1.4 * group_collective_floor(none, group, gt.affected_steps)
    compute_ok = abs(compute_slowdown(b, gt) - 1.0) < 0.05
    return (
        slow and compute_ok and log_hits(b, r"Xid .*: 74") > 0 and counter_increase(b, "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL") > 0
    )


def sig_pcie(b: Bundle, gt: GroundTruth) -> bool:
    return copy_slowdown(b, gt) > 1.5 and log_hits(b, "AER: Corrected") > 0 and counter_increase(b, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER") > 0


def sig_network(b: Bundle, gt: GroundTruth, none: Bundle) -> bool:
    ranks = list(range(16))
    slow = group_collective_floor(b, ranks, gt.affected_steps, "SendRecv") > 1.3 * group_collective_floor(
        none, ranks, gt.affected_steps, "SendRecv"
    )
    retrans = counter_increase(b, "node_netstat_Tcp_RetransSegs") > 5 * max(1.0, counter_increase(none, "node_netstat_Tcp_RetransSegs"))
    return slow and retrans and log_hits(b, "NCCL WARN NET/IB") > 0


def sig_host_cpu(b: Bundle, gt: GroundTruth, none: Bundle) -> bool:
    waits = counter_increase(b, "node_schedstat_waiting_seconds_total") > 3 * counter_increase(none, "node_schedstat_waiting_seconds_total")
    return cpu_slowdown(b, gt) > 1.3 and collective_ratio(b, gt) < 0.9 and waits


def sig_numa(b: Bundle, gt: GroundTruth) -> bool:
    return cpu_slowdown(b, gt) > 1.1 and copy_slowdown(b, gt) > 1.2 and log_hits(b, "NUMA node") > 0


def sig_kv(b: Bundle, gt: GroundTruth, none: Bundle) -> bool:
    usage = float(in_window(metric(b, "vllm:gpu_cache_usage_perc", gt), gt)["value"].max()) >= 0.95
    t, t0 = tokens_by_step(b, gt.affected_ranks), tokens_by_step(none, gt.affected_ranks)
    recompute = all(t[s] > t0[s] for s in gt.affected_steps)
    return usage and recompute and log_hits(b, "preempted") > 0


def sig_hw(b: Bundle, gt: GroundTruth) -> bool:
    r = gt.affected_ranks[0]
    return max_kernel_ratio(b, gt) > 3 and log_hits(b, r"NVRM: Xid") > 0 and _metric_max(b, "DCGM_FI_DEV_XID_ERRORS", gt, r) > 0


def sig_runtime(b: Bundle, gt: GroundTruth) -> bool:
    pause_ns = float(gt.parameters["pause_ms"]) * 1e6
    return step_start_lag(b, gt) > 0.5 * pause_ns and collective_ratio(b, gt) < 0.5


def sig_storage(b: Bundle, gt: GroundTruth) -> bool:
    longest = longest_python(b, gt.affected_ranks, "load_file|_load_adapter|transfer_async|write_backup")
    return longest > 0.5 * float(gt.parameters["stall_ms"]) * 1e6 and log_hits(b, "nvme") > 0


def sig_shift(b: Bundle, gt: GroundTruth, none: Bundle) -> bool:
    ranks = b.ranks
    t, t0 = tokens_by_step(b, ranks), tokens_by_step(none, ranks)
    bigger = all(t[s] > t0[s] for s in gt.affected_steps)
    # Not a fault: every rank scales alike, so no rank deviates from its peers.
    alike = all(abs(compute_slowdown(b, gt.model_copy(update={"affected_ranks": [r]})) - 1.0) < 0.05 for r in ranks)
    return bigger and alike and log_hits(b, "Xid|AER|NCCL WARN") == 0


SIGS = {
    Category.GPU_THERMAL_THROTTLING: sig_thermal,
    Category.GPU_POWER_OR_CLOCK_CAP: sig_power,
    Category.NVLINK_DEGRADATION: sig_nvlink,
    Category.PCIE_LINK_DEGRADATION: sig_pcie,
    Category.NETWORK_CONGESTION: sig_network,
    Category.HOST_CPU_CONTENTION: sig_host_cpu,
    Category.NUMA_MISBINDING: sig_numa,
    Category.KV_CACHE_PRESSURE: sig_kv,
    Category.GPU_HARDWARE_ERROR: sig_hw,
    Category.RUNTIME_STALL: sig_runtime,
    Category.STORAGE_IO_STALL: sig_storage,
    Category.WORKLOAD_SHIFT: sig_shift,
}
NEEDS_NONE = {sig_nvlink, sig_network, sig_host_cpu, sig_kv, sig_shift}


def _check(fn, b, gt, none) -> bool:
    return fn(b, gt, none) if fn in NEEDS_NONE else fn(b, gt)


@pytest.mark.parametrize("cat", list(SIGS), ids=lambda c: c.value)
def test_signature_present_and_absent_from_none(cases, cat: Category) -> None:
    b, gt, none = _pair(cases, cat)
    fn = SIGS[cat]
    assert _check(fn, b, gt, none), f"{cat.value}: injected signature not found"
    # The same check, pointed at the same ranks/steps/window of the healthy control, must fail.
    assert not _check(fn, none, gt, none), f"{cat.value}: signature also present in `none`"


@pytest.mark.parametrize("cat", list(Category), ids=lambda c: c.value)
def test_bundle_is_valid(cases, cat: Category) -> None:
    b, gt, _ = _pair(cases, cat)
    assert b.ranks == list(range(len(b.manifest.topology.workers)))
    df = b.all_events()
    assert (df["step"] >= 0).mean() > 0.99, "every event belongs to a ProfilerStep"
    assert {"kernel", "collective", "cpu_op", "cuda_runtime", "python", "memcpy", "step"} <= set(df["kind"].astype(str))
    assert not b.metrics.empty and not b.logs.empty
    # One clock: traces sit inside the metric/log period.
    m0, m1 = int(b.metrics["ts_ns"].min()), int(b.metrics["ts_ns"].max())
    assert m0 < int(df["ts_ns"].min()) and int(df["ts_ns"].max()) < m1
    assert gt.trace_window.start_ns == int(df[df["kind"] == "step"]["ts_ns"].min())
    assert gt.category == cat.value
    if gt.is_fault:
        assert gt.affected_ranks and gt.expected_detections and gt.causal_chain and gt.window
        assert all(d.rank in gt.affected_ranks and d.component == gt.component for d in gt.expected_detections)
        assert gt.window.overlaps(gt.trace_window.start_ns, gt.trace_window.end_ns)
    else:
        assert not gt.expected_detections and not gt.affected_ranks


def test_none_has_no_fault_lines(cases) -> None:
    b, gt, _ = _pair(cases, Category.NONE)
    assert not gt.is_fault and gt.window is None
    # Confounders may add an unrelated warning, but never a fault signature.
    assert log_hits(b, FAULT_LOGS) == 0


@pytest.mark.parametrize("cat", [c for c in Category if c not in (Category.NONE, Category.WORKLOAD_SHIFT)], ids=lambda c: c.value)
def test_expected_detections_point_at_real_events(cases, cat: Category) -> None:
    b, gt, _ = _pair(cases, cat)
    df = b.all_events()
    for det in (d for d in gt.expected_detections if d.primary):
        sel = df[
            (df["rank"] == det.rank)
            & (df["kind"].astype(str) == det.kind)
            & df["name"].astype(str).str.contains(det.name_pattern, regex=True)
        ]
        ends = sel["ts_ns"] + sel["dur_ns"]
        inside = sel[(ends >= det.window.start_ns) & (sel["ts_ns"] <= det.window.end_ns)]
        assert len(inside), f"{cat.value}: no {det.kind} matching {det.name_pattern!r} on rank {det.rank} in the window"
        assert gt.window.start_ns <= det.window.start_ns and det.window.end_ns <= gt.window.end_ns
