"""What each injected fault stands for in the taxonomy, and the ground truth of a finished run.

`ground_truth.json` uses the shared model of `evals.simulate.ground_truth` (the one the eval
harness and Outpost scoring load), so real and simulated cases are scored alike. What only a
real run has (target vs. collateral ranks, pinning, measured step times, the fault's own
strength) goes into `parameters`.
"""

from __future__ import annotations

from statistics import median

from kat.evals.realtrace.models import FaultKind, RunReport
from kat.evals.simulate.ground_truth import ChainLink, ExpectedDetection, GroundTruth, Window, rfc3339

# fault -> (category, acceptable categories, component), all from the domain contract
# (knowledge/taxonomy.py: a Diagnosis can emit each of them). The GEMM fault is extra compute on
# one rank: in the trace it is a slow GPU kernel on that rank with its peers waiting, which is how
# both GPU slowdown categories show there; without metrics or logs neither cause can be told
# apart, so the case stands for gpu_thermal_throttling and accepts gpu_power_or_clock_cap.
TAXONOMY: dict[FaultKind, tuple[str, list[str], str]] = {
    FaultKind.NONE: ("none", ["none"], "-"),
    FaultKind.GEMM: ("gpu_thermal_throttling", ["gpu_thermal_throttling", "gpu_power_or_clock_cap"], "gpu"),
    FaultKind.CPU_STALL: ("runtime_stall", ["runtime_stall"], "software"),
    FaultKind.CPU_CONTENTION: ("host_cpu_contention", ["host_cpu_contention"], "host_cpu"),
    # One host, gloo over loopback: the "link" is emulated; the nearest categories are both
    # communication ones, and the brief fixes the component as network.
    FaultKind.SLOW_COLLECTIVE: ("network_congestion", ["network_congestion", "nvlink_degradation"], "network"),
}

SEVERITY_UNIT: dict[FaultKind, str] = {
    FaultKind.NONE: "",
    FaultKind.GEMM: "x GEMM work",
    FaultKind.CPU_STALL: "ms stall per step",
    FaultKind.CPU_CONTENTION: "hog processes",
    FaultKind.SLOW_COLLECTIVE: "ms per all-reduce",
}

_DESCRIPTION: dict[FaultKind, str] = {
    FaultKind.NONE: "Healthy control: no fault injected; every rank behaves like its peers (4 ranks share 2 cores, "
    "so step times vary with scheduling and batch size only).",
    FaultKind.GEMM: "Rank {r}: layers.{L}.mlp.gate_up_proj runs its GEMM {k:g}x (same shapes), i.e. that GEMM takes "
    "~{k:g}x longer, in steps {a}..{b}.",
    FaultKind.CPU_STALL: "Rank {r}: an uninstrumented {k:g} ms CPU-side pause at the start of each of steps {a}..{b}, "
    "before the scheduler runs.",
    FaultKind.CPU_CONTENTION: "{k:g} bursty CPU-bound process(es) pinned to core(s) {cores} of rank {r} during steps "
    "{a}..{b}; ranks sharing that core: {shared}.",
    FaultKind.SLOW_COLLECTIVE: "Rank {r}: {k:g} ms extra latency inside its communication path (in the tp_all_reduce "
    "span, before gloo) on every all-reduce of steps {a}..{b}.",
}

# fault -> (canonical kind, name regex, Outpost method) of what a correct detector reports.
_DETECTION: dict[FaultKind, tuple[str, str, str]] = {
    FaultKind.GEMM: ("annotation", r"^layers\.{L}\.mlp\.gate_up_proj$", "inter"),
    FaultKind.CPU_STALL: ("step", r"^ProfilerStep#\d+$", "arrival"),
    FaultKind.CPU_CONTENTION: ("cpu_op", r"^aten::", "inter"),
    FaultKind.SLOW_COLLECTIVE: ("annotation", r"^tp_all_reduce$", "arrival"),
}


def _chain(fault: FaultKind, r: int, detail: str, category: str, component: str) -> list[ChainLink]:
    late = ChainLink(
        cause=f"rank {r} reaches each TP all-reduce late", effect="peer ranks wait inside gloo:all_reduce (long collective spans on peers)"
    )
    slow = ChainLink(
        cause="every layer's all-reduce completes only when the slowest rank arrives",
        effect="decode step time (TPOT) rises on all ranks of the TP group",
    )
    if fault is FaultKind.NONE:
        return []
    root = ChainLink(cause=detail, effect=f"rank {r}'s work before its collectives takes longer", category=category, component=component)
    if fault is FaultKind.SLOW_COLLECTIVE:
        root.effect = f"rank {r}'s contribution reaches the ring late in every all-reduce"
        return [
            root,
            ChainLink(
                cause=f"peers block in gloo:all_reduce until rank {r}'s data arrives",
                effect="collective spans long on peers while compute is unchanged on all ranks",
            ),
            slow,
        ]
    return [root, late, slow]


