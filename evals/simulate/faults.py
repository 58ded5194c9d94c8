"""Fault plans: which ranks, which steps, how strong, and what each fault does to the run.

A plan turns (category, severity, seed) into per-step, per-rank effect factors that the
timing engine applies, plus the confounders that must not be mistaken for the fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kat.evals.simulate.categories import SEVERITY_INDEX, Category, Severity
from kat.evals.simulate.topology import Layout

# (mild, moderate, severe) parameter triples per category.
SEVERITY_PARAMS: dict[Category, dict[str, tuple[float, float, float]]] = {
    Category.GPU_THERMAL_THROTTLING: {"compute": (1.15, 1.35, 1.8), "temp_c": (85, 89, 93), "clock_ratio": (0.87, 0.74, 0.56)},
    Category.GPU_POWER_OR_CLOCK_CAP: {"compute": (1.12, 1.3, 1.7), "limit_ratio": (0.72, 0.57, 0.43), "clock_ratio": (0.89, 0.77, 0.59)},
    Category.NVLINK_DEGRADATION: {"link": (1.8, 3.0, 6.0)},
    Category.PCIE_LINK_DEGRADATION: {"h2d": (2.0, 4.0, 8.0)},
    Category.NETWORK_CONGESTION: {"net": (1.6, 2.8, 5.0)},
    Category.HOST_CPU_CONTENTION: {"cpu": (1.7, 2.6, 4.0)},
    Category.NUMA_MISBINDING: {"cpu": (1.2, 1.35, 1.6), "h2d": (1.35, 1.7, 2.2)},
    Category.KV_CACHE_PRESSURE: {"preempt_prob": (0.3, 0.5, 0.8), "recompute_tokens": (768, 1536, 3072)},
    Category.GPU_HARDWARE_ERROR: {"stall_prob": (0.004, 0.012, 0.03), "stall_us": (600, 2000, 6000)},
    Category.RUNTIME_STALL: {"pause_ms": (6, 25, 90)},
    Category.STORAGE_IO_STALL: {"stall_ms": (25, 90, 300)},
    Category.WORKLOAD_SHIFT: {"batch_scale": (1.35, 1.7, 2.2), "prompt_scale": (1.6, 2.5, 4.0)},
}


@dataclass
class Effects:
    """Multipliers and injections the timing engine applies; index [step, rank] unless noted."""

    compute: np.ndarray
    cpu: np.ndarray
    cpu_spiky: np.ndarray  # bool: contention also makes CPU cost bursty
    h2d: np.ndarray
    link_intra: np.ndarray  # factor on intra-node collective transfer for groups with this rank
    link_inter: np.ndarray  # [step, host] factor on inter-node transfers touching the host
    pause_ns: np.ndarray  # CPU pause before the step's work (runtime stall)
    storage_ns: np.ndarray  # blocking weight/adapter read before the step's work
    stall_prob: np.ndarray  # per-kernel probability of a long stall (GPU hardware error)
    stall_ns: float
    stall_at: np.ndarray  # [step, rank] compute-kernel ordinal that surely stalls, -1 none
    seq_scale: np.ndarray  # [step, dp] batch-size multiplier
    extra_prefill: np.ndarray  # [step, dp] extra prefill tokens (recompute, longer prompts)
    preempted: np.ndarray  # [step, dp] requests preempted this step
    kv_swap_bytes: np.ndarray  # [step, dp] KV bytes swapped out this step

    @classmethod
    def healthy(cls, n_steps: int, world: int, n_hosts: int, dp: int) -> Effects:
        one = np.ones((n_steps, world))
        zero = np.zeros((n_steps, world))
        return cls(
            one.copy(),
            one.copy(),
            np.zeros((n_steps, world), bool),
            one.copy(),
            one.copy(),
            np.ones((n_steps, n_hosts)),
            zero.copy(),
            zero.copy(),
            zero.copy(),
            0.0,
            np.full((n_steps, world), -1, np.int64),
            np.ones((n_steps, dp)),
            np.zeros((n_steps, dp), np.int64),
            np.zeros((n_steps, dp), np.int64),
            np.zeros((n_steps, dp), np.int64),
        )


@dataclass
class ConfounderSpec:
    kind: str  # log_warning | metric_spike | uneven_batches
    ranks: list[int] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    steps: tuple[int, int] | None = None
    detail: dict = field(default_factory=dict)


@dataclass
class FaultPlan:
    category: Category
    severity: Severity | None
    affected_ranks: list[int]
    affected_hosts: list[str]
    steps: tuple[int, int]  # [s0, s1) affected trace steps; (0, 0) for none
    onset_before_trace: bool
    persists_after_trace: bool
    params: dict[str, float | int | str]
    effects: Effects
    confounders: list[ConfounderSpec]
    replica: int = -1  # affected replica (kv pressure), else -1

    @property
    def is_fault(self) -> bool:
        return self.category not in (Category.NONE, Category.WORKLOAD_SHIFT)


def _p(cat: Category, sev: Severity, key: str) -> float:
    return SEVERITY_PARAMS[cat][key][SEVERITY_INDEX[sev]]


def supported(cat: Category, lay: Layout) -> str | None:
    """Why this category cannot be injected into this layout, or None if it can."""
    if cat == Category.NVLINK_DEGRADATION and not _intra_node_ranks(lay):
        return "needs a tensor-parallel group inside one host (tp >= 2)"
    if cat == Category.NETWORK_CONGESTION and not _cross_host_ranks(lay):
        return "needs inter-node traffic (a TP or PP group spanning hosts)"
    return None


def _intra_node_ranks(lay: Layout) -> list[int]:
    out = []
    for g in lay.tp_groups:
        for r in g:
            if sum(lay.workers[o].host == lay.workers[r].host for o in g) >= 2:
                out.append(r)
    return sorted(out)


def _cross_host_groups(lay: Layout) -> list[list[int]]:
    return [g for g in lay.tp_groups + lay.pp_groups if lay.group_crosses_hosts(g)]


def _cross_host_ranks(lay: Layout) -> list[int]:
    return sorted({r for g in _cross_host_groups(lay) for r in g})


def _window(n: int, rng: np.random.Generator, transient: bool) -> tuple[int, int, bool, bool]:
    """Affected steps [s0, s1) with at least 3 steps; whether the fault predates / outlives the trace."""
    before = rng.random() < 0.35
    s0 = 0 if before else int(rng.integers(max(1, n // 4), max(2, n // 2) + 1))
    # Lasting faults are usually still present when someone captures a profile.
    after = rng.random() < (0.4 if transient else 0.85)
    s1 = n if after else int(rng.integers(min(n, s0 + max(3, n // 4)), n + 1))
    s1 = max(s1, min(n, s0 + 3))
    return s0, s1, before, s1 == n and after


def _pick_ranks(lay: Layout, rng: np.random.Generator, pool: list[int], max_n: int = 2) -> list[int]:
    first = int(rng.choice(pool))
    ranks = [first]
    if max_n > 1 and rng.random() < 0.3:
        same_host = [r for r in pool if r != first and lay.workers[r].host == lay.workers[first].host]
        if same_host:
            ranks.append(int(rng.choice(same_host)))
    return sorted(ranks)


def make_plan(
    cat: Category, sev: Severity | None, lay: Layout, n_steps: int, rng: np.random.Generator, single_rank: bool = False
) -> FaultPlan:
    """The fault of `cat`; `single_rank` keeps per-rank faults to one rank (replica-wide and
    host-wide faults keep their nature: kv pressure hits a replica, network a host)."""
    task = lay.task
    max_n = 1 if single_rank else 2
    world, n_hosts = lay.world_size, len(lay.hosts)
    eff = Effects.healthy(n_steps, world, n_hosts, task.dp)
    all_ranks = list(range(world))
    if cat == Category.NONE:
        plan = FaultPlan(cat, None, [], [], (0, 0), False, False, {}, eff, [])
        plan.confounders = _confounders(lay, rng, n_steps, plan, k=int(rng.integers(1, 4)))
        return plan
    sev = sev or Severity.MODERATE
    transient = cat in (Category.GPU_HARDWARE_ERROR, Category.RUNTIME_STALL, Category.STORAGE_IO_STALL, Category.KV_CACHE_PRESSURE)
    s0, s1, before, after = _window(n_steps, rng, transient)
    sl = slice(s0, s1)
    params: dict[str, float | int | str] = {}
    ranks: list[int] = []
    replica = -1
    if cat in (Category.GPU_THERMAL_THROTTLING, Category.GPU_POWER_OR_CLOCK_CAP):
        ranks = _pick_ranks(lay, rng, all_ranks, max_n)
        f = _p(cat, sev, "compute")
        # Throttling tightens over the first steps of the window rather than all at once.
        ramp = np.minimum(1.0, (np.arange(s1 - s0) + 1) / 3.0)
        for r in ranks:
            eff.compute[sl, r] = 1.0 + (f - 1.0) * ramp * rng.uniform(0.9, 1.1)
        params.update(compute_factor=f)
        for key in ("temp_c", "clock_ratio", "limit_ratio"):
            if key in SEVERITY_PARAMS[cat]:
                params[key] = _p(cat, sev, key)
    elif cat == Category.GPU_HARDWARE_ERROR:
        ranks = [int(rng.choice(all_ranks))]
        eff.stall_prob[sl, ranks[0]] = _p(cat, sev, "stall_prob")
        eff.stall_ns = _p(cat, sev, "stall_us") * 1000.0
        eff.compute[sl, ranks[0]] = 1.04
        # At least one stall per few steps, so even a mild error shows in a short capture.
        for st in rng.choice(np.arange(s0, s1), size=min(s1 - s0, 1 + SEVERITY_INDEX[sev]), replace=False):
            eff.stall_at[int(st), ranks[0]] = int(rng.integers(0, 8))
        params.update(xid=int(rng.choice([48, 63, 94])), stall_us=_p(cat, sev, "stall_us"), stall_prob=_p(cat, sev, "stall_prob"))
    elif cat == Category.NVLINK_DEGRADATION:
        ranks = [int(rng.choice(_intra_node_ranks(lay)))]
        eff.link_intra[sl, ranks[0]] = _p(cat, sev, "link")
        params.update(link_factor=_p(cat, sev, "link"), nvlink=int(rng.integers(0, 18)))
    elif cat == Category.PCIE_LINK_DEGRADATION:
        ranks = _pick_ranks(lay, rng, all_ranks, max_n=1)
        eff.h2d[sl, ranks[0]] = _p(cat, sev, "h2d")
        params.update(h2d_factor=_p(cat, sev, "h2d"))
    elif cat == Category.NETWORK_CONGESTION:
        cross = _cross_host_ranks(lay)
        host = lay.workers[int(rng.choice(cross))].host
        hi = lay.hosts.index(host)
        ranks = [r for r in cross if lay.workers[r].host == host]
        eff.link_inter[sl, hi] = _p(cat, sev, "net")
        params.update(net_factor=_p(cat, sev, "net"))
    elif cat == Category.HOST_CPU_CONTENTION:
        ranks = _pick_ranks(lay, rng, all_ranks, max_n)
        for r in ranks:
            eff.cpu[sl, r] = _p(cat, sev, "cpu")
            eff.cpu_spiky[sl, r] = True
        params.update(cpu_factor=_p(cat, sev, "cpu"))
    elif cat == Category.NUMA_MISBINDING:
        ranks = _pick_ranks(lay, rng, all_ranks, max_n)
        for r in ranks:
            eff.cpu[sl, r] = _p(cat, sev, "cpu")
            eff.h2d[sl, r] = _p(cat, sev, "h2d")
        params.update(cpu_factor=_p(cat, sev, "cpu"), h2d_factor=_p(cat, sev, "h2d"))
    elif cat == Category.KV_CACHE_PRESSURE:
        replica = int(rng.integers(0, task.dp))
        ranks = lay.replica_ranks(replica)
        p = _p(cat, sev, "preempt_prob")
        hit = rng.random(s1 - s0) < p
        hit[0] = True  # pressure announces itself with a preemption
        n_pre = np.where(hit, rng.integers(1, 6, size=s1 - s0), 0)
        eff.preempted[sl, replica] = n_pre
        eff.extra_prefill[sl, replica] = np.where(
            hit, (_p(cat, sev, "recompute_tokens") * rng.uniform(0.6, 1.4, s1 - s0)).astype(np.int64), 0
        )
        eff.seq_scale[sl, replica] = 0.8  # preempted requests leave the running batch
        kv_bytes_per_tok = (
            2
            * task.model_spec.kv_heads
            * task.model_spec.head_dim
            * 2
            * max(1, task.model_spec.layers // task.pp)
            // max(1, min(task.tp, task.model_spec.kv_heads))
        )
        eff.kv_swap_bytes[sl, replica] = np.where(hit & (rng.random(s1 - s0) < 0.5), n_pre * task.context_tokens * kv_bytes_per_tok, 0)
        params.update(preempt_prob=p, recompute_tokens=_p(cat, sev, "recompute_tokens"), replica=replica)
    elif cat == Category.RUNTIME_STALL:
        ranks = [int(rng.choice(all_ranks))]
        period = int(rng.integers(2, 5))
        if s1 - s0 < period + 1:
            s1 = min(n_steps, s0 + period + 1)
            sl = slice(s0, s1)
        pause = _p(cat, sev, "pause_ms") * 1e6
        for s in range(s0, s1, period):
            eff.pause_ns[s, ranks[0]] = pause * rng.uniform(0.8, 1.25)
        params.update(pause_ms=_p(cat, sev, "pause_ms"), period_steps=period, stall_source=str(rng.choice(["gc", "gil", "detokenizer"])))
    elif cat == Category.STORAGE_IO_STALL:
        w = lay.workers[int(rng.choice(all_ranks))]
        ranks = lay.ranks_on_host(w.host) if rng.random() < 0.4 and not single_rank else [w.rank]
        n_ev = 1 + SEVERITY_INDEX[sev]
        steps = sorted(rng.choice(np.arange(s0, s1), size=min(n_ev, s1 - s0), replace=False).tolist())
        for s in steps:
            for r in ranks:
                eff.storage_ns[s, r] = _p(cat, sev, "stall_ms") * 1e6 * rng.uniform(0.8, 1.3)
        params.update(stall_ms=_p(cat, sev, "stall_ms"), loads=len(steps), what=str(rng.choice(["lora_adapter", "kv_offload"])))
    elif cat == Category.WORKLOAD_SHIFT:
        ranks = []
        eff.seq_scale[sl, :] = _p(cat, sev, "batch_scale")
        extra = task.prompt_tokens * (_p(cat, sev, "prompt_scale") - 1.0)
        eff.extra_prefill[sl, :] = (extra * rng.uniform(0.7, 1.3, size=(s1 - s0, task.dp))).astype(np.int64)
        params.update(batch_scale=_p(cat, sev, "batch_scale"), prompt_scale=_p(cat, sev, "prompt_scale"))
    hosts = lay.hosts_of(ranks)
    plan = FaultPlan(cat, sev, sorted(ranks), hosts, (s0, s1), before, after, params, eff, [], replica)
    plan.confounders = _confounders(lay, rng, n_steps, plan, k=int(rng.integers(1, 3)))
    return plan


def _confounders(lay: Layout, rng: np.random.Generator, n_steps: int, plan: FaultPlan, k: int) -> list[ConfounderSpec]:
    """Benign distractions placed away from the fault (other host/rank where possible)."""
    kinds = ["log_warning", "metric_spike"]
    healthy_replicas = [d for d in range(lay.task.dp) if not set(lay.replica_ranks(d)) & set(plan.affected_ranks)]
    if lay.task.dp > 1 and healthy_replicas and plan.category != Category.WORKLOAD_SHIFT:
        kinds.append("uneven_batches")
    chosen = [kinds[i] for i in sorted(rng.choice(len(kinds), size=min(k, len(kinds)), replace=False))]
    others = [r for r in range(lay.world_size) if r not in plan.affected_ranks] or list(range(lay.world_size))
    out = []
    for kind in chosen:
        r = int(rng.choice(others))
        w = lay.workers[r]
        if kind == "uneven_batches":
            d = int(rng.choice(healthy_replicas))
            a = int(rng.integers(0, max(1, n_steps // 2)))
            b = int(min(n_steps, a + max(3, n_steps // 2)))
            plan.effects.seq_scale[a:b, d] *= 1.6
            out.append(ConfounderSpec(kind, lay.replica_ranks(d), lay.hosts_of(lay.replica_ranks(d)), (a, b), {"replica": d, "scale": 1.6}))
        else:
            out.append(ConfounderSpec(kind, [r], [w.host], None, {"variant": int(rng.integers(0, 4))}))
    return out
