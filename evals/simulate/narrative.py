"""Ground truth for a generated incident: window, causal chain, expected detections, symptom."""

from __future__ import annotations

import numpy as np

from kat.evals.simulate.categories import COMPONENT, Category
from kat.evals.simulate.engine import SimResult
from kat.evals.simulate.faults import ConfounderSpec, FaultPlan
from kat.evals.simulate.ground_truth import ChainLink, Confounder, ExpectedDetection, GroundTruth, Window, rfc3339
from kat.evals.simulate.topology import Layout

COMPUTE_KERNELS = r"gemm|nvjet|xmma|flash|fmha|Attention|rms_norm|RMSNorm|rotary|Rotary|act_and_mul|cache|index"
COLLECTIVES = r"AllReduce|all_reduce|allreduce|SendRecv|cross_device_reduce"
P2P = r"SendRecv|send|recv"
H2D = r"Memcpy HtoD|Memcpy DtoH"

# Per category: (kind, name pattern, method) of the primary detection; secondary ones follow.
DETECTIONS: dict[Category, list[tuple[str, str, str | None, bool]]] = {
    Category.GPU_THERMAL_THROTTLING: [("kernel", COMPUTE_KERNELS, "inter", True), ("collective", COLLECTIVES, "arrival", False)],
    Category.GPU_POWER_OR_CLOCK_CAP: [("kernel", COMPUTE_KERNELS, "inter", True), ("collective", COLLECTIVES, "arrival", False)],
    Category.GPU_HARDWARE_ERROR: [("kernel", COMPUTE_KERNELS, "intra", True), ("collective", COLLECTIVES, "arrival", False)],
    Category.NVLINK_DEGRADATION: [("collective", COLLECTIVES, "intra", True)],
    Category.PCIE_LINK_DEGRADATION: [("memcpy", H2D, "inter", True)],
    Category.NETWORK_CONGESTION: [("collective", COLLECTIVES, "intra", True)],
    Category.HOST_CPU_CONTENTION: [
        ("cpu_op", r".*", "inter", True),
        ("collective", COLLECTIVES, "arrival", False),
        ("cuda_runtime", r"cudaLaunchKernel|cudaGraphLaunch|cudaMemcpyAsync", "inter", False),
    ],
    Category.NUMA_MISBINDING: [("cpu_op", r".*", "inter", True), ("memcpy", H2D, "inter", False)],
    Category.KV_CACHE_PRESSURE: [
        ("step", r"ProfilerStep", "intra", True),
        ("kernel", COMPUTE_KERNELS, "intra", False),
        ("memcpy", r"Memcpy DtoH \(Device -> Pinned\)", "intra", False),
    ],
    Category.RUNTIME_STALL: [
        ("python", r"execute_model|forward", "intra", True),
        ("step", r"ProfilerStep", "intra", False),
        ("collective", COLLECTIVES, "arrival", False),
    ],
    Category.STORAGE_IO_STALL: [
        ("python", r"load_file|_load_adapter|load_lora_adapter|transfer_async|write_backup", "intra", True),
        ("memcpy", r"Memcpy HtoD \(Pageable -> Device\)", "intra", False),
        ("collective", COLLECTIVES, "arrival", False),
    ],
}