def step_ms(run: RunReport, steps: set[int], inside: bool) -> float | None:
    """Median wall-clock step time over all ranks, for steps inside/outside the fault window."""
    vals = [(s.end_ns - s.start_ns) / 1e6 for rk in run.ranks for s in rk.steps if (s.step in steps) == inside]
    return round(median(vals), 2) if vals else None


def build_ground_truth(run: RunReport, case_id: str, spans: dict[int, dict[int, tuple[int, int]]], symptom: str) -> GroundTruth:
    """Ground truth of a finished run; `spans[rank][step]` are ProfilerStep spans on the trace clock."""
    cfg = run.config
    fault = cfg.fault
    category, acceptable, component = TAXONOMY[fault]
    r = cfg.rank
    steps = cfg.fault_steps
    a, b = (steps[0], steps[-1]) if steps else (0, 0)
    cores = run.pinning.get(r, [])
    shared = sorted(q for q, c in run.pinning.items() if c and set(c) & set(cores))
    collateral = [q for q in shared if q != r] if fault is FaultKind.CPU_CONTENTION else []
    all_spans = [se for per in spans.values() for se in per.values()]
    trace_window = (
        Window.of(min(s for s, _ in all_spans), max(e for _, e in all_spans)) if all_spans else Window.of(run.start_ns, run.end_ns)
    )
    window = None
    if steps:
        own = spans.get(r, {})
        if a in own and b in own:
            window = Window.of(own[a][0], own[b][1])
        else:  # fall back to the rank's own wall clock
            rk = next(x for x in run.ranks if x.rank == r)
            window = Window.of(rk.fault_start_ns or run.start_ns, rk.fault_end_ns or run.end_ns)
    k = cfg.strength if steps else 0.0
    detail = _DESCRIPTION[fault].format(r=r, L=cfg.gemm_layer, k=k, a=a, b=b, cores=cores, shared=shared)
    ranks = sorted([r, *collateral]) if steps else []
    host_of = {x.rank: x.host for x in run.ranks}
    fault_set = set(steps)
    dets = []
    if window is not None and fault in _DETECTION:
        kind, pattern, method = _DETECTION[fault]
        dets = [
            ExpectedDetection(
                rank=q,
                component=component,
                window=window,
                kind=kind,
                name_pattern=pattern.replace("{L}", str(cfg.gemm_layer)),
                method=method,
                steps=steps,
                primary=q == r,
            )
            for q in ranks
        ]
    params: dict[str, float | int | str] = {
        "source": "realtrace",
        "fault": fault.value,
        "acceptable_categories": ",".join(acceptable),
        "world": cfg.world,
        "num_steps": cfg.num_steps,
        "gemm_layer": cfg.gemm_layer,
        "severity_value": k,
        "severity_unit": SEVERITY_UNIT[fault],
        "pinning": ",".join(f"{q}:{'+'.join(map(str, c))}" for q, c in sorted(run.pinning.items())),
        "available_cores": ",".join(map(str, run.available_cores)),
        "wall_seconds": round((run.end_ns - run.start_ns) / 1e9, 2),
        "torch": run.ranks[0].torch_version if run.ranks else "",
    }
    if steps:
        params.update({"injected_rank": r, "expected_culprit_rank": r, "collateral_ranks": ",".join(map(str, collateral))})
    for key, val in (
        ("step_ms_outside_window", step_ms(run, fault_set, inside=False)),
        ("step_ms_inside_window", step_ms(run, fault_set, inside=True) if steps else None),
    ):
        if val is not None:
            params[key] = val
    return GroundTruth(
        incident_id=case_id,
        category=category,
        component=component,
        is_fault=bool(steps),
        severity=f"{k:g} {SEVERITY_UNIT[fault]}" if steps else None,
        task=f"realtrace-tp{cfg.world}-gloo-decode",
        seed=cfg.seed,
        size="real",
        affected_ranks=ranks,
        affected_hosts=sorted({host_of[q] for q in ranks if host_of.get(q)}),
        affected_steps=steps,
        window=window,
        trace_window=trace_window,
        symptom=symptom,
        summary=detail,
        causal_chain=_chain(fault, r, detail, category, component),
        expected_detections=dets,
        parameters=params,
    )


__all__ = ["TAXONOMY", "SEVERITY_UNIT", "build_ground_truth", "step_ms", "rfc3339"]
