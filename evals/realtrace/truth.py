"""What each injected fault stands for in the taxonomy, and the ground truth of a finished run."""
from __future__ import annotations

from datetime import datetime, timezone
from statistics import median

from evals.realtrace.models import (
    CausalLink, ExpectedDetection, FaultKind, GroundTruth, RunReport, TruthWindow,
)


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# fault -> (category, acceptable categories, component). The GEMM fault is extra compute on a
# CPU tensor: it looks like a slow accelerator kernel but has no thermal or power cause, so it
# has no single category; detectors are judged on its component.
TAXONOMY: dict[FaultKind, tuple[str | None, list[str], str | None]] = {
    FaultKind.NONE: ("none", ["none"], None),
    FaultKind.GEMM: (None, ["gpu_thermal_throttling", "gpu_power_or_clock_cap"], "gpu"),
    FaultKind.CPU_STALL: ("runtime_stall", ["runtime_stall"], "software"),
    FaultKind.CPU_CONTENTION: ("host_cpu_contention", ["host_cpu_contention"], "host_cpu"),
    # One host, gloo over loopback: the "link" is emulated; the nearest categories are both
    # communication ones, and the brief fixes the component as network.
    FaultKind.SLOW_COLLECTIVE: ("network_congestion", ["network_congestion", "nvlink_degradation"], "network"),
}

_DESCRIPTION: dict[FaultKind, str] = {
    FaultKind.NONE: "Healthy control: no fault injected; any reported fault is a false positive.",
    FaultKind.GEMM: "Rank {r}: layers.{L}.mlp.gate_up_proj runs its GEMM {k}x (same shapes), i.e. that "
                    "GEMM takes ~{k}x longer, in steps {a}..{b}.",
    FaultKind.CPU_STALL: "Rank {r}: an uninstrumented {k:g} ms CPU-side pause (sleep) at the start of each "
                         "of steps {a}..{b}, before the scheduler runs.",
    FaultKind.CPU_CONTENTION: "{n} CPU-bound hog process(es) pinned to core(s) {cores} of rank {r} during "
                              "steps {a}..{b}; ranks sharing that core: {shared}.",
    FaultKind.SLOW_COLLECTIVE: "Rank {r}: {k:g} ms extra latency inside its communication path (in the "
                               "tp_all_reduce span, before gloo) on every all-reduce of steps {a}..{b}.",
}


def _chain(fault: FaultKind, r: int, detail: str) -> list[CausalLink]:
    late = CausalLink(cause=f"rank {r} reaches each TP all-reduce late",
                      effect="peer ranks wait inside gloo:all_reduce (long collective spans on peers)")
    slow = CausalLink(cause="every layer's all-reduce completes only when the slowest rank arrives",
                      effect="decode step time (TPOT) rises on all ranks of the TP group")
    if fault is FaultKind.NONE:
        return []
    if fault is FaultKind.SLOW_COLLECTIVE:
        return [CausalLink(cause=detail, effect=f"rank {r}'s contribution reaches the ring late in every all-reduce"),
                CausalLink(cause="peers block in gloo:all_reduce until rank's data arrives",
                           effect="collective spans long on peers, compute unchanged on all ranks"), slow]
    return [CausalLink(cause=detail, effect=f"rank {r}'s step takes longer before its collectives"), late, slow]


def _detections(run: RunReport, ranks: list[int], window: TruthWindow, steps: list[int]) -> list[ExpectedDetection]:
    cfg = run.config
    L = cfg.gemm_layer
    what: dict[FaultKind, tuple[str, str, str]] = {
        FaultKind.GEMM: ("annotation", f"layers.{L}.mlp.gate_up_proj", "compute span (and its aten::mm) ~Nx longer than peers"),
        FaultKind.CPU_STALL: ("step", "ProfilerStep", "idle gap at the start of the step before scheduler.schedule"),
        FaultKind.CPU_CONTENTION: ("cpu_op", "aten::mm", "CPU ops slower on the contended core; arrives late at all-reduce"),
        FaultKind.SLOW_COLLECTIVE: ("annotation", "tp_all_reduce", "communication span long while its gloo:all_reduce is short"),
    }
    if cfg.fault not in what:
        return []
    kind, name, why = what[cfg.fault]
    return [ExpectedDetection(rank=r, component=TAXONOMY[cfg.fault][2] or "", start_ns=window.start_ns,
                              end_ns=window.end_ns, steps=steps, kind=kind, name=name, why=why) for r in ranks]