CHAINS: dict[Category, list[tuple[str, str, str | None]]] = {
    Category.GPU_THERMAL_THROTTLING: [
        ("GPU {gpus} on {hosts} overheats (cooling / airflow problem)", "driver lowers SM clocks (thermal slowdown)", "gpu"),
        ("SM clocks lowered on {gpus}", "compute kernels (GEMM, attention, norm) on rank {ranks} run slower", "gpu"),
        (
            "rank {ranks} reaches each tensor-parallel all-reduce late",
            "peer ranks wait inside the all-reduce (long collective kernels)",
            "gpu",
        ),
        ("every engine step of the replica waits for the slowest GPU", "time per output token rises for all requests on the replica", None),
    ],
    Category.GPU_POWER_OR_CLOCK_CAP: [
        ("power limit / application clocks lowered on GPU {gpus} ({hosts})", "GPU runs at its power cap with reduced SM clock", "gpu"),
        ("reduced SM clock on {gpus}", "compute kernels on rank {ranks} run slower at normal temperature", "gpu"),
        ("rank {ranks} arrives late at tensor-parallel all-reduces", "peers wait inside the all-reduce", "gpu"),
        ("replica steps gated by the capped GPU", "time per output token rises", None),
    ],
    Category.NVLINK_DEGRADATION: [
        (
            "NVLink of GPU {gpus} on {hosts} degrades (CRC errors, link retraining)",
            "lower NVLink bandwidth into and out of that GPU",
            "nvlink",
        ),
        (
            "lower NVLink bandwidth on {gpus}",
            "intra-node all-reduce kernels of its tensor-parallel group take longer on every member",
            "nvlink",
        ),
        ("each layer's all-reduce slows while compute stays normal", "engine steps lengthen; time per output token rises", None),
    ],
    Category.PCIE_LINK_DEGRADATION: [
        (
            "PCIe link of GPU {gpus} on {hosts} downtrains (lower gen/width, AER corrected errors)",
            "host<->device copy bandwidth drops on that GPU",
            "pcie",
        ),
        (
            "slow H2D input copies and D2H sampled-token copies on rank {ranks}",
            "rank {ranks} starts each step's compute late and peers wait at the first all-reduce",
            "pcie",
        ),
        ("steps of the replica lengthen", "time per output token and time to first token rise", None),
    ],
    Category.NETWORK_CONGESTION: [
        ("congestion on the inter-node fabric at {hosts}", "NIC retransmits / transmit waits; lower effective bandwidth", "network"),
        ("lower inter-node bandwidth", "inter-node collectives and pipeline send/recv on ranks {ranks} take longer", "network"),
        ("pipeline stages / tensor-parallel groups wait on inter-node transfers", "engine steps lengthen; latency rises", None),
    ],
    Category.HOST_CPU_CONTENTION: [
        (
            "another CPU-bound process competes for the cores of worker rank {ranks} on {hosts}",
            "the worker's Python/framework code runs slower and burstier",
            "host_cpu",
        ),
        ("slow CPU-side ops and kernel launches on rank {ranks}", "its GPU idles between kernels (launch gaps)", "host_cpu"),
        ("rank {ranks} arrives late at every all-reduce", "peers wait in collectives; the replica's steps lengthen", "host_cpu"),
        ("longer engine steps", "time per output token rises", None),
    ],
    Category.NUMA_MISBINDING: [
        (
            "worker rank {ranks} on {hosts} runs on a CPU socket remote from its GPU (wrong NUMA binding)",
            "host memory accesses and pinned-buffer copies cross the socket interconnect",
            "host_memory",
        ),
        ("remote memory traffic", "slower host-side ops and slower H2D copies on rank {ranks}", "host_memory"),
        ("rank {ranks} launches late and arrives late at collectives", "the replica's steps lengthen; latency rises", None),
    ],
    Category.KV_CACHE_PRESSURE: [
        (
            "KV cache of replica {replica} fills up (long contexts, too many running requests)",
            "scheduler preempts requests (recompute / swap)",
            "gpu_memory",
        ),
        (
            "preempted requests are recomputed",
            "steps carry extra prefill tokens and KV swap copies on all workers of the replica",
            "gpu_memory",
        ),
        (
            "bigger, irregular steps on every worker of replica {replica}",
            "latency spikes (TTFT and TPOT) for that replica's requests",
            None,
        ),
    ],
    Category.GPU_HARDWARE_ERROR: [
        ("GPU {gpus} on {hosts} hits a hardware fault (Xid {xid}, ECC)", "kernels on that GPU stall or are retried", "gpu"),
        ("occasional long kernel stalls on rank {ranks}", "peers wait in the following all-reduce", "gpu"),
        ("engine steps with a stall take much longer", "tail latency spikes", None),
    ],
    Category.RUNTIME_STALL: [
        (
            "periodic {stall_source} pauses in the worker process of rank {ranks} ({hosts})",
            "the process stops issuing work for tens of ms every {period_steps} steps",
            "software",
        ),
        ("rank {ranks} starts those steps late (GPU idle, no CPU events)", "peers wait in the first collective of the step", "software"),
        ("every few steps one step is much longer", "periodic latency spikes (p99 TPOT)", None),
    ],
    Category.STORAGE_IO_STALL: [
        ("slow storage on {hosts} while loading {what}", "the worker blocks on file reads", "storage"),
        (
            "rank {ranks} blocks inside the load (GPU idle), then copies the data to the GPU",
            "peers wait in collectives for the loading rank",
            "storage",
        ),
        ("steps with a load take hundreds of ms", "latency spikes for requests in flight", None),
    ],
}


