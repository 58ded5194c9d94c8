"""Named sets of real-trace cases (healthy + each fault), for `kat realtrace --suite`."""

from __future__ import annotations

from pathlib import Path

from kat.evals.realtrace.case import CaseResult, generate_case
from kat.evals.realtrace.models import FaultKind, RealTraceConfig

_FAULTS = [FaultKind.GEMM, FaultKind.CPU_STALL, FaultKind.CPU_CONTENTION, FaultKind.SLOW_COLLECTIVE]


def suite_configs(name: str, seed: int = 0, world: int = 4) -> list[RealTraceConfig]:
    """`tiny`: one healthy + one fault (CI). `small`: healthy + every fault on rank 2.
    `standard`: two healthy seeds + every fault on two ranks and windows."""
    target = 2 % world  # the fault's rank (healthy cases carry it too: the config checks it fits the world)
    if name == "tiny":
        return [
            RealTraceConfig(fault=FaultKind.NONE, rank=target, seed=seed, world=world, num_steps=12, steps=(4, 9)),
            RealTraceConfig(fault=FaultKind.CPU_STALL, rank=target, seed=seed, world=world, num_steps=12, steps=(4, 9)),
        ]
    if name == "small":
        return [RealTraceConfig(fault=FaultKind.NONE, rank=target, seed=seed, world=world)] + [
            RealTraceConfig(fault=f, rank=target, seed=seed, world=world) for f in _FAULTS
        ]
    if name == "standard":
        out = [RealTraceConfig(fault=FaultKind.NONE, rank=target, seed=seed + s, world=world) for s in range(2)]
        for f in _FAULTS:
            out.append(RealTraceConfig(fault=f, rank=target, steps=(8, 14), seed=seed, world=world))
            out.append(RealTraceConfig(fault=f, rank=1 % world, steps=(4, 9), seed=seed + 1, world=world))
        return out
    raise ValueError(f"unknown real-trace suite {name!r}; known: tiny, small, standard")


SUITES = ("tiny", "small", "standard")


def generate_suite(name: str, out: Path | str, seed: int = 0, world: int = 4) -> list[CaseResult]:
    """Generate every case of a suite into `out/<case id>/`, one after another (they share the CPUs)."""
    out = Path(out)
    return [generate_case(cfg, out / cfg.name()) for cfg in suite_configs(name, seed, world)]