def step_ms(run: RunReport, steps: set[int], inside: bool) -> float | None:
    """Median wall-clock step time over all ranks, for steps inside/outside the fault window."""
    vals = [(s.end_ns - s.start_ns) / 1e6 for rk in run.ranks for s in rk.steps if (s.step in steps) == inside]
    return round(median(vals), 2) if vals else None


def build_ground_truth(run: RunReport, case_id: str, spans: dict[int, tuple[int, int]] | None) -> GroundTruth:
    """Ground truth of a finished run; `spans` are the target rank's ProfilerStep spans (trace clock)."""
    cfg = run.config
    fault = cfg.fault
    category, acceptable, component = TAXONOMY[fault]
    r = cfg.rank
    steps = cfg.fault_steps
    a, b = (steps[0], steps[-1]) if steps else (0, 0)
    cores = run.pinning.get(r, [])
    shared = sorted(q for q, c in run.pinning.items() if set(c) & set(cores) and c)
    collateral = [q for q in shared if q != r] if fault is FaultKind.CPU_CONTENTION else []
    window = None
    if steps:
        if spans and a in spans and b in spans:
            s_ns, e_ns = spans[a][0], spans[b][1]
        else:  # fall back to the rank's own wall clock
            rk = next(x for x in run.ranks if x.rank == r)
            s_ns = rk.fault_start_ns or run.start_ns
            e_ns = rk.fault_end_ns or run.end_ns
        window = TruthWindow(start=iso(s_ns), end=iso(e_ns), start_ns=s_ns, end_ns=e_ns)
    k = cfg.strength
    hog_n = max(1, round(k)) if fault is FaultKind.CPU_CONTENTION else 0
    detail = _DESCRIPTION[fault].format(r=r, L=cfg.gemm_layer, k=round(k) if fault is FaultKind.GEMM else k, a=a, b=b,
                                        n=hog_n, cores=cores, shared=shared)
    ranks = sorted([r, *collateral]) if steps else []
    host = next((x.host for x in run.ranks if x.rank == r), "")
    fault_set = set(steps)
    return GroundTruth(
        id=case_id, fault=fault, category=category, acceptable_categories=acceptable, component=component,
        ranks=ranks, injected_rank=r if steps else None, collateral_ranks=collateral,
        expected_culprit_rank=r if steps else None, hosts=[host] if steps and host else [],
        steps=steps, window=window, severity=k if steps else 0.0, description=detail,
        causal_chain=_chain(fault, r, detail),
        expected_detections=_detections(run, ranks, window, steps) if window else [],
        run={
            "world": cfg.world, "seed": cfg.seed, "num_steps": cfg.num_steps, "available_cores": run.available_cores,
            "pinning": {str(q): c for q, c in run.pinning.items()}, "wall_seconds": round((run.end_ns - run.start_ns) / 1e9, 2),
            "torch": run.ranks[0].torch_version if run.ranks else "", "hog_pids": [p for x in run.ranks for p in x.hog_pids],
            "step_ms_outside_window": step_ms(run, fault_set, inside=False),
            "step_ms_inside_window": step_ms(run, fault_set, inside=True) if steps else None,
            "severity_unit": {"gemm": "x GEMM work", "cpu_stall": "ms per step", "cpu_contention": "hog processes",
                              "slow_collective": "ms per all-reduce", "none": ""}[fault.value],
        },
    )