def _replica_step_ms(res: SimResult, lay: Layout) -> np.ndarray:
    """[steps, dp] wall duration of each replica step (ms)."""
    out = np.zeros((res.step_start.shape[0], lay.task.dp))
    for d in range(lay.task.dp):
        r = lay.replica_ranks(d)
        out[:, d] = (res.step_end[:, r].max(axis=1) - res.step_start[:, r].min(axis=1)) / 1e6
    return out


def _window_ns(
    plan: FaultPlan, lay: Layout, res: SimResult, base_ns: int, metrics_start: int, metrics_end: int, rng: np.random.Generator
) -> tuple[Window, Window]:
    """(whole fault window, the part the trace captured)."""
    s0, s1 = plan.steps
    ranks = plan.affected_ranks or list(range(lay.world_size))
    t_start = base_ns + int(res.step_start[s0, ranks].min())
    t_end = base_ns + int(res.step_end[s1 - 1, ranks].max())
    trace_start = base_ns + res.trace_start
    lead = (trace_start - metrics_start) / 1e9
    start = trace_start - int(rng.uniform(3.0, max(4.0, lead - 3.0)) * 1e9) if plan.onset_before_trace else t_start
    end = metrics_end - int(rng.uniform(0.0, 2.0) * 1e9) if plan.persists_after_trace else t_end
    return Window.of(start, end), Window.of(t_start, t_end)


def _fmt(template: str, ctx: dict) -> str:
    return template.format(**ctx)


def build_ground_truth(
    incident_id: str,
    cat: Category,
    plan: FaultPlan,
    lay: Layout,
    res: SimResult,
    base_ns: int,
    metrics_start: int,
    metrics_end: int,
    seed: int,
    size: str,
    rng: np.random.Generator,
    events_total: int,
) -> GroundTruth:
    trace_window = Window.of(base_ns + res.trace_start, base_ns + res.trace_end)
    w = lay.workers
    ctx = {
        "ranks": ", ".join(map(str, plan.affected_ranks)),
        "hosts": ", ".join(plan.affected_hosts),
        "gpus": ", ".join(f"{w[r].host}:gpu{w[r].gpu}" for r in plan.affected_ranks),
        "replica": plan.replica,
        **{k: v for k, v in plan.params.items()},
    }
    confounders = [_confounder(c, plan, lay, res, base_ns) for c in plan.confounders]
    ms = _replica_step_ms(res, lay)
    params = {k: v for k, v in plan.params.items()}
    if cat == Category.NONE:
        return GroundTruth(
            incident_id=incident_id,
            category=cat.value,
            component="-",
            is_fault=False,
            task=lay.task.name,
            seed=seed,
            size=size,
            trace_window=trace_window,
            symptom="routine capture: no fault injected",
            summary="Healthy run: every rank behaves like its peers; step-to-step variation comes from continuous batching only.",
            confounders=confounders,
            parameters=params,
            events_total=events_total,
        )
    window, captured = _window_ns(plan, lay, res, base_ns, metrics_start, metrics_end, rng)
    s0, s1 = plan.steps
    steps = list(range(s0, s1))
    if cat == Category.RUNTIME_STALL:
        steps = [s for s in steps if plan.effects.pause_ns[s, plan.affected_ranks].max() > 0]
    elif cat == Category.STORAGE_IO_STALL:
        steps = [s for s in steps if plan.effects.storage_ns[s, plan.affected_ranks].max() > 0]
    elif cat == Category.KV_CACHE_PRESSURE:
        steps = [s for s in steps if plan.effects.preempted[s, plan.replica] > 0]
    reps = sorted({lay.workers[r].dp for r in plan.affected_ranks}) or list(range(lay.task.dp))
    ms = ms[:, reps]
    base_ms = float(np.median(np.delete(ms, steps, axis=0))) if len(steps) < ms.shape[0] else float("nan")
    hit_ms = float(np.median(ms[steps])) if steps else base_ms
    if cat == Category.WORKLOAD_SHIFT:
        return GroundTruth(
            incident_id=incident_id,
            category=cat.value,
            component="-",
            is_fault=False,
            severity=plan.severity.value if plan.severity else None,
            task=lay.task.name,
            seed=seed,
            size=size,
            affected_steps=steps,
            window=window,
            trace_window=trace_window,
            symptom=f"latency rose with load (step time {base_ms:.1f} -> {hit_ms:.1f} ms) on all replicas alike",
            summary="Legitimate load change: longer prompts and bigger batches reach every worker alike. Not a fault.",
            causal_chain=[
                ChainLink(
                    cause="clients send longer prompts and more concurrent requests",
                    effect="bigger batches on every worker; all kernels scale together",
                ),
                ChainLink(cause="bigger batches", effect="higher TTFT/TPOT, but no worker deviates from its peers"),
            ],
            confounders=confounders,
            parameters=params,
            events_total=events_total,
        )
    comp = COMPONENT[cat]
    links = CHAINS[cat]
    if lay.task.tp == 1:
        # No tensor parallelism: nobody waits in an all-reduce; the slowdown reaches users directly.
        links = [lk for lk in links if not any(w in (lk[0] + lk[1]) for w in ("all-reduce", "collective", "peers"))]
    chain = [ChainLink(cause=_fmt(c, ctx), effect=_fmt(e, ctx), category=cat.value if k else None, component=k) for c, e, k in links]
    dets = []
    for r in plan.affected_ranks:
        for kind, pattern, method, primary in DETECTIONS[cat]:
            if kind == "collective" and lay.task.tp == 1 and lay.task.pp == 1:
                continue
            dets.append(
                ExpectedDetection(
                    rank=r, component=comp, window=captured, kind=kind, name_pattern=pattern, method=method, steps=steps, primary=primary
                )
            )
    summary = f"{cat.value} ({comp}) on rank(s) {ctx['ranks']} ({ctx['hosts']}); steps {s0}..{s1 - 1} of the trace affected"
    return GroundTruth(
        incident_id=incident_id,
        category=cat.value,
        component=comp,
        is_fault=True,
        severity=plan.severity.value if plan.severity is not None else None,
        task=lay.task.name,
        seed=seed,
        size=size,
        affected_ranks=plan.affected_ranks,
        affected_hosts=plan.affected_hosts,
        affected_steps=steps,
        window=window,
        trace_window=trace_window,
        symptom=f"replica step time {base_ms:.1f} -> {hit_ms:.1f} ms (median) from {rfc3339(window.start_ns)}",
        summary=summary,
        causal_chain=chain,
        expected_detections=dets,
        confounders=confounders,
        parameters=params,
        events_total=events_total,
    )


def _confounder(c: ConfounderSpec, plan: FaultPlan, lay: Layout, res: SimResult, base_ns: int) -> Confounder:
    if c.kind == "uneven_batches":
        assert c.steps is not None  # _confounders always gives skewed batches their step range
        a, b = c.steps
        win = Window.of(base_ns + int(res.step_start[a, c.ranks].min()), base_ns + int(res.step_end[b - 1, c.ranks].max()))
        return Confounder(
            kind=c.kind,
            description=f"replica {c.detail['replica']} receives {c.detail['scale']}x bigger batches "
            "(load-balancer skew): its ranks are uniformly slower, but healthy",
            ranks=c.ranks,
            hosts=c.hosts,
            window=win,
        )
    if c.kind == "metric_spike":
        return Confounder(
            kind=c.kind,
            description="benign metric spike (scheduled job / brief GPU temperature or CPU blip within limits)",
            ranks=c.ranks,
            hosts=c.hosts,
            window=_detail_window(c),
        )
    return Confounder(kind=c.kind, description="unrelated warning in the logs", ranks=c.ranks, hosts=c.hosts, window=_detail_window(c))


def _detail_window(c: ConfounderSpec) -> Window | None:
    s, e = c.detail.get("start_ns"), c.detail.get("end_ns")
    return Window.of(s, e) if s is not None and e is not None else None


def incident_text(gt: GroundTruth, lay: Layout, res: SimResult, base_ns: int) -> tuple[str, str]:
    """Title and symptom as an on-call engineer would file them (never names the cause)."""
    t = lay.task
    when = rfc3339(gt.window.start_ns if gt.window else base_ns + res.trace_start)[11:19]
    ms = _replica_step_ms(res, lay)
    tpot = float(np.median(ms))
    if gt.category == "none":
        return (
            f"Routine profile of {t.model_spec.hf_name} ({t.engine}, {t.world_size} GPUs)",
            f"scheduled profiler capture; median time per output token about {tpot:.0f} ms, no alert firing",
        )
    if gt.category == "workload_shift":
        return (
            f"Latency up on {t.model_spec.hf_name} serving",
            f"TTFT and TPOT rose around {when} UTC while traffic changed; median step about {tpot:.0f} ms",
        )
    return (
        f"Slow decoding on {t.model_spec.hf_name} ({t.engine}, {t.world_size} GPUs)",
        f"time per output token degraded around {when} UTC (median step about {tpot:.0f} ms in the capture); users report slow responses",
    )
